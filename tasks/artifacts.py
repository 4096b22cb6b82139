"""What a run shows in the Prefect UI besides logs: a summary per stage and the exact data the run used.

Artifacts are written only inside a flow run (the CLI's no-op shortcut and library callers have none),
and each is one API call, so a stage writes one summary whatever its size.
"""

from __future__ import annotations

import re

from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext

from storage.schemas import TABLES
from storage.store import Store
from tasks.report import StageReport


def in_flow_run() -> bool:
    return FlowRunContext.get() is not None


def artifact_key(*parts: str) -> str:
    """Prefect keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def stage_summary(report: StageReport, store: Store) -> None:
    """Counts, rejection reasons, bytes stored and time of one stage over one scope."""
    if not in_flow_run():
        return
    lines = [f"# Stage `{report.stage}` ({report.scope})", "",
             "| | |", "|---|---|",
             f"| done | {report.done} |", f"| already current | {report.skipped} |",
             f"| failed or rejected | {report.failed} |", f"| time | {report.seconds:.1f} s |"]
    lines += [f"| {name} | {value} |" for name, value in report.counts.items()]
    if report.reasons:
        lines += ["", "| reason | items |", "|---|---|"]
        lines += [f"| {kind} | {n} |" for kind, n in sorted(report.reasons.items(), key=lambda kv: -kv[1])]
    if report.versions:
        lines += ["", "| table | version | rows | bytes stored |", "|---|---|---|---|"]
        for table, version in report.versions.items():
            stats = store.stats(table)
            lines.append(f"| {table} | {version} | {stats['rows']} | {_size(stats['bytes'] or 0)} |")
    state = "up to date" if report.up_to_date else f"{report.done} done, {report.failed} failed"
    create_markdown_artifact(key=artifact_key("stage", report.stage, report.scope), markdown="\n".join(lines),
                             description=f"{report.stage} ({report.scope}): {state}")


def storage_summary(store: Store, uri: str) -> None:
    """The storage URI and every table's version after the run: exactly which data this run used and made."""
    if not in_flow_run():
        return
    lines = [f"# Storage `{uri}`", "",
             "Open a table as of this run with `lancedb.connect(uri).open_table(name).checkout(version)`.", "",
             "| table | version | rows | bytes stored |", "|---|---|---|---|"]
    for table in TABLES:
        stats = store.stats(table)
        if stats["version"] is not None:
            lines.append(f"| {table} | {stats['version']} | {stats['rows']} | {_size(stats['bytes'] or 0)} |")
    create_markdown_artifact(key="storage", markdown="\n".join(lines), description=f"tables in {uri} after this run")


def _size(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"
