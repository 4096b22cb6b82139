"""Content-addressed keys: a short stable hash of plain values."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def fingerprint(*parts: Any, length: int = 24) -> str:
    """Hash JSON-able values into a hex key that is stable across processes and machines."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
