"""The `ltx2-pipeline` flow: the stages in order, each skipping what its tables already hold."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.stages import READS_SOURCE_FILES, Stage, selected
from ltx2core.config.load import load_project
from storage.store import Store
from tasks import bucket, captions, latents, probe, text_embeds, train, validate
from tasks import filter as filter_
from tasks.pending import run_id
from tasks.report import StageReport
from tasks.stage_runs import tracked

DEFAULT_STORAGE = "ltx2-store"


@flow(name="ltx2-pipeline", validate_parameters=True)
def pipeline(
    config: str = "config/config.json",
    databackend: str = "config/multidatabackend.json",
    storage: str = DEFAULT_STORAGE,
    stages: list[Stage] | None = None,
    force: list[Stage] | None = None,
    checkpoint: int | None = None,
) -> list[dict]:
    """Run the chosen stages (all when none are given); `force` redoes a stage even where rows are current;
    `checkpoint` is the step the validate stage samples (default: the run's latest)."""
    log = get_run_logger()
    todo = selected(stages or [])
    project = load_project(config, databackend, check_paths=bool(READS_SOURCE_FILES & set(todo)))
    for w in project.warnings:
        log.warning(w)
    datasets = project.datasets
    videos = [d for d in datasets if getattr(d, "dataset_type", None) == "video" and not d.disabled]
    store_uri = storage if "://" in storage else str(Path(storage).absolute())
    Store.open(store_uri)  # fail early on a bad URI, before any work
    force = set(force or [])
    reports: list[StageReport] = []

    for stage in todo:
        redo = stage in force
        if stage == "probe":
            folders = sorted({str(d.instance_data_dir) for d in videos})
            reports.append(tracked(store_uri, "probe", "*", {"folders": folders},
                                   lambda: probe.run(store_uri, folders, force=redo)))
            continue
        if stage == "text-embeds":
            reports.append(tracked(store_uri, stage, "*", {"datasets": [d.id for d in videos]},
                                   lambda: text_embeds.cache_text_embeds(store_uri, project.config, videos, force=redo)))
            continue
        if stage == "train":
            reports.append(tracked(store_uri, stage, run_id(project.config), {"config": project.config.model_dump(
                mode="json")}, lambda: train.train_lora(store_uri, project.config, videos, force=redo)))
            continue
        if stage == "validate":
            reports.append(tracked(store_uri, stage, run_id(project.config), {"checkpoint": checkpoint},
                                   lambda: validate.validate(store_uri, project.config, videos, checkpoint, force=redo)))
            continue
        if stage == "latents":
            for d in videos:
                reports.append(tracked(store_uri, stage, d.id, {"dataset": d.model_dump(mode="json")},
                                       lambda d=d: latents.run(store_uri, project.config, d, force=redo)))
            continue
        step = {"filter": filter_.filter_dataset, "bucket": bucket.bucket_dataset,
                "captions": captions.ingest_captions}[stage]
        for d in videos:
            reports.append(tracked(store_uri, stage, d.id, {"dataset": d.model_dump(mode="json")},
                                   lambda d=d, step=step: step(store_uri, d, force=redo)))
    log.info("results in %s", store_uri)
    return [r.as_dict() for r in reports]
