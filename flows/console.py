"""What `ltx2` prints: progress bars while stages run, then a summary; the status table."""

from __future__ import annotations

import sys
import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
if not console.is_terminal:  # logs and CI: keep tables on one line per row
    console.width = 160


class RichSink:
    """A progress bar per stage (and dataset); thread-safe, since shards report from worker threads."""

    def __init__(self) -> None:
        self._progress = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("{task.fields[note]}"), console=console,
                                  transient=False)
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichSink:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def start(self, stage: str, total: int) -> None:
        with self._lock:
            self._ids[stage] = self._progress.add_task(stage, total=max(total, 1), completed=0 if total else 1,
                                                       note="")

    def advance(self, stage: str, n: int = 1, note: str | None = None) -> None:
        self._progress.advance(self._ids[stage], n)
        if note is not None:
            self._progress.update(self._ids[stage], note=note)

    def finish(self, stage: str, note: str) -> None:
        task_id = self._ids[stage]
        self._progress.update(task_id, completed=self._progress.tasks[task_id].total, note=note)


def _figures(r: dict) -> str:
    counts, reasons = r["counts"], ", ".join(f"{k}: {v}" for k, v in r["reasons"].items())
    match r["stage"]:
        case "probe":
            text = (f"{counts['files']} files, {counts['videos']} videos, {counts['duplicates']} duplicates, "
                    f"{r['failed']} unusable")
        case "filter":
            text = f"{counts['kept']} kept, {r['failed']} rejected"
        case "bucket":
            text = "clips per bucket: " + ", ".join(f"{b}: {n}" for b, n in counts.items())
        case "captions":
            text = f"{counts['captioned']} captioned, {r['failed']} without caption"
        case "text-embeds":
            text = f"{counts['captions']} distinct captions, {counts['bytes'] / 2**20:.1f} MiB stored"
        case "train":
            text = f"at step {counts.get('step', r['skipped'])}" + (
                f" ({counts['samples']} samples, {counts['buckets']} buckets)" if "samples" in counts else "")
        case "validate":
            text = (f"{counts['samples']} samples of step {counts['step']}" if "samples" in counts
                    else f"{r['skipped']} samples already" if r["skipped"] else "nothing configured to validate")
        case "latents":
            text = f"{counts['clips']} clips, {r['failed']} failed, {counts['table_bytes'] / 2**20:.1f} MiB stored"
        case _:
            text = ", ".join(f"{k}: {v}" for k, v in counts.items())
    return f"{text} ({reasons})" if reasons else text


def print_summary(reports: list[dict], storage: str) -> None:
    """One line per stage and dataset: what it did this run, then what the tables hold."""
    for r in reports:
        did = "[green]up to date[/green]" if r["up_to_date"] else f"[yellow]{r['done']} done[/yellow]"
        console.print(f"[bold]{r['stage']:<11}[/bold] {r['scope']:<14} {did:<28} {_figures(r)}", soft_wrap=True)
    console.print(f"results in [bold]{storage}[/bold]; inspect with: ltx2 status --storage {storage}", soft_wrap=True)


def print_status(rows: list[dict], storage: str, title: str = "ltx2 status") -> None:
    """`missing` None (the store-only view) prints as `?`; rejected = the filter's verdicts, failed = unreadable."""
    table = Table(title=f"{title}: {storage}")
    for col in ("stage", "scope", "done", "missing", "rejected", "failed", "last run", "last error"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["stage"], r["scope"], str(r["done"]), "?" if r["missing"] is None else str(r["missing"]),
                      str(r["rejected"]), str(r["failed"]), r["last_run"] or "-", r["last_error"] or "")
    console.print(table)


def print_failures(rows: list[dict]) -> None:
    if not rows:
        console.print("no failed or rejected files")
        return
    table = Table(title="files that did not make it")
    for col in ("stage", "scope", "kind", "path", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["stage"], r["scope"], r["kind"], r["path"], r["reason"] or "")
    console.print(table)


def print_rehearsal(rehearsal) -> None:
    """`ltx2 rehearse`'s table: per stage, items, the stage's seconds and its flow call's (the difference is Prefect's
    and the run's bookkeeping), the part of the stage's spent loading models, s/item (and past the load: what each
    further item costs) and the peaks; then the train stage's advice."""
    shapes = ", ".join(f"{d} at {s}" for d, s in rehearsal.shapes.items())
    card = f", {rehearsal.card_gib:.0f} GiB in force" if rehearsal.card_gib else ""
    table = Table(title=f"ltx2 rehearse: {rehearsal.model} on {rehearsal.device}{card}; dataset {shapes}")
    for column in ("stage", "items", "stage s", "flow s", "load s", "s/item", "GPU peak GiB", "host peak GiB",
                   "outcome"):
        table.add_column(column, justify="left" if column in ("stage", "outcome") else "right")
    for f in rehearsal.stages:
        table.add_row(f.stage, f"{f.items} {f.unit}s", f"{f.stage_seconds:.1f}", f"{f.seconds:.1f}",
                      f"{f.load_seconds:.1f}" if f.load_seconds else "-", _rates(f), _gib(f.gpu_peak_gib),
                      _gib(f.host_peak_gib), f.error or f.note or "ok")
    console.print(table)
    for sentence in rehearsal.advice:
        console.print(sentence)


def print_stage_figures(f) -> None:
    """One line as each rehearsed stage ends (stderr, unbuffered): a rehearsal stopped midway still told its
    figures, and a user watching sees where the minutes go."""
    per = "" if f.rate() is None else f", {_rates(f)}"
    print(f"ltx2 rehearse: {f.stage}: {f.items} {f.unit}s in {f.stage_seconds:.1f} s (flow {f.seconds:.1f} s){per}, "
          f"GPU peak {_gib(f.gpu_peak_gib)} GiB, host peak {_gib(f.host_peak_gib)} GiB: {f.error or f.note or 'ok'}",
          file=sys.stderr, flush=True)


def _rates(f) -> str:
    """"0.420 s/caption (0.015 loaded)": the stage's s/item, and past its models' load where it loads any."""
    rate, loaded = f.rate(), f.rate_past_load()
    if rate is None:
        return "-"
    return f"{rate:.3f} s/{f.unit}" + ("" if loaded is None else f" ({loaded:.3f} loaded)")


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
