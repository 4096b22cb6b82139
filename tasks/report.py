"""The small, typed result every stage returns (never tensors or long lists through Prefect), and the bookkeeping
every stage does around its work."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from ltx2core.data.frames import NO_PICTURE
from storage.store import Store
from tasks.progress import sink


@dataclass
class StageReport:
    stage: str
    scope: str = "*"  # dataset id, or "*" for stages over all datasets
    done: int = 0  # items computed by this run
    skipped: int = 0  # items already current
    failed: int = 0  # items recorded with a reason (rejected, unreadable, no caption)
    reasons: dict[str, int] = field(default_factory=dict)  # reason kind -> count
    counts: dict[str, int] = field(default_factory=dict)  # stage-specific figures (buckets, duplicates, ...)
    versions: dict[str, int | None] = field(default_factory=dict)  # table -> version after the stage
    seconds: float = 0.0
    load_seconds: float = 0.0  # loading the stage's models, summed over its shards (on a cluster they overlap)
    note: str = ""  # the progress bar's last word, when the stage has a better one than its count (train's loss)

    @property
    def up_to_date(self) -> bool:
        return self.done == 0

    def as_dict(self) -> dict:
        return asdict(self) | {"up_to_date": self.up_to_date}

    def add_reason(self, kind: str) -> None:
        self.failed += 1
        self.reasons[kind] = self.reasons.get(kind, 0) + 1


def reason_kind(reason: str) -> str:
    """Group reasons for summaries: numbers differ per file, the kind does not."""
    if "< min_frames" in reason:
        return "shorter than min_frames"
    if "> max_frames" in reason:
        return "longer than max_frames"
    if reason.startswith(NO_PICTURE):
        return "sound file (no picture)"
    if reason.startswith("unusable file: "):
        return reason.removeprefix("unusable file: ").split(":")[0]
    if reason.startswith(("missing caption", "no row for")):
        return "no caption"
    if reason.startswith("empty caption"):
        return "empty caption"
    if "not UTF-8" in reason:
        return "caption not UTF-8"
    return reason


@contextmanager
def reporting(store_uri: str, stage: str, scope: str = "*", *, tables: list[str],
              verb: str) -> Iterator[tuple[Store, StageReport]]:
    """The store and an empty report for the block; after it, the tables' versions, the seconds, and the progress
    bar's last word (the report's note, else "up to date" or "<done> <verb>")."""
    t0 = time.perf_counter()
    store = Store.open(store_uri)
    report = StageReport(stage, scope=scope)
    yield store, report
    report.versions = store.versions(tables)
    report.seconds = time.perf_counter() - t0
    counted = "up to date" if report.up_to_date else f"{report.done} {verb}"
    sink().finish(stage if scope == "*" else f"{stage} {scope}", report.note or counted)
