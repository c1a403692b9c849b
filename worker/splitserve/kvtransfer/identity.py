"""Model identity: peers exchange KV only when every field agrees."""

from __future__ import annotations

from splitserve.kvtransfer import kvtransfer_pb2 as pb

FIELDS = (
    "architecture", "dtype", "num_layers", "num_kv_heads", "head_dim", "block_size",
    "weights_digest",
)


def identity_mismatch(local: pb.ModelIdentity, remote: pb.ModelIdentity) -> str | None:
    """None when the identities agree, else a message naming every differing field."""
    diffs = [
        f"{name}: this worker has {getattr(local, name)!r}, peer sent {getattr(remote, name)!r}"
        for name in FIELDS
        if getattr(local, name) != getattr(remote, name)
    ]
    if not diffs:
        return None
    return "model identity differs (peers serve different models or layouts): " + "; ".join(diffs)
