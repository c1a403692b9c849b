"""KV chunk encoding: exact round trips, int8 error bounds, and refusal of bad chunks."""

from __future__ import annotations

import pytest
import torch

from splitserve.kvtransfer import kvtransfer_pb2 as pb
from splitserve.kvtransfer.codec import ChunkError, ChunkSpec, decode_chunk, encode_chunk

SHAPE = (3, 4, 2, 8)  # [blocks, block_size, kv_heads, head_dim]


def spec(dtype: torch.dtype = torch.float32, compression: int = pb.COMPRESSION_NONE,
         max_bytes: int = 1 << 20) -> ChunkSpec:
    return ChunkSpec(num_layers=2, num_blocks=5, block_size=4, kv_heads=2, head_dim=8,
                     cache_dtype=dtype, compression=compression, max_chunk_bytes=max_bytes)


def kv(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(SHAPE, generator=g).to(dtype), torch.randn(SHAPE, generator=g).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_uncompressed_round_trip_is_exact(dtype: torch.dtype) -> None:
    k, v = kv(dtype)
    chunk = encode_chunk(1, 2, k, v, pb.COMPRESSION_NONE)
    got = decode_chunk(pb.KVChunk.FromString(chunk.SerializeToString()), spec(dtype))
    k2, v2 = got.k, got.v
    assert got.nbytes == 2 * k.numel() * k.element_size()
    assert k2.dtype == dtype and torch.equal(k2, k) and torch.equal(v2, v)


def test_int8_round_trip_error_is_within_half_a_step_per_token_and_head() -> None:
    k, v = kv(torch.float32)
    chunk = encode_chunk(0, 0, k, v, pb.COMPRESSION_INT8)
    got = decode_chunk(chunk, spec(compression=pb.COMPRESSION_INT8))
    k2, v2 = got.k, got.v
    for orig, back in ((k, k2), (v, v2)):
        step = orig.abs().amax(dim=3, keepdim=True) / 127
        assert torch.all((orig - back).abs() <= step / 2 + 1e-6)


def test_int8_is_about_half_of_bfloat16_on_the_wire() -> None:
    g = torch.Generator().manual_seed(1)
    shape = (2, 16, 2, 64)  # a realistic head size: scales add 4 bytes per 64 values
    k = torch.randn(shape, generator=g).to(torch.bfloat16)
    v = torch.randn(shape, generator=g).to(torch.bfloat16)
    full = encode_chunk(0, 0, k, v, pb.COMPRESSION_NONE)
    small = encode_chunk(0, 0, k, v, pb.COMPRESSION_INT8)
    assert small.ByteSize() < 0.6 * full.ByteSize()


def corrupt(chunk: pb.KVChunk) -> pb.KVChunk:
    data = bytearray(chunk.k)
    data[5] ^= 0xFF
    chunk.k = bytes(data)
    return chunk


def reshape(chunk: pb.KVChunk) -> pb.KVChunk:
    chunk.shape[:] = [3, 4, 2, 4]
    return chunk


def truncate(chunk: pb.KVChunk) -> pb.KVChunk:
    chunk.v = chunk.v[:-4]
    return chunk


def bad_layer(chunk: pb.KVChunk) -> pb.KVChunk:
    chunk.layer = 7
    return chunk


def beyond_reservation(chunk: pb.KVChunk) -> pb.KVChunk:
    chunk.first_block = 4
    return chunk


def wrong_dtype(chunk: pb.KVChunk) -> pb.KVChunk:
    chunk.dtype = "bfloat16"
    return chunk


@pytest.mark.parametrize(
    "damage,needle",
    [
        (corrupt, "crc32c"),
        (reshape, "chunk.shape"),
        (truncate, "chunk.v has"),
        (bad_layer, "chunk.layer=7"),
        (beyond_reservation, "outside the reservation"),
        (wrong_dtype, "chunk.dtype"),
    ],
)
def test_bad_chunks_are_refused_with_the_field_named(damage, needle: str) -> None:
    k, v = kv(torch.float32)
    chunk = damage(encode_chunk(0, 0, k, v, pb.COMPRESSION_NONE))
    with pytest.raises(ChunkError, match=needle):
        decode_chunk(chunk, spec())


def test_oversized_chunk_is_refused_before_decoding() -> None:
    k, v = kv(torch.float32)
    chunk = encode_chunk(0, 0, k, v, pb.COMPRESSION_NONE)
    with pytest.raises(ChunkError, match="exceeds the limit"):
        decode_chunk(chunk, spec(max_bytes=1024))
