"""The temporary Prefect API of an `ltx2 run` without PREFECT_API_URL, started so that it dies with the run.

Prefect starts its own ephemeral server (uvicorn) when no API is set, and a `kill -9` of the run leaves that
process behind. This one is the same server (Prefect's app factory, UI off, SQLite in PREFECT_HOME) started
by us with `die_with_parent`, and stopped when the run ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from ltx2core.process import die_with_parent

STARTUP_SECONDS = 90


class ApiUnavailable(RuntimeError):
    pass


def prefect_api() -> AbstractContextManager:
    """The configured Prefect API, checked to answer and take our auth string (ValueError if not), or a temporary
    one that dies with this process."""
    from prefect.settings import PREFECT_API_URL

    from flows.api_auth import check_client

    if url := PREFECT_API_URL.value():
        check_client(url)
        return nullcontext()
    return ephemeral_api()


@contextmanager
def ephemeral_api() -> Iterator[str]:
    """The API URL of a fresh server on a free loopback port, set as PREFECT_API_URL for the block."""
    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = _free_port()
    errors = tempfile.TemporaryFile()  # a file, not a pipe: nobody reads it while the server runs
    env = os.environ | {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host",
         "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
        env=env, preexec_fn=die_with_parent, stdout=subprocess.DEVNULL, stderr=errors,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if server.poll() is not None:
                errors.seek(0)
                raise ApiUnavailable(f"the temporary Prefect API exited ({server.returncode}): "
                                     f"{errors.read().decode(errors='replace')[-500:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ApiUnavailable(f"the temporary Prefect API did not answer within {STARTUP_SECONDS} s: set "
                                     "PREFECT_API_URL to a running server (`ltx2 server`)")
            time.sleep(0.1)
        with temporary_settings({PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                drain_to_api()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        errors.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drain_to_api() -> None:
    """Send the log lines and events still queued, while the server is up to take them."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=5)
