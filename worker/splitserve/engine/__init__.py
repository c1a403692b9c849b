"""The inference engine: a Llama-family model over a paged KV cache with continuous batching.

Module map:
- `config`: `ModelConfig` (from a Hugging Face config.json) and `EngineConfig` (limits).
- `tiny_model`: deterministic tiny checkpoints in Hugging Face layout (`splitserve make-model`).
- `loader`: a checkpoint directory -> `CausalLM`, tokenizer and weights digest.
- `tokenizer`: `tokenizer.json` plus the chat template of `tokenizer_config.json`.
- `model`, `attention`: the decoder in plain PyTorch; attention over the paged cache.
- `kv_cache`: the cache tensors, block copies out of and into them.
- `sequence`, `block_manager`, `scheduler`: pure Python (no torch): request state, block
  accounting with prefix caching, continuous batching with chunked prefill and preemption.
- `sampling_params`, `sampler`: per-request sampling settings and the sampler.
- `model_runner`: packs a scheduled step into tensors and runs the model.
- `llm_engine`: `LLMEngine` (add_request, step, stream) and the KV hand-off calls.
"""
