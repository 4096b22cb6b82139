"""Where stage progress goes: a rich progress bar in the CLI, a progress artifact in the Prefect UI.

The CLI installs its sink before it runs the flow; tasks report to `sink()`, which also feeds the UI's
progress artifacts inside a flow run, so the stage code has no `if progress:` branches.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from prefect.artifacts import create_progress_artifact, update_progress_artifact

# Stages long enough to watch; the others finish in seconds and their summary artifact says enough.
LONG_STAGES = ("probe", "text-embeds", "latents", "train")
UPDATE_EVERY_S = 2.0  # each update is an API call: a few per stage, not one per clip


class ProgressSink(Protocol):
    def start(self, stage: str, total: int) -> None: ...
    def advance(self, stage: str, n: int = 1, note: str | None = None) -> None: ...
    def finish(self, stage: str, note: str) -> None: ...


class NullSink:
    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, stage: str, n: int = 1, note: str | None = None) -> None:
        pass

    def finish(self, stage: str, note: str) -> None:
        pass


class UiProgress:
    """A progress artifact per long stage of the current flow run, updated at most every UPDATE_EVERY_S."""

    def __init__(self) -> None:
        self._bars: dict[str, list] = {}  # stage -> [artifact id, total, done, last update time]
        self._lock = threading.Lock()  # shards advance from several threads

    def start(self, stage: str, total: int) -> None:
        from tasks.artifacts import artifact_key, in_flow_run

        if total <= 0 or not stage.startswith(LONG_STAGES) or not in_flow_run():
            return
        artifact = create_progress_artifact(0.0, key=artifact_key("progress", stage), description=f"{stage}: {total} items")
        with self._lock:
            self._bars[stage] = [artifact, total, 0, time.monotonic()]

    def advance(self, stage: str, n: int = 1, note: str | None = None) -> None:
        with self._lock:
            bar = self._bars.get(stage)
            if bar is None:
                return
            bar[2] += n
            if time.monotonic() - bar[3] < UPDATE_EVERY_S:
                return
            bar[3] = time.monotonic()
            artifact, percent = bar[0], 100.0 * min(bar[2], bar[1]) / bar[1]
        update_progress_artifact(artifact, percent, description=f"{stage}: {note}" if note else None)

    def finish(self, stage: str, note: str) -> None:
        with self._lock:
            bar = self._bars.pop(stage, None)
        if bar is not None:
            update_progress_artifact(bar[0], 100.0, description=f"{stage}: {note}")


class _Both:
    def start(self, stage: str, total: int) -> None:
        _installed.start(stage, total)
        _ui.start(stage, total)

    def advance(self, stage: str, n: int = 1, note: str | None = None) -> None:
        _installed.advance(stage, n, note)
        _ui.advance(stage, n, note)

    def finish(self, stage: str, note: str) -> None:
        _installed.finish(stage, note)
        _ui.finish(stage, note)


_installed: ProgressSink = NullSink()
_ui = UiProgress()
_both = _Both()


def install(sink: ProgressSink) -> None:
    global _installed
    _installed = sink


def sink() -> ProgressSink:
    return _both
