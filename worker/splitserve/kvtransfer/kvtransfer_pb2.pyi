from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_NONE: _ClassVar[Compression]
    COMPRESSION_INT8: _ClassVar[Compression]
COMPRESSION_NONE: Compression
COMPRESSION_INT8: Compression

class ModelIdentity(_message.Message):
    __slots__ = ("architecture", "dtype", "num_layers", "num_kv_heads", "head_dim", "block_size", "weights_digest")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_KV_HEADS_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    architecture: str
    dtype: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    block_size: int
    weights_digest: str
    def __init__(self, architecture: _Optional[str] = ..., dtype: _Optional[str] = ..., num_layers: _Optional[int] = ..., num_kv_heads: _Optional[int] = ..., head_dim: _Optional[int] = ..., block_size: _Optional[int] = ..., weights_digest: _Optional[str] = ...) -> None: ...

class PushHeader(_message.Message):
    __slots__ = ("request_id", "reservation_id", "identity", "num_tokens", "compression")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    reservation_id: str
    identity: ModelIdentity
    num_tokens: int
    compression: Compression
    def __init__(self, request_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., identity: _Optional[_Union[ModelIdentity, _Mapping]] = ..., num_tokens: _Optional[int] = ..., compression: _Optional[_Union[Compression, str]] = ...) -> None: ...

class KVChunk(_message.Message):
    __slots__ = ("layer", "first_block", "num_blocks", "dtype", "shape", "k", "v", "k_scales", "v_scales", "crc32c")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    FIRST_BLOCK_FIELD_NUMBER: _ClassVar[int]
    NUM_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    V_FIELD_NUMBER: _ClassVar[int]
    K_SCALES_FIELD_NUMBER: _ClassVar[int]
    V_SCALES_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    layer: int
    first_block: int
    num_blocks: int
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    k: bytes
    v: bytes
    k_scales: bytes
    v_scales: bytes
    crc32c: int
    def __init__(self, layer: _Optional[int] = ..., first_block: _Optional[int] = ..., num_blocks: _Optional[int] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., k: _Optional[bytes] = ..., v: _Optional[bytes] = ..., k_scales: _Optional[bytes] = ..., v_scales: _Optional[bytes] = ..., crc32c: _Optional[int] = ...) -> None: ...

class PushEnd(_message.Message):
    __slots__ = ("first_token", "chunks")
    FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    first_token: int
    chunks: int
    def __init__(self, first_token: _Optional[int] = ..., chunks: _Optional[int] = ...) -> None: ...

class PushMessage(_message.Message):
    __slots__ = ("header", "chunk", "end")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    header: PushHeader
    chunk: KVChunk
    end: PushEnd
    def __init__(self, header: _Optional[_Union[PushHeader, _Mapping]] = ..., chunk: _Optional[_Union[KVChunk, _Mapping]] = ..., end: _Optional[_Union[PushEnd, _Mapping]] = ...) -> None: ...

class PushAck(_message.Message):
    __slots__ = ("bytes_received", "chunks_received")
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    bytes_received: int
    chunks_received: int
    def __init__(self, bytes_received: _Optional[int] = ..., chunks_received: _Optional[int] = ...) -> None: ...
