"""HTTP/2 keepalive for worker gRPC: how a caller notices a peer it can no longer reach.

A worker cut off by the network (a partition, a NetworkPolicy, a dead node) sends no reset: its
TCP connections stay open and a call on them would wait for its whole deadline. With these
options the caller pings every `PING_EVERY_MS` and drops the connection when a ping goes
unanswered for `PING_TIMEOUT_MS`, failing its calls with UNAVAILABLE, which the router retries
elsewhere. Reconnection backs off to at most `MAX_RECONNECT_MS`, so a peer that comes back is
found again within seconds. Servers accept those pings (without them a server answers frequent
pings with GOAWAY) and ping their callers the same way, so a push from a sender that vanished
does not hold a receiving thread.
"""

from __future__ import annotations

PING_EVERY_MS = 5_000
PING_TIMEOUT_MS = 5_000
MAX_RECONNECT_MS = 5_000

CLIENT: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", PING_EVERY_MS),
    ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # any ping unanswered this long closes the connection (flow-control pings hold back
    # keepalive pings while they are in flight)
    ("grpc.http2.ping_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_MS),
]

SERVER: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", PING_EVERY_MS),
    ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", PING_EVERY_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
]
