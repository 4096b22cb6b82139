"""The tiny LTX-2, built once per session through `resolve_source("tiny")` into a temporary LTX2_HOME.

Run: .venv/bin/pytest tests/ltx2core/models
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ltx2core.models import loading
from ltx2core.models.source import ModelSource, resolve_source


@pytest.fixture(scope="session")
def ltx2_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("ltx2_home")
    previous = os.environ.get("LTX2_HOME")
    os.environ["LTX2_HOME"] = str(home)
    yield home
    if previous is None:
        del os.environ["LTX2_HOME"]
    else:
        os.environ["LTX2_HOME"] = previous


@pytest.fixture(scope="session")
def tiny(ltx2_home: Path) -> ModelSource:
    return resolve_source("tiny")


@pytest.fixture(scope="session")
def tiny_vae(tiny: ModelSource) -> Any:
    return loading.load_vae(tiny, dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_text(tiny: ModelSource) -> dict[str, Any]:
    """Tokenizer, text encoder and connectors in float32 (the dtype of the stated tolerances)."""
    return dict(
        tokenizer=loading.load_tokenizer(tiny),
        text_encoder=loading.load_text_encoder(tiny, dtype=torch.float32),
        connectors=loading.load_connectors(tiny, dtype=torch.float32),
    )
