"""Tensor records: bit-exact round trips, the byte layout storage relies on, and who owns the memory.

Run: .venv/bin/pytest tests/ltx2core/data/test_tensors.py
"""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from ltx2core.data.tensors import from_record, to_record

SHAPE = (4, 3, 2, 5)


def _awkward_values(dtype: torch.dtype) -> torch.Tensor:
    """Random values plus the ones a careless conversion loses: -0.0, inf, -inf, nan, a subnormal."""
    t = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).to(dtype)
    flat = t.view(-1)
    flat[:5] = torch.tensor([-0.0, float("inf"), float("-inf"), float("nan"), torch.finfo(dtype).tiny / 4])
    return t


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_is_bit_exact(dtype: torch.dtype) -> None:
    t = _awkward_values(dtype)
    data, shape, name = to_record(t)
    back = from_record(data, shape, name)
    assert (shape, name, back.dtype) == (list(SHAPE), str(dtype).removeprefix("torch."), dtype)
    assert torch.equal(_bits(back), _bits(t))


def test_bytes_are_little_endian_and_bfloat16_is_its_uint16_bits() -> None:
    assert to_record(torch.tensor([1.0, -2.0]))[0] == bytes.fromhex("0000803f 000000c0")
    assert to_record(torch.tensor([1.0, -2.0], dtype=torch.bfloat16)) == (bytes.fromhex("803f 00c0"), [2], "bfloat16")
    assert to_record(torch.tensor([1.0], dtype=torch.float16))[0] == bytes.fromhex("003c")


def test_a_strided_view_is_stored_in_c_order() -> None:
    t = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    view = t.permute(2, 0, 1)[:, :, 1:]
    data, shape, name = to_record(view)
    assert torch.equal(from_record(data, shape, name), view)


def test_read_only_buffers_are_copied_so_the_tensor_can_be_written() -> None:
    t = torch.arange(6, dtype=torch.float32)
    data, shape, name = to_record(t)
    stored = pa.array([data], type=pa.large_binary())  # what a storage read returns
    back = from_record(stored[0].as_buffer(), shape, name)
    back += 1
    assert torch.equal(back, t + 1)
    assert stored[0].as_py() == data  # the stored bytes did not change


def test_a_writable_buffer_is_shared_not_copied() -> None:
    data, shape, name = to_record(torch.zeros(4, dtype=torch.bfloat16))
    buffer = bytearray(data)
    back = from_record(buffer, shape, name)
    buffer[6:8] = bytes.fromhex("803f")  # element 3 becomes bf16 1.0
    assert back.tolist() == [0.0, 0.0, 0.0, 1.0]


def test_empty_tensors_round_trip() -> None:
    data, shape, name = to_record(torch.empty(0, 128, dtype=torch.bfloat16))
    back = from_record(data, shape, name)
    assert (data, back.shape, back.dtype) == (b"", torch.Size([0, 128]), torch.bfloat16)


def test_a_record_whose_size_disagrees_with_its_shape_is_refused() -> None:
    data, _, name = to_record(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"holds 24 bytes but shape \[3, 3\] of float32 needs 36"):
        from_record(data, [3, 3], name)


def test_unknown_dtypes_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown tensor dtype 'float8'"):
        from_record(b"\x00", [1], "float8")
    with pytest.raises(ValueError, match="cannot store a torch.complex64 tensor"):
        to_record(torch.zeros(1, dtype=torch.complex64))
