"""Slow starts shared by this folder's tests, begun before its first test so that they run while other tests do:
one `ltx2 server` (~40 s to get ready) for the browser and the deployment tests, and deployments/ci-run.sh (a
server of its own, then a run). The tests here are ordered so that those starts share the machine's two cores
with tests that use one; test_deployments.py's last test stops the server and checks nothing is left behind."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.flows.helpers import CiRun, LocalServer, running_server, start_ci_run, wait_ready

FLOWS = Path(__file__).parent
STARTED_EARLY = ("launched_server", "ci_run")
STOPS_THE_SERVER = "test_stopping_leaves_no_process_behind"  # in test_deployments.py: it must run last
# Tests that run several processes at once, so keep both cores busy themselves.
BUSY = {"test_dask.py", "test_resume.py", "test_train_multiprocess.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order this folder's tests: first those that leave a core to the started-early work, then those that keep
    both busy, then the users of the started-early fixtures, and last the test that stops the server."""
    here = [i for i, item in enumerate(items) if item.path.is_relative_to(FLOWS)]
    if here:
        items[here[0]:here[-1] + 1] = sorted(items[here[0]:here[-1] + 1], key=_rank)  # stable: else in file order


def _rank(item: pytest.Item) -> int:
    if not item.path.is_relative_to(FLOWS):
        return 0
    if item.name == STOPS_THE_SERVER:
        return 3
    if set(STARTED_EARLY) & set(item.fixturenames):
        return 2
    return 1 if item.path.name in BUSY else 0


@pytest.fixture(scope="session", autouse=True)
def _start_early(request: pytest.FixtureRequest) -> None:
    """Start what a selected test will need; the fixture it requests waits for it."""
    used = {name for item in request.session.items for name in item.fixturenames}
    for name in STARTED_EARLY:
        if name in used:
            request.getfixturevalue(name)


@pytest.fixture(scope="session")
def launched_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with running_server(tmp_path_factory.mktemp("server")) as launched:
        yield launched


@pytest.fixture(scope="session")
def server(launched_server: LocalServer) -> LocalServer:
    """The session's `ltx2 server`, once it is ready."""
    return wait_ready(launched_server)


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CiRun]:
    """deployments/ci-run.sh on a small dataset, running in a thread; test_ci_script.py checks what it did."""
    with ThreadPoolExecutor(1) as pool:
        yield start_ci_run(tmp_path_factory.mktemp("ci-run"), pool)
