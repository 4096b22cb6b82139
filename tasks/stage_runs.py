"""Bookkeeping around a stage: its fingerprint, time, outcome and error, recorded in `stage_runs`.

`ltx2 status` reads these records for the last error of each stage; the Prefect UI gets the same facts
as a table artifact.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from prefect.context import get_run_context

from ltx2core.data.fingerprint import fingerprint
from storage.store import Store
from tasks.report import StageReport


def _flow_run_id() -> str | None:
    try:
        return str(get_run_context().flow_run.id)
    except Exception:  # outside a flow run (tests calling the function body directly)
        return None


def tracked(store_uri: str, stage: str, scope: str, inputs: dict, run: Callable[[], StageReport]) -> StageReport:
    """Run one stage, recording success or failure with the fingerprint of what it read."""
    store = Store.open(store_uri)
    fp = fingerprint(stage, scope, inputs)
    started = datetime.now(UTC)
    try:
        report = run()
    except Exception as e:
        store.record_stage_run(stage=stage, scope=scope, fingerprint=fp, status="failed", done=0, skipped=0,
                               failed=0, error=f"{type(e).__name__}: {e}", versions={},
                               flow_run_id=_flow_run_id(), started_at=started, finished_at=datetime.now(UTC))
        raise
    store.record_stage_run(stage=stage, scope=scope, fingerprint=fp, status="completed", done=report.done,
                           skipped=report.skipped, failed=report.failed, error=None,
                           versions=report.versions, flow_run_id=_flow_run_id(), started_at=started,
                           finished_at=datetime.now(UTC))
    return report
