"""Which auth string `ltx2 server` runs with, and the refusals that need no running server (the server itself, beyond
loopback with its string, is tested in test_deployments.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from flows.api_auth import AUTH_FILE, CLIENT_VARIABLE, SERVER_VARIABLE, ApiAccessError, server_auth
from tests.flows.helpers import REPO, make_dataset, write_configs
from tests.ports import free_port


def test_loopback_runs_without_a_string_unless_one_is_set(tmp_path):
    assert server_auth("127.0.0.1", tmp_path, {}) is None
    assert server_auth("::1", tmp_path, {}) is None
    assert server_auth("localhost", tmp_path, {}) is None
    assert server_auth("127.0.0.1", tmp_path, {SERVER_VARIABLE: "ci:abc"}).secret == "ci:abc"
    assert not (tmp_path / AUTH_FILE).exists()


def test_beyond_loopback_a_string_is_made_once_kept_private_and_reused(tmp_path):
    first = server_auth("0.0.0.0", tmp_path, {})
    path = tmp_path / AUTH_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.secret.startswith("ltx2:") and len(first.secret) > 30
    assert server_auth("192.0.2.7", tmp_path, {}) == first  # a restart keeps it: workers and CI keep working
    message = first.how_clients_set_it()
    assert CLIENT_VARIABLE in message and str(path) in message and first.secret not in message
    from_env = server_auth("0.0.0.0", tmp_path, {SERVER_VARIABLE: "mine:1"})
    assert from_env.file is None and "mine:1" not in from_env.how_clients_set_it()
    assert from_env.secret == "mine:1"  # the variable wins over the file


def test_an_empty_or_readable_string_is_refused(tmp_path):
    with pytest.raises(ApiAccessError, match=f"{SERVER_VARIABLE} is set but empty"):
        server_auth("0.0.0.0", tmp_path, {SERVER_VARIABLE: " "})
    server_auth("0.0.0.0", tmp_path, {})
    (tmp_path / AUTH_FILE).chmod(0o644)
    with pytest.raises(ApiAccessError, match="readable by other users.*chmod 600"):
        server_auth("0.0.0.0", tmp_path, {})


def test_ltx2_server_beyond_loopback_refuses_to_start_without_a_usable_string(tmp_path):
    env = os.environ | {"PREFECT_HOME": str(tmp_path / "home"), SERVER_VARIABLE: ""}
    done = subprocess.run([sys.executable, "-m", "flows.cli", "server", "--host", "0.0.0.0", "--port",
                           str(free_port())], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"ltx2 server: {SERVER_VARIABLE} is set but empty" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "home" / "prefect.db").exists()  # nothing started


def test_ltx2_run_against_an_api_that_is_not_there_says_so_before_any_work(tmp_path):
    env = os.environ | {"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    config, backend = write_configs(tmp_path, make_dataset(tmp_path / "videos"))
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--config", str(config), "--databackend",
                           str(backend), "--storage", str(tmp_path / "store"), "--stages", "probe"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "cannot reach the Prefect API" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "store").exists()
