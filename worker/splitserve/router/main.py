"""`splitserve router`: load the tokenizer, discover workers, serve the OpenAI API."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time

from aiohttp import web

from splitserve.engine.config import ModelConfig
from splitserve.engine.tokenizer import Tokenizer
from splitserve.kvtransfer.tls import TLSFiles
from splitserve.router.admission import Admission
from splitserve.router.auth import ApiKeys
from splitserve.router.config import COMPRESSIONS, RouterConfig, from_args
from splitserve.router.discovery import EndpointSliceWatch
from splitserve.router.dispatch import Dispatcher, DispatchOptions
from splitserve.router.policy import Picker
from splitserve.router.registry import Registry
from splitserve.router.server import ModelInfo, RouterApp
from splitserve.router.workers import StatsPoller, WorkerClients
from splitserve.worker.config import resolve_model
from splitserve.worker.metrics import Identity, WorkerMetrics

log = logging.getLogger("splitserve.router")


def load_model_info(cfg: RouterConfig) -> ModelInfo:
    path = resolve_model(cfg.model)
    model = ModelConfig.from_hf(json.loads((path / "config.json").read_text()))
    limit = model.max_position_embeddings
    if cfg.max_context is not None:
        limit = min(limit, cfg.max_context)
    return ModelInfo(cfg.model_name, Tokenizer.from_dir(path), model.vocab_size, limit,
                     int(time.time()))


async def serve(cfg: RouterConfig) -> None:
    model = load_model_info(cfg)
    api_keys = ApiKeys(cfg.api_keys_file) if cfg.api_keys_file else None
    registry = Registry(cfg.block_size)
    registry.set_endpoints("prefill", cfg.prefill)
    registry.set_endpoints("decode", cfg.decode)
    tls = TLSFiles.from_dir(cfg.tls_dir, cfg.tls_server_name) if cfg.tls_dir else None
    clients = WorkerClients(tls)
    metrics = WorkerMetrics(Identity(cfg.namespace, cfg.service, "router", "router"))
    dispatcher = Dispatcher(registry, clients, Picker(cfg.policy), DispatchOptions(
        short_prompt_threshold=cfg.short_prompt_threshold, max_retries=cfg.max_retries,
        request_timeout_s=cfg.request_timeout_s,
        reservation_timeout_ms=cfg.reservation_timeout_ms,
        compression=COMPRESSIONS[cfg.compression]), metrics)
    admission = Admission(cfg.max_inflight, cfg.max_queue, cfg.queue_timeout_s)
    router = RouterApp(model, registry, dispatcher, admission, metrics, cfg.drain_timeout_s,
                       api_keys)
    loop = asyncio.get_running_loop()
    watch = None
    if cfg.discovery == "endpointslices":
        def changed(role: str, ready: list[str], standby: list[str]) -> None:
            loop.call_soon_threadsafe(registry.set_endpoints, role, ready, standby)
            log.info("discovered %s workers: %s%s", role, ready,
                     f"; standby (listed not ready): {standby}" if standby else "")

        watch = EndpointSliceWatch(cfg.namespace, {"prefill": cfg.prefill_service,
                                                   "decode": cfg.decode_service}, changed)
        watch.start()
    poller = StatsPoller(registry, clients, cfg.stats_interval_s)
    await poller.poll_once()
    poll_task = asyncio.create_task(poller.run())
    runner = web.AppRunner(router.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"SPLITSERVE_ROUTER_READY http={cfg.host}:{port} model={model.name}", flush=True)
    log.info("serving %s on %s:%d (%s discovery, policy %s, short prompts < %d tokens local, "
             "API keys %s)", model.name, cfg.host, port, cfg.discovery, cfg.policy,
             cfg.short_prompt_threshold, "required" if api_keys else "not required")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: draining %d in-flight requests", admission.inflight)
    router.draining = True
    deadline = time.monotonic() + cfg.drain_timeout_s
    while admission.inflight and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    poll_task.cancel()
    if watch is not None:
        watch.stop()
    await runner.cleanup()
    await clients.close()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = from_args(argv)
    except ValueError as exc:
        print(f"splitserve router: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(cfg))
    except ValueError as exc:
        print(f"splitserve router: {exc}", file=sys.stderr)
        return 2
    return 0
