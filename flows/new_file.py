"""Files that must not exist yet and must never be readable by others, even for a moment (keys, auth strings)."""

from __future__ import annotations

import os
from pathlib import Path


def write_new(path: Path, data: bytes, mode: int = 0o600) -> Path:
    """Create `path` with `mode` from the start (O_EXCL: an existing file is an error, never overwritten)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    return path
