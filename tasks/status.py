"""`ltx2 status`: per stage (and dataset), rows done, rows missing, rows failed, and the last error."""

from __future__ import annotations

from ltx2core.config.databackend import VideoDataset
from storage.sql import sql_eq
from storage.store import Store
from tasks import pending


def stage_status(storage: str, datasets: list[VideoDataset], config=None) -> list[dict]:
    """One row per stage and scope; the cache stages need the model `config` (their keys hash the model)."""
    store = Store.open(storage)
    runs = {(r["stage"], r["scope"]): r for r in store.last_stage_runs()}
    rows = []

    def add(stage: str, scope: str, done: int, missing: int, failed: int) -> None:
        last = runs.get((stage, scope), {})
        finished = last.get("finished_at")
        rows.append({"stage": stage, "scope": scope, "done": done, "missing": missing, "failed": failed,
                     "last_run": f"{last['status']} {finished:%Y-%m-%d %H:%M:%S}" if finished else None,
                     "last_error": last.get("error")})

    folders = sorted({str(d.instance_data_dir) for d in datasets})
    probe = pending.probe_work(store, folders)
    add("probe", "*", probe.current, len(probe.todo), store.count("videos", where="error IS NOT NULL"))
    for d in datasets:
        where = sql_eq("dataset_id", d.id)
        f = pending.filter_work(store, d)
        add("filter", d.id, len(f.wanted) - len(f.stale), len(f.stale), store.count("samples", where + " AND NOT kept"))
        b = pending.bucket_work(store, d)
        add("bucket", d.id, len(b.kept) - len(b.stale), len(b.stale) + len(b.dropped), 0)
        c = pending.caption_work(store, d)
        no_caption = store.count("captions", where + " AND reason IS NOT NULL")
        add("captions", d.id, len(c.kept) - len(c.todo) - no_caption, len(c.todo), no_caption)
    if config is None:
        return rows
    from ltx2core.models.source import resolve_source

    source = resolve_source(config.pretrained_model_name_or_path, config.model_flavour)
    t = pending.text_embed_work(store, pending.wanted_captions(store, datasets), pending.text_model(source))
    add("text-embeds", "*", len(t.wanted) - len(t.todo), len(t.todo), 0)
    model = pending.latent_model(source, pending.vae_options(config))
    failed = store.column_map("latents", "error", where="error IS NOT NULL")
    for d in datasets:
        w = pending.latent_work(store, d, model)
        add("latents", d.id, len(w.wanted) - len(w.todo), len(w.todo), sum(k in failed for k in w.wanted))
    refs, buckets = pending.training_refs(store, config, datasets, source)
    if refs:
        from ltx2core.training.data import BucketBatches

        total = pending.max_steps(config, BucketBatches(buckets, batch_size=config.train_batch_size,
                                                        seed=config.seed or 0))
        done = min(pending.train_steps_done(config), total)
        add("train", pending.run_id(config), done, total - done, 0)  # steps
    return rows
