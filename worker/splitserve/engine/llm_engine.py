"""The engine: requests in, tokens out, one `step()` at a time (schedule -> run -> postprocess).

For disaggregation a prefill engine keeps a finished request's KV (`hold_kv=True`) until
`export_kv`/`release`; a decode engine `reserve`s blocks for a prompt, receives them layer by
layer with `import_kv_layer`, and `commit`s the first token to continue decoding there.
"""

from __future__ import annotations

import collections.abc as cabc
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from splitserve.engine.block_manager import BlockManager
from splitserve.engine.config import EngineConfig, ModelConfig
from splitserve.engine.kv_cache import KVCache
from splitserve.engine.loader import DTYPES, LoadedModel, load_model
from splitserve.engine.model_runner import ModelRunner
from splitserve.engine.sampler import Sampler
from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.scheduler import Scheduler, SchedulerOutput
from splitserve.engine.sequence import Sequence
from splitserve.engine.tokenizer import Tokenizer


@dataclass
class RequestOutput:
    request_id: str
    new_token_ids: list[int]
    token_ids: list[int]  # all output tokens so far
    finished: bool
    finish_reason: str | None = None
    text: str | None = None  # set once finished


@dataclass
class EngineCounters:
    steps: int = 0
    prefill_chunks: int = 0
    preemptions: int = 0
    mixed_steps: int = 0
    multi_block_seqs: int = 0  # finished sequences whose KV spanned more than one block
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefix_hit_tokens: int = 0


@dataclass(frozen=True)
class EngineStats:
    waiting: int
    running: int
    queued_prompt_tokens: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_blocks_reserved: int  # held for export or reserved for import


@dataclass
class _Request:
    seq: Sequence
    max_blocks: int = 0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class LLMEngine:
    def __init__(self, loaded: LoadedModel, config: EngineConfig, device: torch.device) -> None:
        self.loaded = loaded
        self.config = config
        self.device = device
        self.model_config: ModelConfig = loaded.config
        self.tokenizer: Tokenizer = loaded.tokenizer
        self.max_model_len = min(
            config.max_model_len or loaded.config.max_position_embeddings,
            loaded.config.max_position_embeddings,
            config.num_blocks * config.block_size,
        )
        self.cache = KVCache(loaded.config, config.num_blocks, config.block_size,
                             DTYPES[config.dtype], device)
        self.blocks = BlockManager(config.num_blocks, config.block_size,
                                   config.enable_prefix_caching)
        self.scheduler = Scheduler(self.blocks, config.max_num_seqs, config.max_num_batched_tokens)
        self.runner = ModelRunner(loaded.model, self.cache, device)
        self.sampler = Sampler(device)
        self.requests: dict[str, _Request] = {}
        self.held: dict[str, Sequence] = {}
        self.in_flight = SchedulerOutput()  # the step being run, for `on_layer_done` hooks
        self._arrivals = itertools.count()
        self._counters = EngineCounters()
        self.last_logits: torch.Tensor | None = None  # [sampling rows, vocab] of that step
        eos = set(loaded.config.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(eos)

    @classmethod
    def from_path(cls, path: str | Path, config: EngineConfig | None = None) -> LLMEngine:
        config = config or EngineConfig()
        device = pick_device(config.device)
        return cls(load_model(path, config.dtype, str(device)), config, device)

    # ---- requests -------------------------------------------------------------------------

    def encode_prompt(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt is empty: expected at least one character")
            return self.tokenizer.encode(prompt)
        if not isinstance(prompt, list) or not prompt:
            raise ValueError("prompt is empty: expected a string or a non-empty list of token ids")
        vocab = self.model_config.vocab_size
        bad = [t for t in prompt if isinstance(t, bool) or not isinstance(t, int)
               or not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token ids {bad[:5]} are outside [0, {vocab})")
        return list(prompt)

    def _new_sequence(
        self, request_id: str, prompt: str | list[int], params: SamplingParams, hold_kv: bool
    ) -> Sequence:
        if not isinstance(params, SamplingParams):
            raise ValueError("params: expected a SamplingParams")
        if request_id in self.requests or request_id in self.held:
            raise ValueError(f"request_id={request_id!r} is already in use")
        ids = self.encode_prompt(prompt)
        if len(ids) >= self.max_model_len:
            raise ValueError(
                f"prompt has {len(ids)} tokens; the context limit is {self.max_model_len} "
                "(prompt plus at least one generated token)")
        return Sequence(request_id, ids, params, next(self._arrivals), hold_kv)

    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        hold_kv: bool = False,
    ) -> Sequence:
        """Queues a request. With `hold_kv` its blocks stay allocated after it finishes."""
        seq = self._new_sequence(request_id, prompt, params or SamplingParams(), hold_kv)
        self.requests[request_id] = _Request(seq)
        self.scheduler.add(seq)
        return seq

    def abort(self, request_id: str) -> None:
        req = self.requests.pop(request_id, None)
        if req is not None:
            req.seq.hold_kv = False
            self.scheduler.remove(req.seq)
            req.seq.finish("abort")
        self.release(request_id)

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    # ---- the step ---------------------------------------------------------------------------

    def step(self, on_layer_done: Callable[[int], None] | None = None) -> list[RequestOutput]:
        """One batch: schedule, run the model, sample and finish. `on_layer_done(layer)` runs
        after each layer's KV of the step is in the cache (for layer-wise streaming)."""
        out = self.scheduler.schedule()
        self.in_flight = out
        if not out.scheduled:
            return []
        for item in out.scheduled:
            req = self.requests[item.seq.seq_id]
            req.max_blocks = max(req.max_blocks, len(item.seq.block_table))
        logits = self.runner.run(out, on_layer_done)  # [sampling rows, vocab]
        self.last_logits = logits
        sampling = [item.seq for item in out.scheduled if item.completes]
        for item in out.scheduled:
            item.seq.num_computed_tokens += item.num_tokens
            self.blocks.register_full_blocks(item.seq)
        self._counters.prompt_tokens += sum(item.num_tokens for item in out.prefills)
        tokens = self.sampler.sample(logits, sampling)
        outputs = []
        for seq, token in zip(sampling, tokens, strict=True):
            seq.append_token(token)
            self._counters.generated_tokens += 1
            outputs.append(self._postprocess(seq, token))
        return outputs

    def _postprocess(self, seq: Sequence, token: int) -> RequestOutput:
        params = seq.params
        reason = None
        text = None
        if token in params.stop_token_ids or (not params.ignore_eos and token in
                                              self.eos_token_ids):
            reason = "stop"
        elif len(seq.output_token_ids) >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            reason = "length"
        if params.stop:
            text = self.tokenizer.decode(seq.output_token_ids)
            cut = min((i for i in (text.find(s) for s in params.stop) if i >= 0), default=-1)
            if cut >= 0:
                reason, text = "stop", text[:cut]
        if reason is None:
            return RequestOutput(seq.seq_id, [token], seq.output_token_ids, False)
        seq.finish(reason)
        req = self.requests.pop(seq.seq_id)
        if req.max_blocks > 1:
            self._counters.multi_block_seqs += 1
        self.scheduler.remove(seq)
        if seq.hold_kv:
            self.held[seq.seq_id] = seq
        if text is None:
            text = self.tokenizer.decode(seq.output_token_ids)
        return RequestOutput(seq.seq_id, [token], seq.output_token_ids, True, reason, text)

    def stats(self) -> EngineStats:
        """Load figures for metrics and routing (queue, running, KV blocks)."""
        return EngineStats(
            waiting=len(self.scheduler.waiting),
            running=len(self.scheduler.running),
            queued_prompt_tokens=sum(s.num_pending for s in self.scheduler.waiting),
            kv_blocks_total=self.blocks.num_blocks,
            kv_blocks_used=self.blocks.num_used_blocks,
            kv_blocks_reserved=sum(len(s.block_table) for s in self.held.values()),
        )

    @property
    def counters(self) -> EngineCounters:
        c = self._counters
        s = self.scheduler.counters
        c.steps, c.prefill_chunks, c.preemptions, c.mixed_steps = (
            s.steps, s.prefill_chunks, s.preemptions, s.mixed_steps)
        c.prefix_hit_tokens = self.blocks.prefix_hit_tokens
        return c

    # ---- convenience ------------------------------------------------------------------------

    def stream(self) -> Iterator[RequestOutput]:
        """Runs steps until every request finished, yielding tokens as they are produced."""
        while self.has_unfinished():
            yield from self.step()

    def generate(
        self, prompts: cabc.Sequence[str | list[int]], params: SamplingParams | None = None
    ) -> list[RequestOutput]:
        ids = [f"gen-{next(self._arrivals)}" for _ in prompts]
        for request_id, prompt in zip(ids, prompts, strict=True):
            self.add_request(request_id, prompt, params)
        final = {o.request_id: o for o in self.stream() if o.finished}
        return [final[i] for i in ids]

    # ---- KV hand-off ------------------------------------------------------------------------

    def held_blocks(self, request_id: str) -> tuple[list[int], int]:
        """-> (block ids, tokens with KV) of a finished `hold_kv` request, a reservation, or a
        running request (inside `on_layer_done`, the blocks of the step in flight)."""
        seq = self.held.get(request_id)
        if seq is None and request_id in self.requests:
            seq = self.requests[request_id].seq
        if seq is None or not seq.block_table:
            raise ValueError(f"request_id={request_id!r} holds no KV blocks")
        return list(seq.block_table), seq.num_computed_tokens

    def export_kv(self, request_id: str, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> k, v copies of the request's blocks: [blocks, block_size, kv_heads, head_dim]."""
        block_ids, _ = self.held_blocks(request_id)
        return self.cache.export_layer(layer, block_ids)

    def release(self, request_id: str) -> None:
        """Frees the blocks a finished `hold_kv` request or an uncommitted reservation holds."""
        seq = self.held.pop(request_id, None)
        if seq is not None:
            self.blocks.free(seq)

    def reserve(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> list[int]:
        """Allocates blocks for a prompt whose KV will be imported -> block ids to fill."""
        seq = self._new_sequence(request_id, prompt_token_ids, params, hold_kv=True)
        if not self.blocks.can_allocate(seq, seq.num_tokens):
            raise ValueError(
                f"no room for {seq.num_tokens} tokens: {self.blocks.num_free_blocks} blocks free")
        self.blocks.allocate(seq, seq.num_tokens)
        self.held[request_id] = seq
        return list(seq.block_table)

    def import_kv_layer(
        self, request_id: str, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> None:
        block_ids, _ = self.held_blocks(request_id)
        self.cache.import_layer(layer, block_ids, k, v)

    def commit(self, request_id: str, first_token_id: int) -> RequestOutput:
        """Turns a filled reservation into a running request whose first token is known."""
        seq = self.held.get(request_id)
        if seq is None:
            raise ValueError(f"request_id={request_id!r} has no reservation")
        if not 0 <= first_token_id < self.model_config.vocab_size:
            raise ValueError(f"first_token_id={first_token_id} is outside the vocabulary")
        del self.held[request_id]
        seq.hold_kv = False
        seq.num_computed_tokens = seq.num_tokens
        self.blocks.register_full_blocks(seq)
        self.requests[request_id] = _Request(seq, len(seq.block_table))
        self.scheduler.add_running(seq)
        seq.append_token(first_token_id)
        self._counters.generated_tokens += 1
        return self._postprocess(seq, first_token_id)

    def free_block_count(self) -> int:
        return self.blocks.num_free_blocks
