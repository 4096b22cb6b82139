"""Find the video files of a dataset folder, with the stat facts that decide whether to look again."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute
    size: int
    mtime_ns: int


def list_videos(folder: str | Path) -> list[FileEntry]:
    """Every video file under `folder` (recursively), sorted by path.

    A name with a video extension that cannot be stat'ed (a broken link) is still listed, with size -1,
    so the probe stage records why it is unusable instead of silently skipping it.
    """
    entries: list[FileEntry] = []
    stack = [os.path.abspath(folder)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if Path(entry.name).suffix.lower() in VIDEO_EXTENSIONS:
                    try:
                        st = entry.stat()
                        entries.append(FileEntry(entry.path, st.st_size, st.st_mtime_ns))
                    except OSError:
                        entries.append(FileEntry(entry.path, -1, 0))
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return sorted(entries, key=lambda e: e.path)
