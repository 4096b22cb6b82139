"""One run writes an output_dir at a time: an advisory lock on a file in it, released by the kernel when
the holding process ends (even by `kill -9`), so a dead run never blocks the next.

Two runs in one output_dir interleaved `loss.csv` and each took the other's checkpoint in progress for one
left by a crash, deleting it. The lock file holds the holder's description for the refusal message.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".ltx2-writer.lock"


class OutputBusy(RuntimeError):
    """Another live run writes this output_dir; the message names it."""


@contextmanager
def output_lock(folder: Path, holder: str) -> Iterator[None]:
    """Hold `folder`'s writer lock for the block; OutputBusy at once if another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        other = path.read_text().strip() or "another process"
        raise OutputBusy(f"{folder} is being written by another run: {other}. Wait for it to finish, or give this "
                         "run another output_dir") from None
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, holder.encode())
        yield
    finally:
        os.ftruncate(descriptor, 0)
        os.close(descriptor)  # closing releases the lock
