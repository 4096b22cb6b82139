"""`ltx2 server`: a local Prefect server, the pipeline's deployments and a worker that runs them, stopped together.

Every Prefect piece is its own process in its own session, so a Ctrl-C in the terminal reaches only this one,
which then stops the worker (and the flow runs it started) before the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from flows.api_auth import CLIENT_VARIABLE, SERVER_VARIABLE, ApiAccessError, server_auth
from flows.network import is_loopback

POOL = "ltx2-local"
PREFECT_FILE = Path("deployments/prefect.yaml")
STARTUP_TIMEOUT_S = 120  # a fresh SQLite database runs its migrations first (~10 s here, more on a busy machine)
STOP_TIMEOUT_S = 20


class ServerError(RuntimeError):
    """The server could not start or a setup step failed; the message says which and what to do."""


def prefect_env(api_url: str, workdir: Path, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment for every Prefect process: our API, and a PREFECT_HOME in the checkout unless one is set."""
    env = dict(base)
    env.setdefault("PREFECT_HOME", str(workdir / ".ltx2" / "prefect"))
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_API_URL"] = api_url
    return env


def serve(host: str = "127.0.0.1", port: int = 4200, workdir: Path | None = None) -> int:
    """Start the server, deploy deployments/prefect.yaml to it, run a worker; block until Ctrl-C or SIGTERM."""
    workdir = (workdir or Path.cwd()).absolute()
    if not (workdir / PREFECT_FILE).is_file():
        raise ServerError(f"{workdir / PREFECT_FILE} not found: run `ltx2 server` from the repository root")
    _check_port_free(host, port)
    client_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # a wildcard bind is reached on loopback
    api_url = f"http://{client_host}:{port}/api"
    env = prefect_env(api_url, workdir)
    home = Path(env["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "server.log"
    try:
        auth = server_auth(host, home, env)
    except ApiAccessError as error:
        raise ServerError(str(error)) from None
    # The UI asks the API where the page came from: a browser on another machine cannot use 127.0.0.1.
    server_env = {"PREFECT_UI_API_URL": "/api"} | env
    if auth:  # the server checks the string; its deployments and worker send it
        server_env[SERVER_VARIABLE] = env[CLIENT_VARIABLE] = auth.secret

    # SIGTERM takes the same path as Ctrl-C, so the `finally` below stops everything either way; SIGINT is set
    # too because a shell starts background jobs with it ignored, and then Python raises no KeyboardInterrupt.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = worker = None
    try:
        with open(log_path, "ab") as server_log:
            server = _start([_prefect(), "server", "start", "--host", host, "--port", str(port)], server_env,
                            workdir, stdout=server_log)
        _wait_healthy(api_url, server, log_path)
        _run([_prefect(), "work-pool", "create", POOL, "--type", "process", "--overwrite"], env, workdir)
        _run([_prefect(), "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)], env, workdir)
        worker = _start([_prefect(), "worker", "start", "--pool", POOL], env, workdir)
        print(f"Prefect UI: http://{client_host}:{port}  (API {api_url}, PREFECT_HOME {home})", flush=True)
        print("deployments: ltx2-pipeline/pipeline, ltx2-pipeline/stages; Ctrl-C stops the worker and the server",
              flush=True)
        if auth:
            print(auth.how_clients_set_it(), flush=True)
        if not is_loopback(host):
            print(f"listening on {host}:{port} over plain HTTP: the auth string crosses the network unencrypted; keep "
                  "the port on a private network or reach it through an SSH tunnel or a TLS proxy", flush=True)
        while True:
            for name, proc in (("server", server), ("worker", worker)):
                if proc.poll() is not None:
                    raise ServerError(f"the Prefect {name} exited with code {proc.returncode}; see {log_path}"
                                      if name == "server" else f"the Prefect worker exited with code {proc.returncode}")
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping the worker and the server", flush=True)
        return 0
    finally:
        for proc in (worker, server):  # the worker first: it must not pick up runs from a dying server
            if proc is not None:
                _stop(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _prefect() -> str:
    # The `prefect` next to this interpreter: the same environment that can import flows/ and tasks/.
    return str(Path(sys.executable).with_name("prefect"))


def _check_port_free(host: str, port: int) -> None:
    # Otherwise the health check would pass against whatever already listens there.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            raise ServerError(f"cannot listen on {host}:{port} ({e.strerror}): stop what uses it or pass --port") from e


def _start(cmd: list[str], env: Mapping[str, str], cwd: Path, stdout=None) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=dict(env), cwd=cwd, stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
                            start_new_session=True)


def _run(cmd: list[str], env: Mapping[str, str], cwd: Path) -> None:
    done = subprocess.run(cmd, env=dict(env), cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ServerError(f"`{' '.join(cmd[1:])}` failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def _wait_healthy(api_url: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ServerError(f"the Prefect server exited with code {server.returncode} while starting; see {log_path}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise ServerError(f"the Prefect server did not answer {api_url}/health within {STARTUP_TIMEOUT_S} s; see {log_path}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process's whole group (its children too), wait, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; children it did not stop (e.g. a flow run) still share its group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break
