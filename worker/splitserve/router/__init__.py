"""The OpenAI-compatible router.

- `openai_params`: the parameter table and request validation (pure).
- `policy`: worker selection, conditional disaggregation, retry decisions (pure).
- `registry`: known workers and their load (pure state).
- `text_stream`: incremental detokenization with stop-string hold-back (pure).
- `responses`, `errors`, `admission`: OpenAI bodies, error bodies, bounded admission.
- `discovery`: static lists and EndpointSlice watching; `workers`: gRPC channels, Stats polling.
- `dispatch`: one request through the pools with hand-off and retries.
- `server`, `config`, `main`: the aiohttp app, settings, the process.
"""
