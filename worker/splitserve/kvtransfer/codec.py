"""KV chunks to and from the wire: dtype, shape, checksum and size checks; optional int8."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import crc32c
import torch

from splitserve.kvtransfer import kvtransfer_pb2 as pb
from splitserve.kvtransfer.wire import ChunkView

CACHE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
INT8 = "int8"


class ChunkError(ValueError):
    """A chunk that must be refused; the message says which field and what was expected."""


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in CACHE_DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"KV cache dtype {dtype} cannot be transferred; expected {list(CACHE_DTYPES)}")


Buffer = bytes | memoryview


def _raw(t: torch.Tensor) -> memoryview:
    """The tensor's bytes without a copy (the view keeps the tensor alive)."""
    return t.contiguous().view(-1).view(torch.uint8).numpy().data


def _tensor(data: Buffer, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if not data:
        return torch.empty(shape, dtype=dtype)
    with warnings.catch_warnings():  # read-only source: the tensor is only read, then copied
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(data, dtype=dtype).view(shape)


def _quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # x: [blocks, block_size, kv_heads, head_dim] -> int8 same shape,
    # scales: [blocks, block_size, kv_heads], one per token and head (4 bytes per head_dim values)
    x32 = x.float()
    scales = x32.abs().amax(dim=3).clamp(min=1e-12) / 127.0
    q = torch.round(x32 / scales[..., None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def _dequantize(q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (q.float() * scales[..., None]).to(dtype)


def checksum(*parts: Buffer) -> int:
    """CRC-32C over the parts in order (hardware-accelerated where the CPU has it)."""
    crc = 0
    for part in parts:
        crc = crc32c.crc32c(part, crc)
    return crc


def _parts(k: torch.Tensor, v: torch.Tensor, compression: int
           ) -> tuple[str, tuple[Buffer, Buffer, Buffer, Buffer]]:
    """-> wire dtype and the k, v, k_scales, v_scales payloads (views, not copies)."""
    if k.shape != v.shape or k.dim() != 4:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must be equal 4-d shapes")
    if compression == pb.COMPRESSION_INT8:
        kq, ks = _quantize(k)
        vq, vs = _quantize(v)
        return INT8, (_raw(kq), _raw(vq), _raw(ks), _raw(vs))
    return dtype_name(k.dtype), (_raw(k), _raw(v), b"", b"")


def encode_chunk(
    layer: int, first_block: int, k: torch.Tensor, v: torch.Tensor, compression: int
) -> pb.KVChunk:
    """k, v: [blocks, block_size, kv_heads, head_dim] in the cache dtype."""
    wire, parts = _parts(k, v, compression)
    return pb.KVChunk(layer=layer, first_block=first_block, num_blocks=k.shape[0], dtype=wire,
                      shape=list(k.shape), k=bytes(parts[0]), v=bytes(parts[1]),
                      k_scales=bytes(parts[2]), v_scales=bytes(parts[3]),
                      crc32c=checksum(*parts))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_header(number: int, length: int) -> bytes:
    return _varint((number << 3) | 2) + _varint(length)  # wire type 2: length-delimited


# KVChunk field numbers of the payloads, and PushMessage's field number of `chunk`
_PAYLOAD_FIELDS = (6, 7, 8, 9)
_PUSH_CHUNK_FIELD = 2


def encode_chunk_message(
    layer: int, first_block: int, k: torch.Tensor, v: torch.Tensor, compression: int
) -> tuple[bytes, int]:
    """The serialized `PushMessage{chunk}` for k, v, built with one copy of the payload.

    Protobuf accepts fields in any order, so the small fields are serialized by the library and
    the large byte fields are appended as length-delimited fields by hand.
    -> (message bytes, payload bytes).
    """
    wire, parts = _parts(k, v, compression)
    small = pb.KVChunk(layer=layer, first_block=first_block, num_blocks=k.shape[0], dtype=wire,
                       shape=list(k.shape), crc32c=checksum(*parts)).SerializeToString()
    pieces: list[Buffer] = [small]
    payload = 0
    for number, part in zip(_PAYLOAD_FIELDS, parts, strict=True):
        if len(part):
            pieces += [_field_header(number, len(part)), part]
            payload += len(part)
    body_len = sum(len(p) for p in pieces)
    return b"".join([_field_header(_PUSH_CHUNK_FIELD, body_len), *pieces]), payload


@dataclass(frozen=True)
class ChunkSpec:
    """What the receiving side accepts for one reservation."""

    num_layers: int
    num_blocks: int
    block_size: int
    kv_heads: int
    head_dim: int
    cache_dtype: torch.dtype
    compression: int
    max_chunk_bytes: int


@dataclass(frozen=True)
class DecodedChunk:
    k: torch.Tensor  # [blocks, block_size, kv_heads, head_dim] in the cache dtype
    v: torch.Tensor
    nbytes: int  # payload bytes on the wire


def decode_chunk(chunk: pb.KVChunk | ChunkView, spec: ChunkSpec) -> DecodedChunk:
    """Validates `chunk` against `spec` and returns k, v in the cache dtype."""
    # Each read of a bytes field makes a new copy: read every payload exactly once.
    parts = {"k": chunk.k, "v": chunk.v, "k_scales": chunk.k_scales, "v_scales": chunk.v_scales}
    size = sum(len(p) for p in parts.values())
    if size > spec.max_chunk_bytes:
        raise ChunkError(f"chunk of {size} bytes exceeds the limit of {spec.max_chunk_bytes}")
    if not 0 <= chunk.layer < spec.num_layers:
        raise ChunkError(f"chunk.layer={chunk.layer}: expected 0..{spec.num_layers - 1}")
    if chunk.num_blocks == 0 or chunk.first_block + chunk.num_blocks > spec.num_blocks:
        raise ChunkError(
            f"chunk blocks [{chunk.first_block}, {chunk.first_block + chunk.num_blocks}) are "
            f"outside the reservation's {spec.num_blocks} blocks"
        )
    shape = (chunk.num_blocks, spec.block_size, spec.kv_heads, spec.head_dim)
    if tuple(chunk.shape) != shape:
        raise ChunkError(f"chunk.shape={list(chunk.shape)}: expected {list(shape)}")
    int8 = spec.compression == pb.COMPRESSION_INT8
    expected_dtype = INT8 if int8 else dtype_name(spec.cache_dtype)
    if chunk.dtype != expected_dtype:
        raise ChunkError(f"chunk.dtype={chunk.dtype!r}: expected {expected_dtype!r}")
    wire_dtype = torch.int8 if int8 else spec.cache_dtype
    want = shape[0] * shape[1] * shape[2] * shape[3] * wire_dtype.itemsize
    want_scales = shape[0] * shape[1] * shape[2] * 4 if int8 else 0
    expected = {"k": want, "v": want, "k_scales": want_scales, "v_scales": want_scales}
    for name, n in expected.items():
        if len(parts[name]) != n:
            raise ChunkError(f"chunk.{name} has {len(parts[name])} bytes, expected {n}")
    if checksum(*parts.values()) != chunk.crc32c:
        raise ChunkError(f"chunk.crc32c mismatch for layer {chunk.layer}: data corrupted")
    k = _tensor(parts["k"], wire_dtype, shape)
    v = _tensor(parts["v"], wire_dtype, shape)
    if int8:
        scale_shape = (shape[0], shape[1], shape[2])
        k = _dequantize(k, _tensor(parts["k_scales"], torch.float32, scale_shape),
                        spec.cache_dtype)
        v = _dequantize(v, _tensor(parts["v_scales"], torch.float32, scale_shape),
                        spec.cache_dtype)
    return DecodedChunk(k, v, size)
