"""Arrow reads of users' own files (caption tables), so nothing outside storage/ imports pyarrow."""

from __future__ import annotations

import pyarrow.parquet as pq


def read_parquet_rows(path: str, columns: list[str]) -> list[dict]:
    """The named columns of a Parquet file as a list of dicts; a missing column is named in the error."""
    schema = pq.read_schema(path)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)} (columns are {', '.join(schema.names)}): "
                         "set parquet.caption_column / parquet.filename_column in multidatabackend.json")
    return pq.read_table(path, columns=columns).to_pylist()
