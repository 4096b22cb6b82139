"""The `ltx2-pipeline` flow: the stages in order, each skipping what its tables already hold."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.cluster import cluster_access, shards_on
from flows.stages import READS_SOURCE_FILES, Stage, selected
from ltx2core.config.load import load_project
from ltx2core.config.overrides import Overrides
from ltx2core.keys import probe_folders, run_id
from ltx2core.training.output_lock import output_lock
from storage.lease import Holder, writer_lease
from storage.location import NO_CREDENTIALS_PATTERN
from storage.store import Store
from tasks import bucket, captions, latents, probe, text_embeds, train, validate
from tasks import filter as filter_
from tasks.artifacts import storage_summary
from tasks.report import StageReport
from tasks.shards import Spread
from tasks.stage_runs import flow_run_id, tracked

DEFAULT_STORAGE = "ltx2-store"
OUTPUT_STAGES = {"train", "validate"}  # the stages that write output_dir


@flow(name="ltx2-pipeline", validate_parameters=True)
def pipeline(
    config: str = "config/config.json",
    databackend: str | None = None,
    storage: Annotated[str, Field(json_schema_extra={"pattern": NO_CREDENTIALS_PATTERN})] = DEFAULT_STORAGE,
    stages: list[Stage] | None = None,
    force: list[Stage] | None = None,
    checkpoint: int | None = None,
    overrides: Overrides = Overrides(),  # noqa: B008 (a frozen default: Prefect renders it as the form's fields)
    dask_address: str | None = None,
    dask_certs: str | None = None,
    dask_insecure_plaintext: bool = False,
) -> list[dict]:
    """Run the chosen stages in order; each skips the rows its tables already hold.

    Args:
        config: Path of the SimpleTuner-style config.json.
        databackend: Path of multidatabackend.json (the datasets); empty for the config's data_backend_config.
        storage: The LanceDB store: a folder, or s3://bucket/prefix (credentials in AWS_* variables, never here).
        stages: Stages to run, in pipeline order; empty for all.
        force: Stages to redo even where their rows are current.
        checkpoint: The training step the validate stage samples; empty for the run's latest.
        overrides: Replace the config files' resolution, frames, steps, rank or learning rate for this run.
        dask_address: tls://host:port of a Dask scheduler (tcp:// on this machine): the shards of probe,
            text-embeds and latents run on its workers (flows/cluster.py); empty to run them here.
        dask_certs: For tls://, the folder `ltx2 cluster-certs` wrote (on the machine that runs this flow).
        dask_insecure_plaintext: Allow plain tcp:// to a scheduler on another machine: whoever reaches its port
            can run code on the workers. Only on a network no one else reaches.
    """
    log = get_run_logger()
    if dask_address:  # refused before any work: a deployment run brings its address as a parameter
        cluster_access(dask_address, dask_certs, dask_insecure_plaintext)
    todo = selected(stages or [])
    project = load_project(config, databackend, check_paths=bool(READS_SOURCE_FILES & set(todo)),
                           overrides=overrides)
    for w in project.warnings:
        log.warning(w)
    if not overrides.is_empty():
        log.info("overrides for this run: %s", overrides.describe())
    datasets = project.datasets
    videos = [d for d in datasets if getattr(d, "dataset_type", None) == "video" and not d.disabled]
    store_uri = storage if "://" in storage else str(Path(storage).absolute())
    store = Store.open(store_uri)  # fail early on a bad URI, before any work
    force = set(force or [])
    reports: list[StageReport] = []
    with _exclusive(store, project.config, todo), shards_on(dask_address, store_uri, dask_certs,
                                                                 dask_insecure_plaintext) as fanout:
        for stage in todo:
            with fanout.stage(stage) as spread:
                for scope, inputs, work in _units(stage, store_uri, project.config, videos, checkpoint,
                                                  stage in force, spread):
                    reports.append(tracked(store_uri, stage, scope, inputs, work))
    storage_summary(Store.open(store_uri), store_uri)
    log.info("results in %s", store_uri)
    return [r.as_dict() for r in reports]


@contextmanager
def _exclusive(store: Store, config, todo: list[str]) -> Iterator[None]:
    """This run alone writes the store (a lease row in it), and the output_dir when it trains or validates
    (a lock file there); another live run holding either is named in the refusal."""
    holder = Holder.this_process(flow_run_id())
    with writer_lease(store, holder):
        if not OUTPUT_STAGES & set(todo):
            yield
            return
        run = f"flow run {holder.flow_run_id}" if holder.flow_run_id else "a run outside Prefect"
        since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        with output_lock(Path(config.output_dir), f"{run}, pid {holder.pid} on {holder.host}, since {since}"):
            yield


def _units(stage: str, store_uri: str, config, videos: list, checkpoint: int | None, redo: bool,
           spread: Spread) -> Iterator[tuple[str, dict, Callable[[], StageReport]]]:
    """A stage's units of work: (scope, inputs recorded in `stage_runs`, the call). Per dataset, or one.
    `spread`: how the cache stages cut their work into shard tasks and where each goes (flows/cluster.py)."""
    if stage == "probe":
        folders = probe_folders(videos)
        yield "*", {"folders": folders}, partial(probe.run, store_uri, folders, force=redo, spread=spread)
    elif stage == "text-embeds":
        yield "*", {"datasets": [d.id for d in videos]}, partial(
            text_embeds.cache_text_embeds, store_uri, config, videos, force=redo, spread=spread)
    elif stage == "train":
        yield run_id(config), {"config": config.model_dump(mode="json")}, partial(
            train.train_lora, store_uri, config, videos, force=redo)
    elif stage == "validate":
        yield run_id(config), {"checkpoint": checkpoint}, partial(
            validate.validate, store_uri, config, videos, checkpoint, force=redo)
    else:
        for d in videos:
            inputs = {"dataset": d.model_dump(mode="json")}
            if stage == "latents":
                yield d.id, inputs, partial(latents.run, store_uri, config, d, force=redo, spread=spread)
            else:
                yield d.id, inputs, partial(PER_DATASET[stage], store_uri, d, force=redo)


PER_DATASET = {"filter": filter_.filter_dataset, "bucket": bucket.bucket_dataset, "captions": captions.ingest_captions}
