"""Stage `train`: a LoRA trained from the cached latents and caption embeddings.

Recipe: every kept sample whose latents and caption embedding are cached -> buckets of sample ids (with
repeats) -> load the transformer and connectors once -> add the LoRA -> train (ltx2core.training.loop),
resuming from the run's latest checkpoint -> each checkpoint's LoRA into `checkpoints` -> final LoRA files
(diffusers and ComfyUI formats), loss curve, TensorBoard logs. tasks/train_ranks.py builds and runs it.

Several GPUs (`num_processes` above 1; null = every visible GPU): the task launches torchrun with one process
per GPU, each running tasks/train_ranks.py, in this task's process group, so cancelling the flow run (which
signals that group) stops every rank. The ranks' output becomes this task's log lines and rank 0's step lines
its progress; when a rank fails, the task fails with that rank's error.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ltx2core.config.databackend import VideoDataset
from ltx2core.config.train import TrainConfig
from ltx2core.keys import run_id
from ltx2core.models.runtime import pick_device
from ltx2core.process import die_with_parent
from ltx2core.training.distributed import SINGLE, process_count
from tasks.artifacts import artifact_key
from tasks.progress import sink
from tasks.report import StageReport, reporting
from tasks.train_ranks import STEP_LINE, RunSummary, plan_run, run_training

STOP_GRACE_S = 30  # after SIGTERM, torchrun and its ranks get this long before SIGKILL


class StageProgress:
    """Steps into the stage's progress bar (the CLI's), with the loss and speed."""

    def __init__(self, bar: str) -> None:
        self.bar = bar

    def log(self, step: int, metrics) -> None:
        sink().advance(self.bar, 1, note=_note(step, metrics))

    def close(self) -> None:
        pass


@task(name="train", cache_policy=NO_CACHE)
def train_lora(store_uri: str, config: TrainConfig, datasets: list[VideoDataset], force: bool = False) -> StageReport:
    log = get_run_logger()
    run = run_id(config)
    bar = f"train {run}"
    with reporting(store_uri, "train", run, tables=["checkpoints"], verb="steps") as (store, report):
        plan = plan_run(store, config, datasets, force=force)
        output_dir = Path(config.output_dir)
        report.skipped = plan.done
        sink().start(bar, plan.total - plan.done)
        if plan.done >= plan.total:
            log.info("train %s: up to date (step %d of %d in %s)", run, plan.done, plan.total, output_dir)
            return report

        device = pick_device()
        processes = process_count(config.num_processes, device)
        if processes > 1:
            summary = _train_on_ranks(store_uri, config, datasets, force, processes, bar, log)
        else:
            summary = run_training(store, config, datasets, plan, world=SINGLE, device=device,
                                   progress=StageProgress(bar), log=log)
        report.done = summary.steps_run
        report.counts = {"step": summary.step, "samples": len(plan.refs), "buckets": len(plan.buckets)}
        report.note = f"step {summary.step}  loss {summary.last.get('loss', float('nan')):.4f}"
        _artifact(run, summary, plan.source.label, output_dir, output_dir / "loss.png")
        log.info("train %s: %d steps to step %d; LoRA in %s", run, summary.steps_run, summary.step, output_dir)
    return report


def _train_on_ranks(store_uri: str, config: TrainConfig, datasets: list[VideoDataset], force: bool, processes: int,
                    bar: str, log) -> RunSummary:
    """torchrun with `processes` ranks of tasks.train_ranks (module docstring); returns rank 0's summary."""
    with tempfile.TemporaryDirectory(prefix="ltx2-train-") as folder:
        job, result, failures = Path(folder) / "job.json", Path(folder) / "result.json", Path(folder) / "failures"
        failures.mkdir()
        job.write_text(json.dumps({
            "store_uri": store_uri, "config": config.model_dump(mode="json"),
            "datasets": [d.model_dump(mode="json") for d in datasets], "force": force,
            "result": str(result), "failures": str(failures),
        }))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "tasks.train_ranks", str(job)]
        log.info("train: launching %d ranks: %s", processes, " ".join(command))
        # Started in this process's group (no new session): a flow-run cancel signals the whole group; and told
        # to end with this process, should it be killed outright (torchrun then stops its ranks).
        ranks = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, bufsize=1, preexec_fn=die_with_parent)
        try:
            for line in ranks.stdout:
                _relay(line.rstrip("\n"), bar, log)
            code = ranks.wait()
        except BaseException:  # this task is being stopped (timeout, signal): stop torchrun, which stops its ranks
            ranks.terminate()
            try:
                ranks.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                ranks.kill()
            raise
        if code != 0:
            raise RuntimeError(_failure(failures, code))
        return RunSummary(**json.loads(result.read_text()))


def _relay(line: str, bar: str, log) -> None:
    """A line of the ranks' output: rank 0's step lines advance the progress bar, the rest are logged."""
    if line.startswith(STEP_LINE):
        fields = json.loads(line.removeprefix(STEP_LINE))
        sink().advance(bar, 1, note=_note(fields["step"], fields))
    elif line.strip():
        log.info(line)


def _failure(failures: Path, code: int) -> str:
    """The first rank's error (the ranks stopped because of it may fail later), else torchrun's exit code."""
    errors = sorted((json.loads(f.read_text()) for f in failures.glob("rank*.json")), key=lambda e: e["time"])
    if not errors:
        return f"training failed: torchrun exited with {code} (its output is in the log lines above)"
    return f"training failed on rank {errors[0]['rank']}: {errors[0]['error']}"


def _note(step: int, metrics) -> str:
    return f"step {step}  loss {metrics['loss']:.4f}  {metrics['s_per_step']:.2f} s/step"


def _losses(summary: RunSummary) -> str:
    """The last step's losses per modality with the audio weight used, and the run's warnings, as markdown."""
    last, text = summary.last, ""
    if "audio_loss" in last:
        text += (f"\nLast step: video loss {last['video_loss']:.4f}, audio loss {last['audio_loss']:.4f}, audio weight "
                 f"{last.get('audio_weight', 1.0):.3g} (loss = video + weight x audio)\n")
    return text + "".join(f"\n**Warning:** {w}\n" for w in summary.warnings)


def _artifact(run: str, summary: RunSummary, label: str, output_dir: Path, curve: Path) -> None:
    """The loss curve and the LoRA's whereabouts in the Prefect UI."""
    png = base64.b64encode(curve.read_bytes()).decode()
    create_markdown_artifact(
        key=artifact_key("train", run),
        markdown=(f"# Training run `{run}`\n\nModel: {label}\n\nStep {summary.step} "
                  f"(this run: {summary.steps_run}); last loss {summary.last.get('loss', float('nan')):.4f}\n\n"
                  f"![loss curve](data:image/png;base64,{png})\n\nLoRA: `{output_dir}/pytorch_lora_weights.safetensors` "
                  f"(ComfyUI: `lora_comfyui.safetensors`)\n" + _losses(summary)),
        description=f"LoRA training {run}")
