"""The receiver's zero-copy reading of push messages agrees with protobuf and refuses junk."""

from __future__ import annotations

import pytest
import torch

from splitserve.kvtransfer import kvtransfer_pb2 as pb
from splitserve.kvtransfer.codec import (
    ChunkSpec,
    decode_chunk,
    encode_chunk,
    encode_chunk_message,
)
from splitserve.kvtransfer.wire import ChunkView, Malformed, parse_push_message

SHAPE = (3, 4, 2, 8)
SPEC = ChunkSpec(num_layers=4, num_blocks=8, block_size=4, kv_heads=2, head_dim=8,
                 cache_dtype=torch.float32, compression=pb.COMPRESSION_NONE,
                 max_chunk_bytes=1 << 20)


def tensors() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)


@pytest.mark.parametrize("compression", [pb.COMPRESSION_NONE, pb.COMPRESSION_INT8])
def test_views_carry_the_same_fields_as_protobuf(compression: int) -> None:
    k, v = tensors()
    raw, payload = encode_chunk_message(2, 5, k, v, compression)
    view = parse_push_message(raw)
    ref = pb.PushMessage.FromString(raw).chunk
    assert isinstance(view, ChunkView)
    for name in ("layer", "first_block", "num_blocks", "dtype", "crc32c"):
        assert getattr(view, name) == getattr(ref, name), name
    assert view.shape == list(ref.shape)
    for name in ("k", "v", "k_scales", "v_scales"):
        assert bytes(getattr(view, name)) == getattr(ref, name), name
    assert payload == sum(len(getattr(ref, n)) for n in ("k", "v", "k_scales", "v_scales"))


def test_a_protobuf_serialized_chunk_decodes_exactly_through_the_views() -> None:
    k, v = tensors()
    raw = pb.PushMessage(chunk=encode_chunk(1, 0, k, v, pb.COMPRESSION_NONE)).SerializeToString()
    view = parse_push_message(raw)
    assert isinstance(view, ChunkView)
    got = decode_chunk(view, SPEC)
    assert torch.equal(got.k, k) and torch.equal(got.v, v)


def test_header_and_end_messages_come_back_as_protobuf() -> None:
    for msg in (pb.PushMessage(header=pb.PushHeader(request_id="r", num_tokens=3)),
                pb.PushMessage(end=pb.PushEnd(first_token=7, chunks=2))):
        assert parse_push_message(msg.SerializeToString()) == msg


@pytest.mark.parametrize("junk", [
    b"\x12\xff\xff\xff\xff\x0f",  # chunk length far beyond the message
    b"\x12\x05\x32\x10abc",       # payload field longer than the chunk
    b"\x12",                      # truncated length
    b"\x0f\x00",                  # unsupported wire type
    b"\x12\x00\x1a\x00",          # a chunk and an end in one message
])
def test_malformed_frames_become_refusals_with_a_reason(junk: bytes) -> None:
    got = parse_push_message(junk)
    assert isinstance(got, Malformed) and got.reason
