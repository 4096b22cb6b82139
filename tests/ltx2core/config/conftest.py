"""Each config test works in its own folder: tmp_path is the current directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_samples import VIDEO_DIR


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder as the current directory, with an (empty) video folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / VIDEO_DIR).mkdir(parents=True)
    return tmp_path
