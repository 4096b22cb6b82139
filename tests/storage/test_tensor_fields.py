"""The tensor column convention round-trips bf16 bits exactly through a real Lance table."""

from __future__ import annotations

from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa

from storage.schemas import NO_COMPRESSION_METADATA, tensor_fields

SHAPE = (4, 3, 5)


def test_bf16_bits_and_shape_survive_a_lance_round_trip(tmp_path: Path) -> None:
    schema = pa.schema([pa.field("key", pa.string(), nullable=False), *tensor_fields("latent")])
    bits = np.random.default_rng(0).integers(0, 2**16, size=SHAPE, dtype=np.uint16)  # what tensor.view(uint16) gives
    rows = [{"key": "a", "latent": bits.tobytes(), "latent_shape": list(SHAPE), "latent_dtype": "bfloat16"},
            {"key": "b", "latent": None, "latent_shape": None, "latent_dtype": None}]
    lancedb.connect(tmp_path).create_table("t", data=pa.Table.from_pylist(rows, schema=schema))

    table = lancedb.connect(tmp_path).open_table("t")
    field = table.schema.field("latent")
    assert field.type == pa.large_binary()
    assert field.metadata == {k.encode(): v.encode() for k, v in NO_COMPRESSION_METADATA.items()}
    stored = {r["key"]: r for r in table.to_arrow().to_pylist()}
    restored = np.frombuffer(stored["a"]["latent"], dtype=np.uint16).reshape(stored["a"]["latent_shape"])
    assert np.array_equal(restored, bits) and stored["a"]["latent_dtype"] == "bfloat16"
    assert stored["b"]["latent"] is None
