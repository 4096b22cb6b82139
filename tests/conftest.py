"""Session-wide test resources: a real Prefect API, the tiny LTX-2 model, an S3-compatible server (tests/s3server.py)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.s3server"]

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def prefect_api():
    """The URL of a real Prefect API server, started once per session, for tests that run flows."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        # The heartbeat thread costs ~1 s per flow call; tests do not need zombie detection.
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def ltx2_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary LTX2_HOME, so the tiny model is built once per session and never into ~/.cache."""
    home = tmp_path_factory.mktemp("ltx2_home")
    previous = os.environ.get("LTX2_HOME")
    os.environ["LTX2_HOME"] = str(home)
    yield home
    if previous is None:
        del os.environ["LTX2_HOME"]
    else:
        os.environ["LTX2_HOME"] = previous


@pytest.fixture(scope="session")
def tiny(ltx2_home: Path):
    """The tiny random LTX-2 (diffusers layout), built through the same `resolve_source("tiny")` users run."""
    from ltx2core.models.source import resolve_source

    return resolve_source("tiny")


@pytest.fixture(scope="session")
def tiny_of(ltx2_home: Path):
    """The tiny random model of a flavour, e.g. `tiny_of("2.3")`, built once per session like `tiny` (2.0)."""
    from ltx2core.models.source import resolve_source

    return functools.cache(lambda flavour: resolve_source("tiny", flavour))
