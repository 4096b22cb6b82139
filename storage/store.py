"""The pipeline's tables in one LanceDB database: keyed upserts, reads, versions, stage records.

Writes are keyed `merge_insert` commits: one call is one commit, so a writer killed at any moment
loses at most the call in flight and never leaves half a row. Callers batch (hundreds of rows per
call); every commit adds a fragment and a version.

A write that would change nothing commits nothing: rows identical to the stored ones are dropped
before the merge, and so are keys already present (`insert_missing`) or absent (`delete`). Table
versions therefore move only when data changes, which keeps downstream fingerprints (and
Prefect cache keys) stable when a finished pipeline is rerun.

Every handle re-reads the latest commit on each operation (`read_consistency_interval=0`), so a
process sees what other writers committed. Concurrent writers may share keys (the key is
declared as Lance's unenforced primary key, see `storage.schemas`), but each write re-merges on
conflict; give writers disjoint shards of keys for throughput.

Compaction (`optimize`) runs from one place, at the end of a stage, and only past
`OPTIMIZE_MIN_FRAGMENTS` fragments: below that, reads of small tables stay fast (10k rows in 40
fragments read their keys in 25-35 ms), and each compaction rewrites the table (GBs for latents).
It also prunes versions older than Lance's default of 7 days; younger versions stay readable.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import lancedb
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.table import Table as LanceTable

from storage.location import resolve
from storage.schemas import STAGE_RUNS, TableSpec, table_spec
from storage.sql import sql_eq, sql_in

logger = logging.getLogger(__name__)

OPTIMIZE_MIN_FRAGMENTS = 64
STAGE_STATUSES = ("completed", "failed")
# Keys per SQL IN list when looking keys up or deleting them, to keep filters a sane size.
_KEYS_PER_FILTER = 4096
# A merge's source goes to Lance in record batches of about this size: handed 64 text-embeds rows (160 MB) as one
# batch, a merge took 1.8x (insert-only) to 2.9x (upsert) as long as in 16 MiB batches
# (bench/text_embeds_write_bench.py).
MERGE_BATCH_BYTES = 16 * 2**20
_CREATE_TRIES = 5

Rows = pa.Table | Iterable[Mapping[str, Any]]


class Store:
    """One LanceDB database (local folder or s3:// prefix) holding the pipeline's tables."""

    def __init__(self, db: lancedb.DBConnection, uri: str) -> None:
        self._db = db
        self._uri = uri
        self._tables: dict[str, LanceTable] = {}

    @classmethod
    def open(cls, uri: str, *, storage_options: Mapping[str, str] | None = None) -> Store:
        location = resolve(uri, storage_options, os.environ)
        try:
            # On S3 this lists the prefix, so a wrong endpoint, bucket or key fails here, up front.
            db = lancedb.connect(
                location.uri,
                read_consistency_interval=timedelta(0),
                storage_options=location.storage_options or None,
            )
        except (ValueError, OSError, RuntimeError) as err:
            if location.is_local:
                raise
            # from None: Lance's message is a page of Rust debug output; the reason is in ours.
            raise location.unavailable(err) from None
        logger.info("storage: %s", location.describe())
        return cls(db, location.uri)

    @property
    def uri(self) -> str:
        return self._uri

    # ---- writes ---------------------------------------------------------------------------

    def upsert(self, table: str, rows: Rows) -> int | None:
        """Insert new keys and update existing ones, in one commit.

        Rows may carry a subset of the columns if they include every non-nullable one; on an
        existing key only the given columns change. Returns the table version after the write
        (None only when `rows` is empty and the table does not exist yet).
        """
        spec = table_spec(table)
        data = _to_arrow(spec, rows, insert=True)
        if data.num_rows == 0:
            return self.version(table)
        tbl = self._writable(spec)
        data = _drop_unchanged(tbl, spec, data)
        if data.num_rows == 0:
            return tbl.version
        result = tbl.merge_insert(spec.key).when_matched_update_all().when_not_matched_insert_all().execute(
            _batched(data))
        logger.debug("%s: upserted %d rows -> v%d", table, data.num_rows, result.version)
        return result.version

    def insert_missing(self, table: str, rows: Rows) -> int | None:
        """Insert the rows whose key is absent; existing rows are left untouched."""
        spec = table_spec(table)
        data = _to_arrow(spec, rows, insert=True)
        if data.num_rows == 0:
            return self.version(table)
        tbl = self._writable(spec)
        present = _present_keys(tbl, spec, data.column(spec.key).to_pylist())
        if present:
            data = data.filter(pc.invert(pc.is_in(data.column(spec.key), pa.array(present))))
        if data.num_rows == 0:
            return tbl.version
        # The merge (not a plain append) keeps this right when another writer inserts a key meanwhile.
        result = tbl.merge_insert(spec.key).when_not_matched_insert_all().execute(_batched(data))
        return result.version

    def update(self, table: str, rows: Rows) -> int | None:
        """Change the given columns of existing rows; rows whose key is absent are ignored.

        For stages that fill columns of rows another stage made (bucket -> samples): only the
        key and the columns to change are needed.
        """
        spec = table_spec(table)
        data = _to_arrow(spec, rows, insert=False)
        tbl = self._table(spec)
        if tbl is None or data.num_rows == 0:
            return self.version(table)
        self._add_missing_columns(tbl, spec)
        data = _drop_unchanged(tbl, spec, data, keep_absent=False)
        if data.num_rows == 0:
            return tbl.version
        return tbl.merge_insert(spec.key).when_matched_update_all().execute(_batched(data)).version

    def insert_if_absent(self, table: str, row: Mapping[str, Any]) -> bool:
        """Insert one row unless its key exists, atomically against other writers; True if it went in.

        The key is Lance's primary key, so of two writers inserting it together one commits the row and the
        other's retried merge finds it there (storage.schemas)."""
        spec = table_spec(table)
        result = self._writable(spec).merge_insert(spec.key).when_not_matched_insert_all().execute(
            _to_arrow(spec, [row], insert=True))
        return result.num_inserted_rows == 1

    def update_where(self, table: str, where: str, values: Mapping[str, Any]) -> None:
        """Set `values` on the rows matching `where` (build it with storage.sql), in one commit."""
        tbl = self._table(table_spec(table))
        if tbl is not None:
            tbl.update(where=where, values=dict(values))

    def delete_where(self, table: str, where: str) -> None:
        tbl = self._table(table_spec(table))
        if tbl is not None:
            tbl.delete(where)

    def delete(self, table: str, keys: Iterable[str]) -> int | None:
        """Delete rows by key (one commit per 4096 present keys; absent keys cost nothing)."""
        spec = table_spec(table)
        tbl = self._table(spec)
        if tbl is None:
            return None
        for chunk in _chunks(list(dict.fromkeys(keys)), _KEYS_PER_FILTER):
            present = _present_keys(tbl, spec, chunk)
            if present:
                tbl.delete(sql_in(spec.key, present))
        return tbl.version

    # ---- reads ----------------------------------------------------------------------------

    def read(self, table: str, columns: Sequence[str] | None = None, where: str | None = None, *,
             commit_order: bool = False) -> pa.Table:
        """Rows as an Arrow table with the contract schema (empty when the table does not exist).

        Build `where` with `storage.sql` (`sql_in`, `sql_eq`) so values are quoted correctly. A scan returns
        fragments in any order; `commit_order` sorts the rows by Lance's row id (fragment, then offset), so the
        row committed first comes first for every reader.
        """
        spec = table_spec(table)
        names = list(columns) if columns is not None else spec.schema.names
        unknown = [c for c in names if c not in spec.schema.names]
        if unknown:
            raise ValueError(f"table {table!r} has no column(s) {unknown}; columns: {spec.schema.names}")
        target = pa.schema([spec.schema.field(c) for c in names])
        tbl = self._table(spec)
        if tbl is None:
            return target.empty_table()
        stored = set(tbl.schema.names)
        query = tbl.search()
        if where:
            query = query.where(where)
        query = query.select([c for c in names if c in stored]).limit(None)
        if commit_order:
            data = query.with_row_id(True).to_arrow().sort_by("_rowid")
        else:
            data = query.to_arrow()
        # Columns added to the contract after this table was written read as null.
        arrays = [data.column(c) if c in stored else pa.nulls(data.num_rows, target.field(c).type) for c in names]
        return pa.Table.from_arrays(arrays, schema=target)

    def keys(self, table: str, where: str | None = None) -> set[str]:
        spec = table_spec(table)
        return set(self.read(table, [spec.key], where).column(spec.key).to_pylist())

    def column_map(self, table: str, value_column: str, where: str | None = None) -> dict[str, Any]:
        """{key: value} for one column, e.g. sample_id -> filter_fp."""
        spec = table_spec(table)
        data = self.read(table, [spec.key, value_column], where)
        return dict(zip(data.column(spec.key).to_pylist(), data.column(value_column).to_pylist(), strict=True))

    def count(self, table: str, where: str | None = None) -> int:
        tbl = self._table(table_spec(table))
        return 0 if tbl is None else tbl.count_rows(where)

    def exists(self, table: str) -> bool:
        return self._table(table_spec(table)) is not None

    def version(self, table: str) -> int | None:
        """The latest committed version, None when the table does not exist."""
        tbl = self._table(table_spec(table))
        return None if tbl is None else tbl.version

    def versions(self, tables: Iterable[str]) -> dict[str, int | None]:
        return {t: self.version(t) for t in tables}

    def stats(self, table: str) -> dict[str, int | None]:
        """rows, bytes (data files on disk), fragments, version; zeros and None when absent."""
        tbl = self._table(table_spec(table))
        if tbl is None:
            return {"rows": 0, "bytes": 0, "fragments": 0, "version": None}
        stats = tbl.stats()
        return {
            "rows": stats["num_rows"],
            "bytes": stats["total_bytes"],
            "fragments": stats["fragment_stats"]["num_fragments"],
            "version": tbl.version,
        }

    # ---- maintenance ----------------------------------------------------------------------

    def optimize(self, table: str, *, min_fragments: int = OPTIMIZE_MIN_FRAGMENTS) -> bool:
        """Compact `table` when it has more than `min_fragments` fragments; True when it did.

        Call from one process only (the end of a stage): concurrent compactions conflict and redo
        the full rewrite.
        """
        tbl = self._table(table_spec(table))
        if tbl is None:
            return False
        fragments = tbl.stats()["fragment_stats"]["num_fragments"]
        if fragments <= min_fragments:
            return False
        tbl.optimize()
        logger.info("%s: compacted %d fragments -> %d", table, fragments, self.stats(table)["fragments"])
        return True

    # ---- stage bookkeeping ----------------------------------------------------------------

    def record_stage_run(
        self,
        stage: str,
        scope: str,
        *,
        fingerprint: str,
        status: str,
        done: int,
        skipped: int,
        failed: int,
        error: str | None,
        versions: Mapping[str, int | None],
        flow_run_id: str | None,
        started_at: datetime,
        finished_at: datetime,
    ) -> str:
        """Append one finished run of `stage` over `scope` (dataset id or "*"); returns its run_key."""
        if status not in STAGE_STATUSES:
            raise ValueError(f"stage run status {status!r} must be one of {STAGE_STATUSES}")
        if status == "failed" and not error:
            raise ValueError(f"stage {stage!r} ({scope}) failed: record its error message too")
        for name, moment in (("started_at", started_at), ("finished_at", finished_at)):
            if moment.tzinfo is None:
                raise ValueError(f"{name}={moment} has no time zone; pass datetime.now(timezone.utc)")
        run_key = f"{stage}/{scope}/{started_at.isoformat()}/{uuid.uuid4().hex[:8]}"
        self.upsert(
            STAGE_RUNS.name,
            [
                {
                    "run_key": run_key,
                    "stage": stage,
                    "scope": scope,
                    "fingerprint": fingerprint,
                    "status": status,
                    "done": done,
                    "skipped": skipped,
                    "failed": failed,
                    "error": error,
                    "versions": json.dumps(dict(versions), sort_keys=True),
                    "flow_run_id": flow_run_id,
                    "started_at": started_at,
                    "finished_at": finished_at,
                }
            ],
        )
        return run_key

    def last_stage_runs(self) -> list[dict[str, Any]]:
        """The latest run per (stage, scope), sorted by stage then scope; `versions` parsed to a dict."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for run in self.read(STAGE_RUNS.name).to_pylist():
            slot = (run["stage"], run["scope"])
            if slot not in latest or _run_order(run) > _run_order(latest[slot]):
                latest[slot] = run
        runs = [latest[slot] for slot in sorted(latest)]
        for run in runs:
            run["versions"] = json.loads(run["versions"])
        return runs

    def last_error(self, stage: str) -> str | None:
        """The error of the most recent failed run of `stage` in a scope whose latest run failed.

        None once every scope's latest run of the stage completed: a fixed error is not news.
        """
        failed = [r for r in self.last_stage_runs() if r["stage"] == stage and r["status"] == "failed"]
        return max(failed, key=_run_order)["error"] if failed else None

    def stage_runs(self, stage: str) -> list[dict[str, Any]]:
        """Every recorded run of `stage`, oldest first (history for reports)."""
        runs = self.read(STAGE_RUNS.name, where=sql_eq("stage", stage)).to_pylist()
        return sorted(runs, key=_run_order)

    # ---- handles --------------------------------------------------------------------------

    def _table(self, spec: TableSpec) -> LanceTable | None:
        tbl = self._tables.get(spec.name)
        if tbl is not None:
            return tbl
        try:
            tbl = self._db.open_table(spec.name)
        except ValueError as err:
            # lancedb reports a missing table (or one whose first commit is still being written
            # by another process) as a ValueError "Table '<name>' was not found".
            if "was not found" not in str(err):
                raise
            return None
        self._tables[spec.name] = tbl
        return tbl

    def _writable(self, spec: TableSpec) -> LanceTable:
        tbl = self._table(spec)
        for attempt in range(_CREATE_TRIES):
            if tbl is not None:
                break
            try:
                # exist_ok: another process may create it between our check and this call.
                tbl = self._db.create_table(spec.name, schema=spec.schema, exist_ok=True)
            except RuntimeError as err:
                # Two creates in the same instant: Lance refuses the one that lost ("Retryable commit conflict ...
                # preempted by concurrent transaction Overwrite"; seen in `make test`), and the table is the other's.
                if "commit conflict" not in str(err) or attempt == _CREATE_TRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
                tbl = self._table(spec)
                continue
            logger.info("%s: created table in %s", spec.name, self._uri)
            self._tables[spec.name] = tbl
        self._add_missing_columns(tbl, spec)
        return tbl

    def _add_missing_columns(self, tbl: LanceTable, spec: TableSpec) -> None:
        """Bring a table written before a column joined the contract up to date (nulls)."""
        stored = set(tbl.schema.names)
        missing = [f for f in spec.schema if f.name not in stored]
        if not missing:
            return
        required = [f.name for f in missing if not f.nullable]
        if required:
            raise ValueError(
                f"table {spec.name!r} in {self._uri} lacks required column(s) {required}; "
                f"rebuild it (delete {spec.name}.lance or rerun its stage with --force)"
            )
        tbl.add_columns(missing)
        logger.info("%s: added column(s) %s", spec.name, [f.name for f in missing])


def _to_arrow(spec: TableSpec, rows: Rows, *, insert: bool) -> pa.Table:
    """Rows as an Arrow table typed by the contract, refusing what would write a bad row."""
    if isinstance(rows, pa.Table):
        names = rows.column_names
    else:
        rows = list(rows)
        if not rows:
            return spec.schema.empty_table()
        names = list(dict.fromkeys(name for row in rows for name in row))
    unknown = [n for n in names if n not in spec.schema.names]
    if unknown:
        raise ValueError(f"table {spec.name!r} has no column(s) {unknown}; columns: {spec.schema.names}")
    needed = spec.required if insert else (spec.key,)
    absent = [n for n in needed if n not in names]
    if absent:
        raise ValueError(f"rows for table {spec.name!r} lack required column(s) {absent}")
    target = pa.schema([spec.schema.field(n) for n in names])
    try:
        if isinstance(rows, pa.Table):
            data = rows.select(names).cast(target)
        else:
            data = pa.Table.from_pylist(rows, schema=target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as err:
        raise ValueError(f"rows for table {spec.name!r} do not fit its schema: {err}") from err
    keys = data.column(spec.key)
    for field in target:
        column = data.column(field.name)
        if not field.nullable and column.null_count:
            first = keys[pc.index(pc.is_null(column), True).as_py()]
            raise ValueError(f"table {spec.name!r}: column {field.name!r} is null (first at key {first})")
    if pc.count_distinct(keys).as_py() != data.num_rows:
        counts = pc.value_counts(keys)
        dup = next(c["values"] for c in counts.to_pylist() if c["counts"] > 1)
        raise ValueError(f"table {spec.name!r}: key {dup!r} appears more than once in one write")
    return data


def _batched(data: pa.Table) -> pa.RecordBatchReader:
    """`data` as a stream of record batches of about MERGE_BATCH_BYTES (small rows stay one batch)."""
    rows = max(1, MERGE_BATCH_BYTES * data.num_rows // max(data.nbytes, 1))
    return pa.RecordBatchReader.from_batches(data.schema, data.to_batches(max_chunksize=rows))


def _present_keys(tbl: LanceTable, spec: TableSpec, keys: Sequence[str]) -> list[str]:
    found: list[str] = []
    for chunk in _chunks(list(keys), _KEYS_PER_FILTER):
        hit = tbl.search().where(sql_in(spec.key, chunk)).select([spec.key]).limit(None).to_arrow()
        found.extend(hit.column(spec.key).to_pylist())
    return found


def _drop_unchanged(tbl: LanceTable, spec: TableSpec, data: pa.Table, *, keep_absent: bool = True) -> pa.Table:
    """`data` without the rows whose given columns already hold exactly these values
    (and without the rows whose key is not stored, unless `keep_absent`)."""
    stored_names = set(tbl.schema.names)
    columns = [c for c in data.column_names if c in stored_names]
    keys = data.column(spec.key).to_pylist()
    stored: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(keys, _KEYS_PER_FILTER):
        hit = tbl.search().where(sql_in(spec.key, chunk)).select(columns).limit(None).to_arrow()
        stored.update((row[spec.key], row) for row in hit.to_pylist())
    if not stored and keep_absent:
        return data
    changed = [
        i
        for i, row in enumerate(data.to_pylist())
        if (row[spec.key] in stored and stored[row[spec.key]] != row) or (row[spec.key] not in stored and keep_absent)
    ]
    return data.take(pa.array(changed, pa.int64()))


def _run_order(run: Mapping[str, Any]) -> tuple[datetime, datetime, str]:
    return (run["finished_at"], run["started_at"], run["run_key"])


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
