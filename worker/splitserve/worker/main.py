"""`splitserve worker`: load a model, serve gRPC (generation + KV transfer) and HTTP (health)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer

import grpc

from splitserve.api import metrics as names
from splitserve.engine.llm_engine import LLMEngine
from splitserve.kvtransfer import kvtransfer_pb2 as kv
from splitserve.kvtransfer.receiver import KVReceiver
from splitserve.kvtransfer.receiver import add_to_server as add_kv_receiver
from splitserve.kvtransfer.tls import TLSFiles, server_credentials
from splitserve.worker import keepalive
from splitserve.worker import worker_pb2_grpc as pb_grpc
from splitserve.worker.config import WorkerConfig, from_args, resolve_model
from splitserve.worker.engine_loop import EngineLoop
from splitserve.worker.http_server import WorkerHTTP
from splitserve.worker.malformed import RefuseMalformed
from splitserve.worker.metrics import Identity, WorkerMetrics
from splitserve.worker.reservations import Reservations
from splitserve.worker.service import ServiceOptions, WorkerService

log = logging.getLogger("splitserve.worker")


def model_identity(engine: LLMEngine) -> kv.ModelIdentity:
    c = engine.model_config
    return kv.ModelIdentity(
        architecture=c.architecture, dtype=engine.config.dtype, num_layers=c.num_layers,
        num_kv_heads=c.num_kv_heads, head_dim=c.head_dim, block_size=engine.config.block_size,
        weights_digest=engine.loaded.weights_digest,
    )


class EngineGauges:
    """Keeps the engine's load gauges and token counters current (runs on the engine loop)."""

    def __init__(self, engine: LLMEngine, metrics: WorkerMetrics) -> None:
        self._engine = engine
        self._metrics = metrics
        self._prompt = 0
        self._generated = 0
        self._steps = 0

    def _count_steps(self) -> None:
        # runs between steps, so `in_flight` is what the steps since the last call scheduled
        e = self._engine
        steps = e.counters.steps - self._steps
        self._steps += steps
        out = e.in_flight
        if not steps or not out.scheduled:
            return
        phase = "mixed" if out.prefills and out.decodes else \
            "prefill" if out.prefills else "decode"
        self._metrics.inc(names.ENGINE_STEPS, steps, phase=phase)

    def __call__(self) -> None:
        e, mt = self._engine, self._metrics
        sched = e.scheduler
        mt.set(names.QUEUE_DEPTH, len(sched.waiting))
        mt.set(names.RUNNING_SEQUENCES, len(sched.running))
        mt.set(names.QUEUED_PROMPT_TOKENS, sum(s.num_pending for s in sched.waiting))
        mt.set(names.KV_BLOCKS_USED, e.blocks.num_used_blocks)
        mt.set(names.KV_BLOCKS_TOTAL, e.blocks.num_blocks)
        c = e.counters
        mt.inc(names.PROMPT_TOKENS, c.prompt_tokens - self._prompt)
        mt.inc(names.GENERATION_TOKENS, c.generated_tokens - self._generated)
        self._prompt, self._generated = c.prompt_tokens, c.generated_tokens
        self._count_steps()


class Worker:
    """A running worker; `stop()` drains and shuts everything down."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.tls = TLSFiles.from_dir(cfg.tls_dir, cfg.tls_server_name) if cfg.tls_dir else None
        log.info("loading model %s", cfg.model)
        self.engine = LLMEngine.from_path(resolve_model(cfg.model), cfg.engine)
        self.loop = EngineLoop(self.engine)
        self.metrics = WorkerMetrics(Identity(cfg.namespace, cfg.service, cfg.pool, cfg.role))
        self.loop.every_iteration(EngineGauges(self.engine, self.metrics))
        self.reservations = Reservations(
            self.loop, model_identity(self.engine), cfg.max_message_bytes,
            on_end=self._reservation_ended)
        self.service = WorkerService(self.loop, self.reservations, ServiceOptions(
            role=cfg.role, model_name=cfg.model_name,
            reservation_timeout_s=cfg.reservation_timeout_s, push_timeout_s=cfg.push_timeout_s,
            max_message_bytes=cfg.max_message_bytes, tls=self.tls), self.metrics)
        limit = cfg.max_message_bytes
        self.grpc = grpc.server(ThreadPoolExecutor(max_workers=64, thread_name_prefix="grpc"),
                                options=[*keepalive.SERVER,
                                         ("grpc.max_send_message_length", limit),
                                         ("grpc.max_receive_message_length", limit)],
                                interceptors=[RefuseMalformed()])
        pb_grpc.add_WorkerServicer_to_server(self.service, self.grpc)
        add_kv_receiver(KVReceiver(self.reservations), self.grpc)
        address = f"{cfg.host}:{cfg.grpc_port}"
        self.grpc_port = self.grpc.add_secure_port(address, server_credentials(self.tls)) \
            if self.tls else self.grpc.add_insecure_port(address)
        if self.grpc_port == 0:
            raise ValueError(f"cannot listen on {cfg.host}:{cfg.grpc_port} (gRPC)")
        self.http = WorkerHTTP(self.service, self.metrics.registry, lambda: self.loop.alive,
                               cfg.drain_timeout_s)
        self._http_server: ThreadingHTTPServer | None = None

    def _reservation_ended(self, outcome: str) -> None:
        self.metrics.set(names.KV_RESERVATIONS, len(self.reservations))
        if outcome == "expired":
            self.metrics.inc(names.KV_RESERVATION_TIMEOUTS)

    def start(self) -> None:
        self.loop.start()
        self.grpc.start()
        server = self._http_server = self.http.serve(self.cfg.host, self.cfg.http_port)
        http_port = server.server_address[1]
        # One machine-readable line for whoever started this process (ports may have been 0).
        print(f"SPLITSERVE_WORKER_READY role={self.cfg.role} grpc={self.cfg.host}:"
              f"{self.grpc_port} http={self.cfg.host}:{http_port}", flush=True)

    def stop(self, drain: bool = True) -> None:
        if drain:
            result = self.http.drain()
            log.info("drained: %s", result)
        self.grpc.stop(grace=5).wait(10)
        if self._http_server is not None:
            self._http_server.shutdown()
        self.service.close()
        self.loop.stop()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = from_args(argv)
        worker = Worker(cfg)
    except ValueError as exc:
        print(f"splitserve worker: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    stop.wait()
    log.info("stopping")
    worker.stop(drain=True)
    return 0
