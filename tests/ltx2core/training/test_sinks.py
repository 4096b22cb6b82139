"""Metric sinks: the CSV history and its loss curve, the progress bar, TensorBoard when installed."""

from __future__ import annotations

import csv
import io
import math
import re
import time
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from ltx2core.training.plot import HEIGHT, WIDTH, write_loss_curve
from ltx2core.training.sinks import HistorySink, NullSink, TensorBoardSink, WandbSink, progress_sink

STEPS = 50


def _losses() -> list[float]:
    return [2.0 * math.exp(-step / 15) + 0.1 * math.sin(step) + 0.5 for step in range(1, STEPS + 1)]


def test_history_is_kept_in_memory_and_csv_and_drawn(tmp_path: Path) -> None:
    sink = HistorySink(tmp_path / "run" / "history.csv")
    for step, loss in enumerate(_losses(), start=1):
        sink.log(step, {"loss": loss, "lr": 1e-4, "audio_loss": None, "unknown": 3.0})
    with (tmp_path / "run" / "history.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(sink.rows) == STEPS
    assert rows[-1]["step"] == str(STEPS) and float(rows[-1]["loss"]) == pytest.approx(_losses()[-1])
    assert rows[0]["audio_loss"] == "" and "unknown" not in rows[0]

    image = Image.open(sink.write_png(tmp_path / "loss.png"))
    assert image.size == (WIDTH, HEIGHT)
    colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=WIDTH * HEIGHT)}
    assert len(colours) > 2  # background, frame and the curves


def test_a_resumed_history_replaces_the_steps_logged_again(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    first = HistorySink(path)
    for step in range(1, 6):
        first.log(step, {"loss": float(step)})
    resumed = HistorySink(path)  # a new process resuming from the checkpoint at step 3
    for step in range(4, 8):
        resumed.log(step, {"loss": 10.0 * step})
    expected = [1.0, 2.0, 3.0, 40.0, 50.0, 60.0, 70.0]
    assert [row["loss"] for row in resumed.rows] == expected
    assert [row["loss"] for row in HistorySink(path).rows] == expected  # the file says the same


def test_loss_curve_skips_non_finite_values_and_refuses_an_empty_one(tmp_path: Path) -> None:
    path = write_loss_curve([1, 2, 3], [1.0, math.nan, 0.5], tmp_path / "curve.png")
    assert Image.open(path).size == (WIDTH, HEIGHT)
    with pytest.raises(ValueError, match="no finite"):
        write_loss_curve([1], [math.inf], tmp_path / "empty.png")


def test_progress_bar_only_on_a_terminal() -> None:
    assert isinstance(progress_sink(10, console=Console(file=io.StringIO())), NullSink)
    output = io.StringIO()
    bar = progress_sink(10, 2, console=Console(file=output, force_terminal=True, width=120))
    bar.log(3, {"loss": 0.1234, "s_per_step": 1.5})
    bar.close()
    assert "0.1234" in output.getvalue() and "1.50 s/step" in output.getvalue()


def test_tensorboard_sink_writes_event_files(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    sink = TensorBoardSink(tmp_path)
    sink.log(1, {"loss": 1.0, "audio_loss": None})
    sink.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_wandb_sink_logs_the_metrics_offline_and_resumes_the_same_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")  # no account, no network: the run is written to disk
    monkeypatch.setenv("WANDB_SILENT", "true")
    for step in (1, 2):  # a training run, then its resume
        sink = WandbSink(project="ltx2-test", run="demo", directory=tmp_path, config={"lora_rank": 4})
        sink.log(step, {"loss": 1.0 / step, "audio_loss": None})
        sink.close()
    # one wandb id for both: a folder is offline-run-<second>-<id>, and wandb adds -1 to the second run's folder
    # when both started within one second
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({re.sub(r"-\d{1,3}$", "", r.name.split("-", 3)[3]) for r in runs}) == 1
    # the run file is wandb's protobuf log (a history record holds each key and its value as JSON text),
    # written by wandb's service process, which may still be flushing it when finish() returns
    records, deadline = b"", time.monotonic() + 30
    while b"train/loss" not in records and time.monotonic() < deadline:
        time.sleep(0.2)
        records = next(runs[-1].glob("run-*.wandb")).read_bytes()
    assert b"train/loss" in records and b"0.5" in records and b"train/audio_loss" not in records
