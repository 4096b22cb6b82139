"""Where stage progress goes: a rich progress bar in the CLI, nothing elsewhere.

The CLI installs a sink before it runs the flow; tasks report to whatever sink is installed, so the
stage code has no `if progress:` branches.
"""

from __future__ import annotations

from typing import Protocol


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


_sink: ProgressSink = NullSink()


def install(sink: ProgressSink) -> None:
    global _sink
    _sink = sink


def sink() -> ProgressSink:
    return _sink
