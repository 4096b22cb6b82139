"""`ltx2 status`: per stage (and dataset), rows done, missing, rejected and failed, and the last error.

Two views. With the config files, `stage_status` asks each stage what is missing (the cache keys hash the
config and the model). With the store alone (a machine that has no config, or a store copied from
elsewhere), `stored_status` counts what the tables hold and leaves `missing` unknown. `failures` lists
every file that did not make it, and why, in either case.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ltx2core import keys
from ltx2core.config.databackend import VideoDataset
from ltx2core.data.frames import UNUSABLE
from storage.sql import sql_eq
from storage.store import Store
from tasks import pending

UNREADABLE = f"starts_with(reason, '{UNUSABLE}')"  # the filter's rows for files the probe could not read


class _Rows(list):
    def __init__(self, store: Store) -> None:
        super().__init__()
        self.runs = {(r["stage"], r["scope"]): r for r in store.last_stage_runs()}

    def add(self, stage: str, scope: str, done: int, missing: int | None, failed: int = 0, rejected: int = 0) -> None:
        last = self.runs.get((stage, scope), {})
        finished = last.get("finished_at")
        self.append({"stage": stage, "scope": scope, "done": done, "missing": missing, "rejected": rejected,
                     "failed": failed, "last_run": f"{last['status']} {finished:%Y-%m-%d %H:%M:%S}" if finished else None,
                     "last_error": last.get("error")})


def stage_status(storage: str, datasets: list[VideoDataset], config=None) -> list[dict]:
    """One row per stage and scope; the cache stages need the model `config` (their keys hash the model).

    `rejected`: the filter's verdicts (too short, too long), which are the data working as configured;
    `failed`: files, captions or clips that could not be read. `train` and `validate` count steps and samples.
    """
    store = Store.open(storage)
    rows = _Rows(store)
    folders = keys.probe_folders(datasets)
    probe = pending.probe_work(store, folders)
    rows.add("probe", "*", probe.current, len(probe.todo), store.count("videos", where="error IS NOT NULL"))
    for d in datasets:
        where = sql_eq("dataset_id", d.id)
        f = pending.filter_work(store, d)
        rows.add("filter", d.id, len(f.wanted) - len(f.stale), len(f.stale),
                 failed=store.count("samples", f"{where} AND NOT kept AND {UNREADABLE}"),
                 rejected=store.count("samples", f"{where} AND NOT kept AND NOT {UNREADABLE}"))
        b = pending.bucket_work(store, d)
        rows.add("bucket", d.id, len(b.kept) - len(b.stale), len(b.stale) + len(b.dropped))
        c = pending.caption_work(store, d)
        no_caption = store.count("captions", where + " AND reason IS NOT NULL")
        rows.add("captions", d.id, len(c.kept) - len(c.todo) - no_caption, len(c.todo), no_caption)
    if config is None:
        return list(rows)

    source = keys.model_source(config)
    t = pending.text_embed_work(store, pending.wanted_captions(store, datasets), keys.text_model(source))
    rows.add("text-embeds", "*", len(t.wanted) - len(t.todo), len(t.todo))
    model = keys.latent_model(source, config)
    failed = store.column_map("latents", "error", where="error IS NOT NULL")
    for d in datasets:
        w = pending.latent_work(store, d, model)
        rows.add("latents", d.id, len(w.wanted) - len(w.todo), len(w.todo), sum(k in failed for k in w.wanted))
    run = keys.run_id(config)
    refs, buckets = pending.training_refs(store, config, datasets, source)
    if refs:
        total = pending.train_total(config, buckets)
        done = min(pending.train_steps_done(config), total)
        rows.add("train", run, done, total - done)  # steps
    _add_validate(rows, store, run)
    return list(rows)


def stored_status(storage: str) -> list[dict]:
    """What the tables hold, per stage and scope, without the config files: `missing` is None (unknown)."""
    store = Store.open(storage)
    rows = _Rows(store)
    if store.exists("videos"):
        rows.add("probe", "*", store.count("videos"), None, store.count("videos", where="error IS NOT NULL"))
    samples = store.read("samples", ["dataset_id", "kept", "reason", "bucket"]).to_pylist()
    for dataset in sorted({s["dataset_id"] for s in samples}):
        mine = [s for s in samples if s["dataset_id"] == dataset]
        unreadable = sum(not s["kept"] and s["reason"].startswith(UNUSABLE) for s in mine)
        rows.add("filter", dataset, len(mine), None, failed=unreadable,
                 rejected=sum(not s["kept"] for s in mine) - unreadable)
        rows.add("bucket", dataset, sum(bool(s["bucket"]) for s in mine), None)
    captions = store.read("captions", ["dataset_id", "reason"]).to_pylist()
    for dataset in sorted({c["dataset_id"] for c in captions}):
        mine = [c for c in captions if c["dataset_id"] == dataset]
        failed = sum(c["reason"] is not None for c in mine)
        rows.add("captions", dataset, len(mine) - failed, None, failed)
    if store.exists("text_embeds"):
        rows.add("text-embeds", "*", store.count("text_embeds"), None)
    if store.exists("latents"):
        rows.add("latents", "*", store.count("latents", where="error IS NULL"), None,
                 store.count("latents", where="error IS NOT NULL"))
    steps = Counter()
    for r in store.read("checkpoints", ["run_id", "step"]).to_pylist():
        steps[r["run_id"]] = max(steps[r["run_id"]], r["step"])
    for run in sorted(steps):
        rows.add("train", run, steps[run], None)
        _add_validate(rows, store, run)
    return list(rows)


def _add_validate(rows: _Rows, store: Store, run: str) -> None:
    """Samples of the run's latest checkpoint; missing 1 while that checkpoint has none (what the stage does)."""
    steps = [r["step"] for r in store.read("checkpoints", ["step"], where=sql_eq("run_id", run)).to_pylist()]
    if not steps:
        return
    sampled = store.count("validations", where=sql_eq("run_id", run) + f" AND step = {max(steps)} AND lora")
    rows.add("validate", run, sampled, 0 if sampled else 1)


def failures(storage: str) -> list[dict[str, Any]]:
    """Every file that did not make it: {stage, scope, path, kind ("failed" or "rejected"), reason}."""
    store = Store.open(storage)
    found: list[dict[str, Any]] = []

    def add(stage: str, scope: str, path: str, reason: str, kind: str = "failed") -> None:
        found.append({"stage": stage, "scope": scope, "path": path, "kind": kind, "reason": reason})

    for r in store.read("files", ["path", "error"], where="error IS NOT NULL").to_pylist():
        add("probe", "*", r["path"], r["error"])
    probed = {f["path"] for f in found}
    for r in store.read("videos", ["path", "error"], where="error IS NOT NULL").to_pylist():
        if r["path"] not in probed:
            add("probe", "*", r["path"], r["error"])
    samples = {r["sample_id"]: r for r in store.read(
        "samples", ["sample_id", "dataset_id", "path", "kept", "reason", "video_id"]).to_pylist()}
    for s in sorted(samples.values(), key=lambda s: (s["dataset_id"], s["path"])):
        if not s["kept"] and not s["reason"].startswith(UNUSABLE):  # unreadable files are the probe's, above
            add("filter", s["dataset_id"], s["path"], s["reason"], kind="rejected")
    for c in store.read("captions", ["sample_id", "dataset_id", "reason"], where="reason IS NOT NULL").to_pylist():
        add("captions", c["dataset_id"], samples.get(c["sample_id"], {}).get("path", c["sample_id"]), c["reason"])
    paths = {s["video_id"]: s["path"] for s in samples.values()}
    for r in store.read("latents", ["video_id", "error"], where="error IS NOT NULL").to_pylist():
        add("latents", "*", paths.get(r["video_id"], r["video_id"]), r["error"])
    return found
