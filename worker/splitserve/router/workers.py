"""gRPC channels to the workers and the Stats poller that keeps the registry's loads current."""

from __future__ import annotations

import asyncio
import logging

import grpc

from splitserve.kvtransfer.tls import TLSFiles
from splitserve.router.registry import Registry
from splitserve.worker import keepalive
from splitserve.worker import worker_pb2 as pb
from splitserve.worker import worker_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


class WorkerClients:
    """One grpc.aio channel per worker address, closed when discovery drops the address; with
    TLS files, channels present the certificate and verify the workers' (mTLS). Channels ping
    (see keepalive), so calls on a worker the network cut off fail instead of waiting."""

    def __init__(self, tls: TLSFiles | None = None) -> None:
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, pb_grpc.WorkerStub] = {}

    def _open(self, address: str) -> grpc.aio.Channel:
        tls = self._tls
        if tls is None:
            return grpc.aio.insecure_channel(address, options=keepalive.CLIENT)
        creds = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key,
                                             certificate_chain=tls.cert)
        return grpc.aio.secure_channel(address, creds, options=[
            *keepalive.CLIENT, ("grpc.ssl_target_name_override", tls.server_name)])

    def stub(self, address: str) -> pb_grpc.WorkerStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = self._open(address)
            self._channels[address] = channel
            stub = self._stubs[address] = pb_grpc.WorkerStub(channel)
        return stub

    async def retain(self, addresses: set[str]) -> None:
        for address in set(self._channels) - addresses:
            self._stubs.pop(address, None)
            await self._channels.pop(address).close()

    async def close(self) -> None:
        await self.retain(set())


class StatsPoller:
    """Polls every known worker's Stats RPC each `interval_s`. A worker that refuses the
    connection is marked down at once; one that is only slow to answer (a busy CPU) is marked
    down after `slow_polls` late replies in a row, so a loaded pool is not emptied by its own
    load."""

    def __init__(self, registry: Registry, clients: WorkerClients, interval_s: float = 0.5,
                 timeout_s: float = 1.0, slow_polls: int = 3) -> None:
        self._registry = registry
        self._clients = clients
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._slow_polls = slow_polls
        self._late: dict[str, int] = {}

    async def poll_once(self) -> None:
        endpoints = self._registry.all_endpoints()
        current = {a for _, a in endpoints}
        self._late = {a: n for a, n in self._late.items() if a in current}
        await self._clients.retain(current)
        await asyncio.gather(*(self._poll(a) for a in {a for _, a in endpoints}))

    async def _poll(self, address: str) -> None:
        try:
            s = await self._clients.stub(address).Stats(pb.StatsRequest(),
                                                        timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            log.debug("stats of %s failed: %s", address, exc.code())
            late = self._late.get(address, 0) + 1
            self._late[address] = late
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED or late >= self._slow_polls:
                self._registry.mark_down(address)
            return
        self._late.pop(address, None)
        self._registry.record_stats(
            address, running=s.running, waiting=s.waiting,
            queued_prompt_tokens=s.queued_prompt_tokens, kv_blocks_used=s.kv_blocks_used,
            kv_blocks_total=s.kv_blocks_total, draining=s.draining,
            weights_digest=s.weights_digest)

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:  # keep polling whatever one round did
                log.exception("stats poll failed")
            await asyncio.sleep(self._interval_s)
