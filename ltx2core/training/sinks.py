"""Where training metrics go. Every sink has `log(step, metrics)` and `close()`; a disabled one is a
`NullSink`, so the loop has no `if tracker:` branches.

  NullSink         drops everything
  HistorySink      keeps every row in memory and appends it to a CSV; draws the loss curve (plot.py)
  TensorBoardSink  torch.utils.tensorboard (needs the `tensorboard` package)
  progress_sink()  a rich progress bar (step, loss, s/step) on a terminal; a NullSink elsewhere
"""

from __future__ import annotations

import csv
import importlib.util
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ltx2core.training.plot import write_loss_curve

# What the loop logs; audio_weight: the audio term's weight that step; rollout_steps: the mean scheduled-sampling
# Euler steps of the step's clips.
FIELDS = ("step", "loss", "video_loss", "audio_loss", "audio_weight", "lr", "grad_norm", "s_per_step",
          "rollout_steps")


class MetricSink(Protocol):
    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class NullSink:
    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class HistorySink:
    """Rows of `FIELDS`, in memory and (with `csv_path`) on disk, one line per optimizer step.

    An existing CSV is read back first, so a resumed run's curve covers the whole run; rows at or past a
    step logged again (written after the checkpoint a crashed run resumed from) are replaced.
    """

    def __init__(self, csv_path: Path | None = None) -> None:
        self.csv_path = Path(csv_path) if csv_path else None
        self.rows: list[dict[str, float]] = []
        if self.csv_path:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        if self.csv_path and self.csv_path.is_file():
            with self.csv_path.open(newline="") as handle:
                self.rows = [
                    {k: float(v) for k, v in row.items() if k in FIELDS and v != ""} for row in csv.DictReader(handle)
                ]

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {"step": float(step), **{k: float(v) for k, v in metrics.items() if k in FIELDS and v is not None}}
        if self.rows and self.rows[-1]["step"] >= step:
            self.rows = [r for r in self.rows if r["step"] < step]
            self._rewrite()
        self.rows.append(row)
        if self.csv_path:
            new_file = not self.csv_path.is_file()
            with self.csv_path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=FIELDS)
                if new_file:
                    writer.writeheader()
                writer.writerow(_csv_row(row))

    def write_png(self, path: Path) -> Path:
        """The loss curve of every row so far (matplotlib if installed, else the built-in writer)."""
        rows = [r for r in self.rows if "loss" in r]
        parts = {f"{k.split('_')[0]} loss": [(int(r["step"]), r[k]) for r in rows if k in r]
                 for k in ("video_loss", "audio_loss")} if any("audio_loss" in r for r in rows) else None
        return write_loss_curve([int(r["step"]) for r in rows], [r["loss"] for r in rows], path, parts=parts)

    def close(self) -> None:
        pass

    def _rewrite(self) -> None:
        if not self.csv_path:
            return
        with self.csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(_csv_row(r) for r in self.rows)


class TensorBoardSink:
    """Scalars under `train/<name>` in `logdir`."""

    def __init__(self, logdir: Path) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise ImportError("report_to tensorboard needs the tensorboard package: pip install tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(logdir))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            if value is not None:
                self._writer.add_scalar(f"train/{name}", value, step)

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    """Scalars under `train/<name>` in a Weights & Biases run named after the training run; a resumed
    training continues the same wandb run. `WANDB_MODE=offline` keeps it on disk (`wandb sync` later)."""

    def __init__(self, *, project: str, run: str, directory: Path, config: Mapping[str, Any]) -> None:
        if importlib.util.find_spec("wandb") is None:
            raise ImportError("report_to wandb needs the wandb package: pip install wandb (or set report_to "
                              "tensorboard)")
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=project, name=run, id=_wandb_id(project, run), resume="allow",
                               dir=str(directory), config=dict(config))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self._run.log({f"train/{name}": value for name, value in metrics.items() if value is not None}, step=step)

    def close(self) -> None:
        self._run.finish()


def _wandb_id(project: str, run: str) -> str:
    # wandb ids allow letters, digits, '-' and '_': the same run name always maps to the same id
    import hashlib

    return "".join(c if c.isalnum() or c in "-_" else "-" for c in run)[:48] + "-" + hashlib.sha1(
        f"{project}/{run}".encode()).hexdigest()[:8]


class _ProgressSink:
    def __init__(self, total_steps: int, initial_step: int, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} s/step"),
            TimeRemainingColumn(), console=console,
        )
        self._task = self._progress.add_task("train", total=total_steps, completed=initial_step, loss="-", speed="-")
        self._progress.start()

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        loss, speed = metrics.get("loss", math.nan), metrics.get("s_per_step", math.nan)
        self._progress.update(self._task, completed=step, loss=f"{loss:.4f}", speed=f"{speed:.2f}")

    def close(self) -> None:
        self._progress.stop()


def progress_sink(total_steps: int, initial_step: int = 0, *, console: Any = None) -> MetricSink:
    """A live progress bar when `console` (default: rich's stderr console) is a terminal; else a NullSink."""
    from rich.console import Console

    console = console or Console(stderr=True)
    return _ProgressSink(total_steps, initial_step, console) if console.is_terminal else NullSink()


def _csv_row(row: Mapping[str, float]) -> dict[str, Any]:
    return {field: (int(row[field]) if field == "step" else row[field]) for field in FIELDS if field in row}
