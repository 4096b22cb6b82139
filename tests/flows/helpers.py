"""A small real dataset and config files for pipeline tests; a real `ltx2 server` for the deployment tests, and
deployments/ci-run.sh run in the background for its test."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import httpx
import pytest

from flows.api_auth import AUTH_FILE
from ltx2core.media.synth import write_clip
from tests.ports import free_port

# name -> (width, height, frames, fps, rotation); lengths chosen around min_frames 33 / max_frames 129 at 25 fps
CLIPS = {
    "beach.mp4": (160, 96, 50, 25, 0),  # 50 frames: kept
    "fast.mp4": (96, 96, 60, 50, 0),  # 60 at 50 fps = 30 at 25 fps < 33: rejected although it has 60 frames
    "portrait.mov": (160, 96, 40, 25, 90),  # displayed 96x160: a portrait bucket
    "long.webm": (128, 96, 150, 25, 0),  # 150 > 129: rejected
    "ntsc.mkv": (128, 72, 48, Fraction(30000, 1001), 0),  # 48 at 29.97 = 40 at 25: kept
}
KEPT = {"beach.mp4", "portrait.mov", "ntsc.mkv"}


def make_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, (w, h, n, fps, rot)) in enumerate(CLIPS.items()):
        write_clip(folder / name, width=w, height=h, num_frames=n, fps=fps, rotation=rot, seed=i)
        (folder / name).with_suffix(".txt").write_text(f"clip {Path(name).stem}", encoding="utf-8")
    shutil.copy(folder / "beach.mp4", folder / "beach_copy.mp4")  # byte-identical: one video, one sample
    (folder / "beach_copy.txt").write_text("clip beach copy")
    return folder


def train_project(root: Path, clips: Path, **train) -> dict:
    """Pipeline arguments for a small training run over a copy of `clips` (a make_dataset folder) in `root`;
    `train` overrides config.json keys."""
    data = root / "videos"
    if not data.exists():
        shutil.copytree(clips, data)
    config, backend = write_configs(root, data)
    settings = json.loads(config.read_text()) | {
        "output_dir": str(root / "output" / "run"), "lora_rank": 4, "learning_rate": 1e-3, "lora_dropout": 0.0,
        "checkpointing_steps": 2, "max_train_steps": 4, "mixed_precision": "no", "seed": 7} | train
    config.write_text(json.dumps(settings))
    return {"config": str(config), "databackend": str(backend), "storage": str(root / "store")}


@contextmanager
def running_server(root: Path) -> Iterator[LocalServer]:
    """`ltx2 server`, launched now and stopped at the end if no test stopped it; `wait_ready` before use."""
    server = launch_server(root)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGTERM)
            server.proc.wait(90)


def write_configs(root: Path, dataset_dir: Path, block: dict | None = None, **video) -> tuple[Path, Path]:
    """config.json + multidatabackend.json for the tiny model over `dataset_dir`; `block` overrides dataset keys."""
    config = root / "config.json"
    config.write_text(json.dumps({"model_family": "ltxvideo2", "pretrained_model_name_or_path": "tiny",
                                  "output_dir": str(root / "output")}))
    block = {"id": "clips", "type": "local", "dataset_type": "video", "instance_data_dir": str(dataset_dir),
             "caption_strategy": "textfile", "resolution": 64,
             "video": {"num_frames": 33, "min_frames": 33, "max_frames": 129, "frame_rate": 25} | video} | (block or {})
    backend = root / "multidatabackend.json"
    backend.write_text(json.dumps([block, {"id": "text-embeds", "dataset_type": "text_embeds", "default": True,
                                           "type": "local", "cache_dir": "cache/text"}]))
    return config, backend


# --- a real `ltx2 server` on a free loopback port, and a check that stopping it leaves no process behind ---

REPO = Path(__file__).resolve().parents[2]
SERVER_READY = "Prefect UI:"  # `ltx2 server` prints it once the deployments and the worker are up


@dataclass(frozen=True)
class LocalServer:
    proc: subprocess.Popen
    host: str  # where clients reach it
    port: int
    base_env: dict[str, str]
    root: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def auth(self) -> str | None:
        """The auth string `ltx2 server` made and keeps in its PREFECT_HOME (none on loopback)."""
        path = Path(self.base_env["PREFECT_HOME"]) / AUTH_FILE
        return path.read_text().strip() if path.exists() else None

    @property
    def env(self) -> dict[str, str]:
        """For `prefect` CLI calls against this server, as the README tells a client to set them."""
        return self.base_env | {"PREFECT_API_URL": self.api_url} | (
            {"PREFECT_API_AUTH_STRING": self.auth} if self.auth else {})

    @cached_property
    def http(self) -> httpx.Client:
        """An httpx client of the API that sends the auth string."""
        headers = {"Authorization": "Basic " + base64.b64encode(self.auth.encode()).decode()} if self.auth else {}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=60)


def beyond_loopback() -> tuple[str, str]:
    """(address to bind, address to reach it on): this machine's address on its default route if it has one,
    else every interface reached on loopback. Either way the server listens beyond loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 9))  # a UDP "connect" sends nothing: it only picks the outgoing address
            address = s.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    return (address, address) if not address.startswith("127.") else ("0.0.0.0", "127.0.0.1")


def launch_server(root: Path) -> LocalServer:
    """Start `ltx2 server` beyond loopback (so with its auth string), with its own PREFECT_HOME under `root`, in
    its own session, and return at once: it takes ~40 s to get ready, which other tests can use meanwhile."""
    bind, host = beyond_loopback()
    port = free_port(bind)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "PREFECT_SERVER_API_AUTH"))}
    env |= {"PREFECT_HOME": str(root / "prefect-home"), "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING"}
    log = root / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "server", "--host", bind, "--port", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return LocalServer(proc=proc, host=host, port=port, base_env=env, root=root, log=log)


def wait_ready(server: LocalServer, startup_s: float = 240) -> LocalServer:
    """Block until `ltx2 server` says it is ready (its deployments and worker are up); fail with its log if not."""
    proc, log = server.proc, server.log
    deadline = time.monotonic() + startup_s
    while SERVER_READY not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(60)
            pytest.fail(f"`ltx2 server` did not get ready (exit {proc.returncode}):\n{log.read_text(errors='replace')}")
        time.sleep(0.5)
    return server


def stop_server(server: LocalServer, wait_s: float = 90) -> tuple[int, list[int]]:
    """SIGTERM `ltx2 server` (as Ctrl-C would) and wait: its exit code and the pids it started that still live."""
    spawned = descendants(server.proc.pid)
    os.kill(server.proc.pid, signal.SIGTERM)
    code = server.proc.wait(wait_s)
    return code, sorted(p for p in spawned if alive(p) or group_alive(p))


def descendants(pid: int) -> set[int]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it exited while we looked
                continue
            tree.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# --- deployments/ci-run.sh as the README's CI snippet runs it: its own server, one deployment run, all stopped ---

@dataclass(frozen=True)
class CiRun:
    storage: Path  # where the run's stages write
    home: Path  # the PREFECT_HOME given to the script (its server's log is there)
    outcome: Future  # (the script's CompletedProcess, whether its port still answered once the script had exited)


def start_ci_run(root: Path, pool: ThreadPoolExecutor) -> CiRun:
    """Run the script on a small dataset in `pool`'s thread and return at once: it starts a server of its own
    (~40 s) and needs nothing from other tests, so it runs while they do."""
    data = make_dataset(root / "videos")
    config, backend = write_configs(root, data)
    storage = root / "store"
    port = free_port()
    home = root / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "PREFECT_SERVER_API_AUTH"))}
    env |= {"PORT": str(port), "LTX2_BIN": str(Path(sys.executable).parent), "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_HOME": str(home)}
    params = {"config": str(config), "databackend": str(backend), "storage": str(storage),
              "stages": ["probe", "filter", "bucket"]}
    args = [a for k, v in params.items() for a in ("--param", f"{k}={json.dumps(v)}")]

    def run() -> tuple[subprocess.CompletedProcess, bool]:
        done = subprocess.run(["deployments/ci-run.sh", "ltx2-pipeline/stages", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        with socket.socket() as s:  # looked at as the script ends, before any later server can take the port
            listening = s.connect_ex(("127.0.0.1", port)) == 0
        return done, listening

    return CiRun(storage=storage, home=home, outcome=pool.submit(run))
