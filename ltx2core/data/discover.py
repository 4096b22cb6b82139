"""Find the media files of a dataset folder, with the stat facts that decide whether to look again."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})
# Sound files: audio-only datasets train on them; the filter stage names them to any other dataset.
SOUND_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus"})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | SOUND_EXTENSIONS


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute
    size: int
    mtime_ns: int


def list_media(folder: str | Path) -> list[FileEntry]:
    """Every video and sound file under `folder` (recursively), sorted by path.

    A name with a media extension that cannot be stat'ed (a broken link) is still listed, with size -1,
    so the probe stage records why it is unusable instead of silently skipping it.
    """
    entries: list[FileEntry] = []
    stack = [os.path.abspath(folder)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if Path(entry.name).suffix.lower() in MEDIA_EXTENSIONS:
                    try:
                        st = entry.stat()
                        entries.append(FileEntry(entry.path, st.st_size, st.st_mtime_ns))
                    except OSError:
                        entries.append(FileEntry(entry.path, -1, 0))
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return sorted(entries, key=lambda e: e.path)
