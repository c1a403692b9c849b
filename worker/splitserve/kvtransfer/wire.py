"""Reading a pushed message without copying its KV payload.

gRPC hands the receiver one `bytes` per message. Parsing it with protobuf copies every bytes
field, and each read of such a field copies again; for chunks of several megabytes that costs
more than the network. `parse_push_message` walks the chunk's fields itself and returns the
payloads as views into the received buffer; the small fields still go through protobuf.
Anything malformed becomes a `Malformed` value, which the receiver refuses with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from splitserve.kvtransfer import kvtransfer_pb2 as pb

_PAYLOADS = {6: "k", 7: "v", 8: "k_scales", 9: "v_scales"}  # KVChunk bytes fields
_CHUNK = 2  # PushMessage.chunk


@dataclass(frozen=True)
class ChunkView:
    """A KVChunk whose payloads are views into the received message (same field names)."""

    layer: int
    first_block: int
    num_blocks: int
    dtype: str
    shape: list[int]
    crc32c: int
    k: memoryview
    v: memoryview
    k_scales: memoryview
    v_scales: memoryview


@dataclass(frozen=True)
class Malformed:
    reason: str


class _Truncated(ValueError):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Truncated("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> list[tuple[int, int, int, int, int]]:
    """-> (field number, wire type, start of the whole field, start of the value, end)."""
    out: list[tuple[int, int, int, int, int]] = []
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
            value = start
        elif wire == 2:
            length, value = _varint(buf, pos)
            pos = value + length
        elif wire == 5:
            value, pos = pos, pos + 4
        elif wire == 1:
            value, pos = pos, pos + 8
        else:
            raise _Truncated(f"unsupported wire type {wire} for field {number}")
        if pos > len(buf):
            raise _Truncated(f"field {number} runs past the end of the message")
        out.append((number, wire, start, value, pos))
    return out


def _chunk(body: memoryview) -> ChunkView:
    payloads = {name: memoryview(b"") for name in _PAYLOADS.values()}
    small = bytearray()
    for number, wire, start, value, end in _fields(body):
        if number in _PAYLOADS and wire == 2:
            payloads[_PAYLOADS[number]] = body[value:end]
        else:
            small += body[start:end]
    meta = pb.KVChunk.FromString(bytes(small))
    return ChunkView(meta.layer, meta.first_block, meta.num_blocks, meta.dtype,
                     list(meta.shape), meta.crc32c, **payloads)


def parse_push_message(data: bytes) -> pb.PushMessage | ChunkView | Malformed:
    buf = memoryview(data)
    try:
        fields = _fields(buf)
        if any(f[0] == _CHUNK for f in fields):
            if len(fields) != 1 or fields[0][1] != 2:
                return Malformed("a chunk message must hold the chunk and nothing else")
            _, _, _, value, end = fields[0]
            return _chunk(buf[value:end])
        return pb.PushMessage.FromString(data)
    except Exception as exc:  # protobuf's DecodeError or ours: the frame is refused
        return Malformed(f"malformed push message: {exc}")
