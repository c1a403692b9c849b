"""The worker's HTTP side: liveness, readiness, drain (for preStop), stats and metrics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from splitserve.worker.service import WorkerService


class WorkerHTTP:
    def __init__(self, service: WorkerService, registry: CollectorRegistry,
                 alive: Callable[[], bool], drain_timeout_s: float) -> None:
        self.service = service
        self.registry = registry
        self.alive = alive
        self.drain_timeout_s = drain_timeout_s

    def drain(self) -> dict[str, object]:
        """Stops taking work and waits (bounded) until running work and reservations are done."""
        self.service.start_drain()
        deadline = time.monotonic() + self.drain_timeout_s
        while True:
            stats = self.service.stats()
            idle = not (stats.running or stats.waiting or stats.reservations)
            if idle or time.monotonic() > deadline:
                return {"drained": idle, **MessageToDict(stats)}
            time.sleep(0.1)

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, obj: object) -> None:
                self._send(code, json.dumps(obj).encode())

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    ok = app.alive()
                    self._json(200 if ok else 503, {"alive": ok})
                elif path == "/readyz":
                    ok = app.alive() and not app.service.draining
                    self._json(200 if ok else 503, {"ready": ok, "draining":
                                                    app.service.draining})
                elif path == "/drain":
                    self._json(200, app.drain())
                elif path == "/stats":
                    self._json(200, MessageToDict(app.service.stats()))
                elif path == "/metrics":
                    self._send(200, generate_latest(app.registry), CONTENT_TYPE_LATEST)
                else:
                    self._json(404, {"error": f"no such path {path!r}"})

            do_POST = do_GET

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="worker-http", daemon=True).start()
        return server
