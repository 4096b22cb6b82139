"""One `ltx2 server` for the session's tests that drive it (the browser and the deployment tests): starting
one costs ~40 s. test_deployments.py's last test stops it and checks that nothing is left behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.flows.helpers import LocalServer, running_server


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[LocalServer]:
    with running_server(tmp_path_factory.mktemp("server")) as running:
        yield running
