"""Write an ONNX model's weights without holding a serialized copy in memory.

Protobuf merges repeated occurrences of a message field, so a ModelProto can be
written as the weight-less model followed by one `graph { initializer {...} }`
record per tensor; every reader (onnx, ONNX Runtime) sees the single merged model.
Each record's bytes are streamed straight from the array's memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper

MODEL_GRAPH_FIELD = 7  # ModelProto.graph
GRAPH_INITIALIZER_FIELD = 5  # GraphProto.initializer
TENSOR_RAW_DATA_FIELD = 9  # TensorProto.raw_data
LENGTH_DELIMITED = 2


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field: int) -> bytes:
    return _varint(field << 3 | LENGTH_DELIMITED)


def _write_initializer(f: BinaryIO, name: str, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    head = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
    head_bytes = head.SerializeToString()
    data = memoryview(array.astype(array.dtype.newbyteorder("<"), copy=False)).cast("B")
    tensor_len = len(head_bytes) + len(_key(TENSOR_RAW_DATA_FIELD)) + len(_varint(len(data))) + len(data)
    graph_len = len(_key(GRAPH_INITIALIZER_FIELD)) + len(_varint(tensor_len)) + tensor_len
    f.write(_key(MODEL_GRAPH_FIELD) + _varint(graph_len))
    f.write(_key(GRAPH_INITIALIZER_FIELD) + _varint(tensor_len))
    f.write(head_bytes)
    f.write(_key(TENSOR_RAW_DATA_FIELD) + _varint(len(data)))
    f.write(data)


def save_with_initializers(model: onnx.ModelProto, initializers: Iterable[tuple[str, np.ndarray]],
                           f: BinaryIO) -> None:
    """Write `model` (without weights) plus the named arrays as its initializers."""
    f.write(model.SerializeToString())
    for name, array in initializers:
        _write_initializer(f, name, array)
