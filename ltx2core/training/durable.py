"""Files that land whole: write under a temporary name, fsync, rename, fsync the folder.

A rename within one filesystem is atomic, so a reader sees the old file or the new one, never half of
one; the fsyncs make that survive a power cut as well as a killed process.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    with Path(path).open("rb+") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def publish(source: Path, destination: Path) -> Path:
    """Move a finished file or folder `source` to `destination` (same filesystem) durably."""
    if Path(source).is_file():
        fsync_file(source)
    os.replace(source, destination)
    fsync_dir(Path(destination).parent)
    return Path(destination)
