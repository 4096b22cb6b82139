"""The four foundation stages as one Prefect flow, on real encoded clips and a real Lance database."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.pipeline import pipeline
from ltx2core.media.synth import make_bad_files
from storage.store import Store
from tests.flows.helpers import CLIPS, KEPT, make_dataset, write_configs


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("clips") / "videos")


@pytest.fixture
def work(tmp_path, clips, prefect_api):
    """A fresh copy of the clips, configs and an empty store."""
    data = shutil.copytree(clips, tmp_path / "videos")
    config, backend = write_configs(tmp_path, data)
    return {"root": tmp_path, "data": data, "config": str(config), "backend": str(backend),
            "storage": str(tmp_path / "store")}


FOUNDATION = ["probe", "filter", "bucket", "captions"]


def run(work, **kw) -> dict[tuple[str, str], dict]:
    reports = pipeline(config=work["config"], databackend=work["backend"], storage=work["storage"],
                       stages=kw.pop("stages", FOUNDATION), **kw)
    return {(r["stage"], r["scope"]): r for r in reports}


def samples(work) -> dict[str, dict]:
    rows = Store.open(work["storage"]).read("samples").to_pylist()
    return {Path(r["path"]).name: r for r in rows}


def test_four_stages_keep_reject_bucket_and_caption(work):
    reports = run(work)
    assert set(reports) == {("probe", "*"), ("filter", "clips"), ("bucket", "clips"), ("captions", "clips")}
    probe = reports[("probe", "*")]
    assert probe["counts"]["files"] == len(CLIPS) + 1 and probe["counts"]["duplicates"] == 1

    rows = samples(work)
    assert set(rows) == set(CLIPS)  # the byte-identical copy is one video, one sample
    assert {name for name, r in rows.items() if r["kept"]} == KEPT
    assert rows["fast.mp4"]["reason"] == "30 frames at 25 fps < min_frames 33"  # 60 frames at 50 fps
    assert rows["long.webm"]["reason"] == "150 frames at 25 fps > max_frames 129"
    assert rows["ntsc.mkv"]["frames_at_rate"] == 40
    assert reports[("filter", "clips")]["reasons"] == {"shorter than min_frames": 1, "longer than max_frames": 1}

    # buckets: 33 frames each, sizes from the displayed (rotated) shape, multiples of 32
    assert rows["beach.mp4"]["bucket"] == "96x64@33"
    assert rows["portrait.mov"]["bucket"] == "64x96@33"  # coded 160x96, rotated 90: displayed portrait
    assert rows["fast.mp4"]["bucket"] is None
    assert reports[("bucket", "clips")]["counts"] == {"128x64@33": 1, "64x96@33": 1, "96x64@33": 1}

    captions = {r["sample_id"]: r for r in Store.open(work["storage"]).read("captions").to_pylist()}
    assert {captions[rows[n]["sample_id"]]["caption"] for n in KEPT} == {"clip beach", "clip portrait", "clip ntsc"}


def test_rerun_does_no_work_and_writes_nothing(work):
    run(work)
    store = Store.open(work["storage"])
    before = store.versions(["files", "videos", "samples", "captions"])
    again = run(work)
    assert all(r["up_to_date"] for r in again.values()), {k: r["done"] for k, r in again.items()}
    assert store.versions(["files", "videos", "samples", "captions"]) == before


def test_touching_one_caption_reingests_exactly_that_caption(work):
    run(work)
    txt = work["data"] / "beach.txt"
    txt.write_text("a new beach caption")
    reports = run(work)
    assert reports[("captions", "clips")]["done"] == 1
    assert all(r["up_to_date"] for k, r in reports.items() if k[0] != "captions")
    sid = samples(work)["beach.mp4"]["sample_id"]
    assert Store.open(work["storage"]).column_map("captions", "caption")[sid] == "a new beach caption"


def test_changing_min_frames_recomputes_filter_and_downstream_only(work):
    run(work)
    write_configs(work["root"], work["data"], min_frames=49)
    reports = run(work)
    assert reports[("probe", "*")]["up_to_date"]
    assert reports[("filter", "clips")]["done"] == len(CLIPS)
    assert {n for n, r in samples(work).items() if r["kept"]} == {"beach.mp4"}  # 50 frames; 40 < 49 now
    assert reports[("bucket", "clips")]["done"] == 2  # the two newly rejected samples lose their bucket
    assert samples(work)["beach.mp4"]["bucket"] == "96x64@33" and samples(work)["ntsc.mkv"]["bucket"] is None
    # captions are keyed by sample: nothing new to read
    assert reports[("captions", "clips")]["up_to_date"]


def test_bad_files_get_rows_with_reasons_and_earlier_rows_stay(work):
    run(work)
    store = Store.open(work["storage"])
    good_before = sorted(store.read("videos").to_pylist(), key=lambda r: r["video_id"])
    bad = make_bad_files(work["data"])
    reports = run(work)
    videos = {Path(r["path"]).name: r for r in store.read("videos").to_pylist()}
    for kind, path in bad.items():
        assert videos[path.name]["error"], kind
    assert reports[("probe", "*")]["failed"] == len(bad)
    still = [r for r in sorted(store.read("videos").to_pylist(), key=lambda r: r["video_id"]) if not r["error"]]
    assert still == good_before
    rejected = {Path(r["path"]).name: r["reason"] for r in store.read("samples").to_pylist() if not r["kept"]}
    assert all(rejected[p.name].startswith("unusable file: ") for p in bad.values())


def test_resolution_frames_buckets_each_clip_at_its_own_length(work):
    write_configs(work["root"], work["data"], bucket_strategy="resolution_frames", frame_interval=8,
                  num_frames=None, min_frames=33)
    run(work)
    rows = samples(work)
    assert rows["beach.mp4"]["bucket"] == "96x64@49"  # 50 frames -> 49 (8k+1)
    assert rows["ntsc.mkv"]["bucket"] == "128x64@33"  # 40 frames at 25 fps -> 33


@pytest.mark.parametrize("strategy", ["filename", "instanceprompt", "jsonl", "parquet"])
def test_caption_strategies_through_the_stage(work, strategy):
    block = {"caption_strategy": strategy}
    if strategy == "instanceprompt":
        block["instance_prompt"] = "sks clip"
    if strategy in ("jsonl", "parquet"):
        names = sorted(CLIPS)
        table = work["root"] / f"captions.{strategy}"
        if strategy == "jsonl":
            table.write_text("\n".join(f'{{"filename": "{n}", "caption": "row {n}"}}' for n in names))
        else:
            pq.write_table(pa.table({"filename": names, "caption": [f"row {n}" for n in names]}), table)
        block["parquet"] = {"path": str(table)}
    write_configs(work["root"], work["data"], block=block)
    run(work)
    rows = samples(work)
    got = Store.open(work["storage"]).column_map("captions", "caption")
    expected = {"filename": "beach", "instanceprompt": "sks clip", "jsonl": "row beach.mp4",
                "parquet": "row beach.mp4"}[strategy]
    assert got[rows["beach.mp4"]["sample_id"]] == expected
