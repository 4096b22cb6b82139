"""Bookkeeping around a stage: its fingerprint, time, outcome and error, recorded in `stage_runs`.

`ltx2 status` reads these records for the last error of each stage; the Prefect UI gets the same facts
as a table artifact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from prefect import get_run_logger
from prefect.context import FlowRunContext

from ltx2core.data.fingerprint import fingerprint
from storage.store import Store
from tasks.artifacts import stage_summary
from tasks.failures import explain, mark_stage
from tasks.report import StageReport


def flow_run_id() -> str | None:
    context = FlowRunContext.get()  # None outside a flow run (tests calling the function body directly)
    return str(context.flow_run.id) if context and context.flow_run else None


def tracked(store_uri: str, stage: str, scope: str, inputs: dict, run: Callable[[], StageReport]) -> StageReport:
    """Run one stage, recording success or failure with the fingerprint of what it read, and summarise it in
    the UI. A failure is logged naming the stage, its scope and how to go on from there."""
    store = Store.open(store_uri)
    fp = fingerprint(stage, scope, inputs)
    started = datetime.now(UTC)
    try:
        report = run()
        store.record_stage_run(stage=stage, scope=scope, fingerprint=fp, status="completed", done=report.done,
                               skipped=report.skipped, failed=report.failed, error=None,
                               versions=report.versions, flow_run_id=flow_run_id(), started_at=started,
                               finished_at=datetime.now(UTC))
    except Exception as e:
        mark_stage(e, stage, scope)
        failure = explain(e)
        log = get_run_logger() if FlowRunContext.get() else logging.getLogger(__name__)
        try:
            store.record_stage_run(stage=stage, scope=scope, fingerprint=fp, status="failed", done=0, skipped=0,
                                   failed=0, error=failure.cause, versions={}, flow_run_id=flow_run_id(),
                                   started_at=started, finished_at=datetime.now(UTC))
        except Exception as record_error:  # the store may be what failed (full disk, unreachable)
            log.warning("stage %s (%s): could not record the failure in stage_runs: %s", stage, scope, record_error)
        log.error("stage %s (%s) failed: %s. Fix: %s (or Retry in the UI, `prefect flow-run retry`, `--stages %s`).",
                  stage, scope, failure.cause, failure.fix, stage, exc_info=e)
        raise
    stage_summary(report, store)
    return report
