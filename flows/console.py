"""What `ltx2` prints: progress bars while stages run, then a summary; the status table."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


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

    def advance(self, stage: str, n: int = 1) -> None:
        self._progress.advance(self._ids[stage], n)

    def finish(self, stage: str, note: str) -> None:
        task_id = self._ids[stage]
        self._progress.update(task_id, completed=self._progress.tasks[task_id].total, note=note)


def print_summary(reports: list[dict], storage: str) -> None:
    table = Table(title="ltx2 run", show_lines=False)
    for col in ("stage", "scope", "done", "current", "rejected / failed", "figures"):
        table.add_column(col)
    for r in reports:
        reasons = ", ".join(f"{k}: {v}" for k, v in r["reasons"].items())
        figures = ", ".join(f"{k}: {v}" for k, v in r["counts"].items())
        state = "up to date" if r["up_to_date"] else str(r["done"])
        table.add_row(r["stage"], r["scope"], state, str(r["skipped"]), f"{r['failed']} {reasons}".strip(), figures)
    console.print(table)
    console.print(f"results in [bold]{storage}[/bold] (inspect with `ltx2 status --storage {storage}`)")


def print_status(rows: list[dict], storage: str) -> None:
    table = Table(title=f"ltx2 status: {storage}")
    for col in ("stage", "scope", "done", "missing", "failed", "last run", "last error"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["stage"], r["scope"], str(r["done"]), str(r["missing"]), str(r["failed"]),
                      r["last_run"] or "-", r["last_error"] or "")
    console.print(table)
