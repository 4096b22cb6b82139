"""Tensors as (bytes, shape, dtype name) records: the storage layer's tensor columns, without torch in storage.

The bytes are the tensor's C-order elements, little-endian. Arrow has no bfloat16, so a bf16 tensor is
written as its raw uint16 bits under the dtype name "bfloat16" and read back bit for bit.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import torch

# dtype name -> (torch dtype, the dtype whose bits are stored)
_DTYPES: dict[str, tuple[torch.dtype, torch.dtype]] = {
    "float64": (torch.float64, torch.float64),
    "float32": (torch.float32, torch.float32),
    "float16": (torch.float16, torch.float16),
    "bfloat16": (torch.bfloat16, torch.uint16),
    "int64": (torch.int64, torch.int64),
    "int32": (torch.int32, torch.int32),
    "int16": (torch.int16, torch.int16),
    "int8": (torch.int8, torch.int8),
    "uint8": (torch.uint8, torch.uint8),
    "bool": (torch.bool, torch.bool),
}
_NAMES = {torch_dtype: name for name, (torch_dtype, _) in _DTYPES.items()}


def to_record(t: torch.Tensor) -> tuple[bytes, list[int], str]:
    """(raw little-endian bytes, shape, dtype name) of a tensor; it is copied to the CPU first if needed."""
    _require_little_endian()
    name = _NAMES.get(t.dtype)
    if name is None:
        raise ValueError(f"cannot store a {t.dtype} tensor: supported dtypes are {', '.join(_DTYPES)}")
    cpu = t.detach().to("cpu").contiguous()
    bits = cpu.view(_DTYPES[name][1])
    return bits.numpy().tobytes(), list(cpu.shape), name


def from_record(data: bytes | bytearray | memoryview, shape: Sequence[int], dtype: str) -> torch.Tensor:
    """The tensor a record holds.

    Zero-copy over a writable buffer (bytearray, writable memoryview): the tensor keeps the buffer alive and
    shares its memory. Read-only buffers (bytes, Arrow buffers) are copied once, so writing to the tensor can
    never touch the stored data.
    """
    _require_little_endian()
    if dtype not in _DTYPES:
        raise ValueError(f"unknown tensor dtype {dtype!r}: supported dtypes are {', '.join(_DTYPES)}")
    torch_dtype, stored = _DTYPES[dtype]
    shape = [int(n) for n in shape]
    view = memoryview(data).cast("B")
    expected = math.prod(shape) * stored.itemsize
    if view.nbytes != expected:
        raise ValueError(
            f"tensor record holds {view.nbytes} bytes but shape {shape} of {dtype} needs {expected}: "
            "the row's data, shape and dtype columns disagree (rewrite the row)"
        )
    if expected == 0:
        return torch.empty(shape, dtype=torch_dtype)
    buffer = view if not view.readonly else bytearray(view)
    return torch.frombuffer(buffer, dtype=stored).view(torch_dtype).reshape(shape)


def _require_little_endian() -> None:
    # torch.frombuffer and numpy's tobytes use the host's byte order; every host we run on is little-endian.
    if sys.byteorder != "little":
        raise RuntimeError("tensor records are little-endian; this host is big-endian")
