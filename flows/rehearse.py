"""`ltx2 rehearse`: the configured stages on this machine, with random weights of the configured flavour and
synthetic clips at the datasets' sizes, measured stage by stage; and, when training does not fit the card, the
options that would make it fit, measured too (ltx2core/rehearsal.py says what is changed and tried).

Each stage runs as `ltx2 run` runs it -- the `ltx2-pipeline` flow, Prefect and Lance included -- one flow call per
stage, so that its seconds and peaks are its own. Nothing of the user's is touched: the clips, the store and the
outputs are in the rehearsal's own folder.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ltx2core.config.load import databackend_of, load_project
from ltx2core.measure import GIB, measured
from ltx2core.media.synth import write_distinct_clips
from ltx2core.rehearsal import (
    FIT_TRIES,
    ClipShape,
    FitTry,
    StageFigures,
    advice,
    caption,
    clip_shape,
    fit_tries,
    median_step_seconds,
    write_rehearsal_configs,
)

CACHE_STAGES = ("text-embeds", "latents")  # their rows can come from a bigger card (cache on A, train on B)
UNITS = {"probe": "file", "filter": "clip", "bucket": "clip", "captions": "caption", "text-embeds": "caption",
         "latents": "clip", "train": "step", "validate": "sample"}


@dataclass
class Rehearsal:
    model: str  # the random model's label
    device: str
    card_gib: float | None
    shapes: dict[str, str]  # dataset id -> synthetic clip shape
    stages: list[StageFigures]
    advice: list[str]  # per stage that has options to fit (latents, train), when it ran

    def as_dict(self) -> dict:
        return asdict(self)


def rehearse(config: str, databackend: str | None, work: Path, *, stages: list[str], clips: int, steps: int,
             model: str = "random", aspect: float = 1.5, card_gib: float | None = None,
             storage: str | None = None, on_stage: Callable[[StageFigures], None] | None = None) -> Rehearsal:
    from flows.ephemeral import prefect_api
    from ltx2core.models.source import resolve_source

    project = load_project(config, databackend, check_paths=False)
    backend = json.loads(Path(databackend or databackend_of(config)).read_text())
    videos = [d for d in project.datasets if getattr(d, "dataset_type", None) == "video" and not d.disabled]
    shapes = {d.id: clip_shape(d, aspect) for d in videos}
    folders = {d: write_clips(work / "clips" / d, shape, clips) for d, shape in shapes.items()}
    store = storage or str(work / "store")
    files = write_rehearsal_configs(Path(config), backend, work, model=model, steps=steps, clip_folders=folders)
    device, in_force = _limit_card(card_gib)
    capped = card_gib is not None and device != "cpu"  # the user's cap, not the whole card's size
    figures: list[StageFigures] = []
    with prefect_api():
        for stage in stages:
            # forced: a rehearsed stage does all its work even where a kept folder or store holds its rows from an
            # earlier rehearsal (else its figures would be a resume's); the stages left out are reused
            figures.append(_run_stage(stage, files, store, work / "output", force=True))
            if _out_of_memory(figures[-1]) and stage in FIT_TRIES:
                figures[-1].tries = _fit(stage, project.config, Path(config), backend, work, model, steps, folders,
                                         store)
            if (_out_of_memory(figures[-1]) and stage in CACHE_STAGES and capped
                    and figures[-1].fitting_try() is None):
                figures[-1] = _uncapped(stage, files, store, work / "output", card_gib, figures[-1].tries)
            if on_stage is not None:
                on_stage(figures[-1])
            if figures[-1].error and figures[-1].fitting_try() is None:
                break  # the later stages need this one's rows
    source = resolve_source(model, project.config.model_flavour)
    return Rehearsal(source.label, device, in_force, {d: s.describe() for d, s in shapes.items()}, figures,
                     [advice(f, in_force) for f in figures if f.stage in FIT_TRIES])


def write_clips(folder: Path, shape: ClipShape, count: int) -> Path:
    """`count` clips of `shape` in `folder`, each with a .txt caption (`caption`); those already there are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip_{i:04d}.mp4" for i in range(count)]
    # each clip counts (no two alike in bytes) and costs at most 16 encodes: 256 full-size clips in seconds
    write_distinct_clips([p for p in paths if not p.exists()], width=shape.width, height=shape.height,
                         num_frames=shape.frames, fps=round(shape.fps), audio_rate=shape.audio_rate)
    for i, path in enumerate(paths):
        if not path.with_suffix(".txt").exists():
            path.with_suffix(".txt").write_text(caption(i), encoding="utf-8")
    return folder


def _limit_card(card_gib: float | None) -> tuple[str, float | None]:
    """This machine's GPU, capped at `card_gib` (the caching allocator refuses more: out of memory as on that
    card); (its name, the GiB in force). No GPU: ("cpu", None)."""
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    total = torch.cuda.get_device_properties(0).total_memory
    if card_gib:
        torch.cuda.set_per_process_memory_fraction(min(1.0, card_gib * GIB / total))
    return torch.cuda.get_device_name(0), card_gib or total / GIB


def _run_stage(stage: str, files: tuple[Path, Path], store: str, output_dir: Path, *,
               force: bool = False) -> StageFigures:
    from flows.pipeline import pipeline
    from ltx2core.models.placement import release_memory
    from tasks.failures import explain

    figures = StageFigures(stage, unit=UNITS[stage])
    with measured() as m:
        try:
            reports = pipeline(config=str(files[0]), databackend=str(files[1]), storage=store, stages=[stage],
                               force=[stage] if force else None)
            figures.items = sum(r["done"] for r in reports)
            figures.stage_seconds = sum(r["seconds"] for r in reports)
            figures.load_seconds = sum(r["load_seconds"] for r in reports)
        except Exception as error:  # noqa: BLE001 - measured and reported; the next stages need this one
            figures.error = explain(error).cause
            traceback.clear_frames(error.__traceback__)  # its frames hold the model: free the GPU for the next try
            del error
            release_memory()
    figures.seconds, figures.gpu_peak_gib, figures.host_peak_gib = m.seconds, m.gpu_peak_gib, m.host_peak_gib
    if stage == "train" and figures.error is None:
        figures.per_item_s = median_step_seconds(output_dir / "loss.csv")
    return figures


def _uncapped(stage: str, files: tuple[Path, Path], store: str, output_dir: Path, card_gib: float,
              tries: list[dict]) -> StageFigures:
    """A cache stage that does not fit the card asked for, run again on the whole GPU so that the rehearsal goes on
    (its rows can be cached on a larger card: README "Cache on one machine, train on another")."""
    import torch

    torch.cuda.set_per_process_memory_fraction(1.0)
    try:
        figures = _run_stage(stage, files, store, output_dir, force=True)
    finally:
        _limit_card(card_gib)
    figures.note = (f"out of memory at {card_gib:.0f} GiB: these figures are without the cap; cache this stage on a "
                    "larger card")
    figures.error, figures.tries = f"out of memory at {card_gib:.0f} GiB", tries
    return figures


def _out_of_memory(figures: StageFigures) -> bool:
    return (figures.error or "").startswith("the GPU ran out of memory")


def _fit(stage: str, config, config_path: Path, backend: list, work: Path, model: str, steps: int,
         folders: dict[str, Path], store: str) -> list[dict]:
    """The stage's `fit_tries` measured in order until one fits, each in its own folder; a train try with a changed
    resolution buckets and caches its latents first, and is measured by its train stage."""
    measured_tries = []
    for i, change in enumerate(fit_tries(stage, config), start=1):
        folder = work / f"{stage}-try-{i}"
        folder.mkdir(exist_ok=True)
        files = write_rehearsal_configs(config_path, backend, folder, model=model, steps=steps, clip_folders=folders,
                                        change=change)
        for step in ("bucket", "latents", stage) if change.resolution_scale != 1.0 else (stage,):
            figures = _run_stage(step, files, store, folder / "output", force=step == stage)
            if figures.error:
                break
        measured_tries.append(_try_row(change, figures))
        if figures.error is None:
            break
    return measured_tries


def _try_row(change: FitTry, figures: StageFigures) -> dict:
    return {"label": change.label, "error": figures.error, "s_per_step": figures.per_item_s,
            "gpu_peak_gib": figures.gpu_peak_gib, "host_peak_gib": figures.host_peak_gib}


