"""Hash and probe files on every core: PyAV holds the GIL while it parses, so threads do not scale.

Workers are started by a fork server that preloads only the probe module, so they start in a fraction of a
second and inherit nothing from the caller (Prefect's threads, open database handles).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

from ltx2core.media.probe import content_hash, probe_video


def examine(path: str) -> tuple[str | None, dict]:
    """(content hash, probe fields) of one file; the hash is None when the path cannot be read as bytes."""
    try:
        digest = content_hash(path)
    except OSError:  # a directory, a broken link: the probe says why
        digest = None
    return digest, asdict(probe_video(path))


class ProbePool:
    """A process pool that examines files; use as a context manager."""

    def __init__(self, workers: int | None = None):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["ltx2core.media.pool"])
        self._pool = ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, mp_context=ctx)

    def __enter__(self) -> ProbePool:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(cancel_futures=True)

    def examine(self, paths: Iterable[str]) -> Iterator[tuple[str | None, dict]]:
        """Results in order; workers run ahead while the caller consumes (and writes) earlier ones."""
        return self._pool.map(examine, paths, chunksize=32)
