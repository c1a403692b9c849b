"""The router's Stats poller against a real gRPC server answering the Worker service's Stats:
a slow worker stays in the pool until it misses several polls in a row, a refused connection
takes it out at once, and a good reply brings it back."""

from __future__ import annotations

import asyncio

import grpc

from splitserve.router.registry import Registry
from splitserve.router.workers import StatsPoller, WorkerClients
from splitserve.worker import worker_pb2 as pb
from splitserve.worker import worker_pb2_grpc as pb_grpc


class SlowStats(pb_grpc.WorkerServicer):
    """Answers Stats after `delay` seconds; everything else is left unimplemented."""

    def __init__(self) -> None:
        self.delay = 0.0

    async def Stats(self, request: pb.StatsRequest, context: grpc.aio.ServicerContext
                    ) -> pb.StatsReply:
        await asyncio.sleep(self.delay)
        return pb.StatsReply(role="decode", kv_blocks_total=64, weights_digest="abc")


def available(registry: Registry) -> list[str]:
    return [w.address for w in registry.available("decode")]


def test_slow_replies_mark_down_only_in_a_row_and_refusals_at_once() -> None:
    async def scenario() -> None:
        server = grpc.aio.server()
        servicer = SlowStats()
        pb_grpc.add_WorkerServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        address = f"127.0.0.1:{port}"
        registry = Registry()
        registry.set_endpoints("decode", [address])
        clients = WorkerClients()
        poller = StatsPoller(registry, clients, timeout_s=0.2, slow_polls=3)
        try:
            assert available(registry) == []  # not polled yet
            await poller.poll_once()
            assert available(registry) == [address]
            assert registry.available("decode")[0].model == "abc"

            servicer.delay = 0.5
            for _ in range(2):
                await poller.poll_once()
                assert available(registry) == [address]  # late, but not yet taken out
            await poller.poll_once()
            assert available(registry) == []  # the third late reply in a row

            servicer.delay = 0.0
            await poller.poll_once()
            assert available(registry) == [address]

            await server.stop(None)
            await poller.poll_once()
            assert available(registry) == []  # connection refused: out at once
        finally:
            await clients.close()
            await server.stop(None)

    asyncio.run(scenario())
