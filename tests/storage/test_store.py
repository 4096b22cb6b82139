"""Store on a real Lance database in tmp_path: keyed writes, reads, versions, stage records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest

from storage import Store, sql_eq, sql_in
from storage.schemas import PRIMARY_KEY_METADATA, SAMPLES, VIDEOS

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def video(i: int, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {"video_id": f"v{i}", "path": f"/d/{i}.mp4", "width": 640, "height": 480, "fps": 24.0,
                              "num_frames": 97, "duration_s": 97 / 24, "has_audio": i % 2 == 0, "error": None}
    return row | changes


def sample(i: int, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {"sample_id": f"s{i}", "dataset_id": "ds", "video_id": f"v{i}", "path": f"/d/{i}.mp4",
                              "kept": True, "reason": None, "frames_at_rate": 97, "repeats": 1, "filter_fp": "f1"}
    return row | changes


# Every write as the store batches it (these small rows: one batch a merge) and streamed a row a batch, as big
# rows are (text embeddings: ~6 a batch): the merges must mean the same either way.
@pytest.fixture(params=[None, 1], ids=["one-batch", "row-a-batch"])
def store(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Store:
    if request.param is not None:
        monkeypatch.setattr("storage.store.MERGE_BATCH_BYTES", request.param)
    return Store.open(str(tmp_path / "db"))


def by_key(store: Store, table: str, key: str) -> dict[str, dict[str, object]]:
    return {r[key]: r for r in store.read(table).to_pylist()}


def test_upsert_creates_then_updates_without_duplicates(store: Store) -> None:
    v1 = store.upsert("videos", [video(i) for i in range(5)])
    assert store.exists("videos") and store.count("videos") == 5

    v2 = store.upsert("videos", [video(1, width=1280), video(5)])
    rows = by_key(store, "videos", "video_id")
    assert v2 > v1
    assert store.count("videos") == 6
    assert rows["v1"]["width"] == 1280 and rows["v0"]["width"] == 640
    assert rows["v1"]["num_frames"] == 97  # untouched columns keep their values

    assert store.upsert("videos", [video(i) for i in range(5)]) > v2  # v1 changes back
    assert sorted(store.keys("videos")) == [f"v{i}" for i in range(6)]


def test_upsert_of_identical_rows_commits_nothing(store: Store) -> None:
    version = store.upsert("videos", [video(i) for i in range(4)])
    assert store.upsert("videos", [video(i) for i in range(4)]) == version
    assert store.upsert("videos", []) == version
    assert store.count("videos") == 4


def test_upsert_accepts_an_arrow_table(store: Store) -> None:
    data = pa.Table.from_pylist([video(i) for i in range(3)])  # inferred types: cast to the contract
    store.upsert("videos", data)
    assert store.read("videos").schema == VIDEOS.schema
    assert store.column_map("videos", "width") == {"v0": 640, "v1": 640, "v2": 640}


def test_insert_missing_keeps_existing_rows(store: Store) -> None:
    store.upsert("samples", [sample(0, filter_fp="old"), sample(1, filter_fp="old")])
    version = store.insert_missing("samples", [sample(1, filter_fp="new"), sample(2, filter_fp="new")])
    assert store.column_map("samples", "filter_fp") == {"s0": "old", "s1": "old", "s2": "new"}
    assert store.insert_missing("samples", [sample(0, filter_fp="new")]) == version  # nothing to insert


def test_update_changes_only_given_columns_of_existing_rows(store: Store) -> None:
    store.upsert("samples", [sample(0), sample(1, kept=False, reason="too short")])
    bucket = {"bucket": "640x480@97", "width": 640, "height": 480, "num_frames": 97, "bucket_fp": "b1"}
    store.update("samples", [{"sample_id": "s0", **bucket}, {"sample_id": "absent", **bucket}])
    rows = by_key(store, "samples", "sample_id")
    assert set(rows) == {"s0", "s1"}
    assert rows["s0"]["bucket"] == "640x480@97" and rows["s0"]["kept"] is True and rows["s0"]["filter_fp"] == "f1"
    assert rows["s1"]["bucket"] is None and rows["s1"]["reason"] == "too short"
    version = store.version("samples")
    assert store.update("samples", [{"sample_id": "absent", **bucket}, {"sample_id": "s0", **bucket}]) == version


def test_delete_removes_present_keys_and_ignores_absent_ones(store: Store) -> None:
    store.upsert("samples", [sample(i) for i in range(5)])
    version = store.delete("samples", ["s1", "s3", "nope"])
    assert store.keys("samples") == {"s0", "s2", "s4"}
    assert store.delete("samples", ["nope", "s1"]) == version
    assert store.delete("captions", ["x"]) is None  # no table, nothing to do


def test_missing_table_reads_empty_with_the_contract_schema(store: Store) -> None:
    data = store.read("samples")
    assert data.num_rows == 0 and data.schema == SAMPLES.schema
    assert store.read("samples", ["sample_id", "kept"]).schema.names == ["sample_id", "kept"]
    assert store.keys("samples") == set() and store.column_map("samples", "kept") == {}
    assert store.count("samples") == 0 and store.version("samples") is None and not store.exists("samples")
    assert store.stats("samples") == {"rows": 0, "bytes": 0, "fragments": 0, "version": None}


def test_where_finds_values_with_quotes_and_backslashes(store: Store) -> None:
    odd = ["it's.mp4", "''double.mp4", "back\\slash.mp4", 'dq"x.mp4', "50%_off.mp4", "é✓.mp4"]
    store.upsert("videos", [video(i, path=p) for i, p in enumerate(odd)])
    for i, path in enumerate(odd):
        assert store.keys("videos", where=sql_eq("path", path)) == {f"v{i}"}
    assert store.keys("videos", where=sql_in("path", odd[:2])) == {"v0", "v1"}
    assert store.count("videos", sql_in("path", [])) == 0
    assert store.column_map("videos", "path", where=sql_eq("video_id", "v0")) == {"v0": "it's.mp4"}


def test_versions_move_only_on_writes(store: Store) -> None:
    store.upsert("videos", [video(0)])
    store.upsert("samples", [sample(0)])
    before = store.versions(["videos", "samples", "captions"])
    store.read("videos"), store.keys("samples"), store.count("videos"), store.stats("samples"), store.optimize("videos")
    assert store.versions(["videos", "samples", "captions"]) == before
    assert before["captions"] is None

    store.upsert("samples", [sample(1)])
    after = store.versions(["videos", "samples"])
    assert after["videos"] == before["videos"] and after["samples"] > before["samples"]


def test_second_handle_sees_other_writers_commits(store: Store) -> None:
    other = Store.open(store.uri)
    assert other.count("videos") == 0
    store.upsert("videos", [video(0)])
    assert other.keys("videos") == {"v0"} and other.version("videos") == store.version("videos")


def test_relative_uri_is_created_under_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = Store.open("out/lance")
    store.upsert("videos", [video(0)])
    assert store.uri == str(tmp_path / "out" / "lance")
    assert (tmp_path / "out" / "lance" / "videos.lance").is_dir()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{**video(0), "widht": 3}], "no column"),
        ([{"video_id": "v0", "width": 3}], "lack required column"),
        ([video(0, path=None)], "'path' is null"),
        ([video(0), video(0, width=3)], "appears more than once"),
        ([video(0, width="wide")], "do not fit its schema"),
    ],
)
def test_rows_that_break_the_schema_are_refused(store: Store, rows: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store.upsert("videos", rows)
    assert not store.exists("videos")


def test_unknown_table_is_named_in_the_error(store: Store) -> None:
    with pytest.raises(KeyError, match="unknown table 'latent'"):
        store.read("latent")


def test_key_is_an_unenforced_primary_key_without_an_index(store: Store) -> None:
    store.upsert("videos", [video(0)])
    table = lancedb.connect(store.uri).open_table("videos")
    assert table.schema.field("video_id").metadata == {k.encode(): v.encode() for k, v in PRIMARY_KEY_METADATA.items()}
    assert not table.schema.field("video_id").nullable
    assert table.list_indices() == []


def test_optimize_compacts_only_past_the_threshold(store: Store) -> None:
    for i in range(6):
        store.upsert("samples", [sample(i)])
    assert store.stats("samples")["fragments"] == 6
    assert not store.optimize("samples", min_fragments=6)
    assert store.optimize("samples", min_fragments=5)
    stats = store.stats("samples")
    assert stats["fragments"] == 1 and stats["rows"] == 6 and stats["bytes"] > 0
    assert store.keys("samples") == {f"s{i}" for i in range(6)}


def test_table_written_before_a_new_contract_column_gains_it_as_nulls(store: Store) -> None:
    old_schema = pa.schema([f for f in SAMPLES.schema if f.name != "bucket_fp"])
    lancedb.connect(store.uri).create_table("samples", data=pa.Table.from_pylist([sample(0)], schema=old_schema))
    assert store.read("samples", ["sample_id", "bucket_fp"]).to_pylist() == [{"sample_id": "s0", "bucket_fp": None}]
    store.update("samples", [{"sample_id": "s0", "bucket_fp": "b2"}])
    assert store.column_map("samples", "bucket_fp") == {"s0": "b2"}


def run_record(store: Store, stage: str, scope: str, minute: int, error: str | None = None) -> str:
    return store.record_stage_run(
        stage, scope, fingerprint=f"fp{minute}", status="failed" if error else "completed", done=10, skipped=2,
        failed=1 if error else 0, error=error, versions={"samples": minute}, flow_run_id=None,
        started_at=T0 + timedelta(minutes=minute), finished_at=T0 + timedelta(minutes=minute, seconds=30),
    )


def test_stage_runs_keep_history_and_report_the_latest_per_scope(store: Store) -> None:
    run_record(store, "filter", "ds1", 0, error="boom in ds1")
    run_record(store, "filter", "ds1", 5)
    run_record(store, "filter", "ds2", 2, error="bad file ds2/x.mp4")
    run_record(store, "probe", "*", 1)

    latest = store.last_stage_runs()
    assert [(r["stage"], r["scope"], r["status"]) for r in latest] == [
        ("filter", "ds1", "completed"), ("filter", "ds2", "failed"), ("probe", "*", "completed")]
    assert latest[0]["versions"] == {"samples": 5} and latest[0]["finished_at"] == T0 + timedelta(minutes=5, seconds=30)
    assert store.last_error("filter") == "bad file ds2/x.mp4"
    assert store.last_error("probe") is None and store.last_error("bucket") is None
    assert len(store.stage_runs("filter")) == 3

    run_record(store, "filter", "ds2", 6)
    assert store.last_error("filter") is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"status": "running"}, "must be one of"),
        ({"status": "failed"}, "record its error"),
        ({"started_at": datetime(2025, 1, 1)}, "no time zone"),
    ],
)
def test_bad_stage_records_are_refused(store: Store, changes: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"fingerprint": "f", "status": "completed", "done": 0, "skipped": 0, "failed": 0,
                               "error": None, "versions": {}, "flow_run_id": None, "started_at": T0, "finished_at": T0}
    with pytest.raises(ValueError, match=message):
        store.record_stage_run("probe", "*", **(args | changes))  # type: ignore[arg-type]
