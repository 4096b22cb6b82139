"""Prefect's orchestration overhead on a 1,000-clip pipeline (probe..latents, tiny model, CPU), and no-op reruns.

    .venv/bin/python bench/orchestration_bench.py [--clips 1000] [--no-server] [--out FILE]

What runs, all in this one invocation on this machine:
  1. `ltx2 run --stages probe,filter,bucket,captions,text-embeds,latents` over N generated clips (64x64,
     17 frames, 25 fps, H.264, each with a distinct .txt caption) and a tiny model made by
     `ltx2 make-tiny-model`: the real CLI and flow on Prefect's ephemeral API, which is what `ltx2 run` uses
     unless PREFECT_API_URL is set. PREFECT_HOME is fresh and migrated beforehand (timed apart: paid once).
     Train and validate are left out: one training loop in one task, no per-clip orchestration to measure.
  2. The same `ltx2 run` with nothing pending: its shortcut answers from the tables without Prefect. Twice.
  3. The same `ltx2 run` with nothing pending but the shortcut disabled in that process, so it goes
     through the flow as a deployment run or the UI's Retry does: every stage starts, finds nothing, ends.
  4. Run 3 again against a `prefect server start` that is already up (what `ltx2 server` users have).
Each child of runs 1, 3 and 4 then runs 20 empty tasks in a second flow: Prefect's cost per task run.

How a child's wall time is split. The child wraps, in its own memory, a few functions with timers and then
calls the real CLI; no project file changes:
  - python start; `import prefect` and the Prefect modules the engine and our code use; our own imports;
  - flow call -> first line of the flow body: Prefect's flow start-up. Starting the ephemeral API
    server (importing prefect.server and `SubprocessASGIServer.start`) is timed on its own;
  - the flow body. Timed: every task body (`Task.fn` of every Prefect task in tasks/ and flows/), every
    interval the flow's thread spends in Prefect's engine (`Task.__call__`, `Task.submit`,
    `PrefectFuture.result` / `.wait`), and every `prefect.artifacts` call our code makes (progress bars
    and stage summaries in the UI), on any thread. Our work = the time in which some thread runs our code:
    the flow thread outside engine calls, plus task bodies, each less the artifact calls on its thread.
    Prefect's share of the body = body wall - our work: task-run creation and state changes, futures,
    artifact calls. The same split per stage uses the `tracked` interval of each stage;
  - flow body end -> flow call returns: Prefect's flow teardown (final state, heartbeat thread join);
  - after the CLI returns: atexit work (Prefect's log and event workers drain, the ephemeral server is
    stopped, timed on its own), then interpreter exit (module teardown of torch, diffusers, lancedb and
    Prefect together; not split, counted as neither).
Prefect total = its imports + server start + flow start-up + its share of the body + teardown + atexit.
Per-run Prefect = the same without the ephemeral server's start and stop (a server user's cost).
Cross-checks in the JSON: requests to the API by endpoint (count, summed latency); task runs x the
empty-task cost + artifact calls against the measured share of the body; CPU seconds of the ephemeral
server process, in all and during the flow body (it shares the two cores with the stages and so slows
them by an amount the split counts as our work); StageReport.seconds per stage. The stage work cannot
cleanly run without Prefect (the stages call `get_run_logger`, `.submit` and artifact functions), so
there is no Prefect-free rerun; the timers inside the task bodies measure the same thing from inside.

Writes bench/results/orchestration-cpu-<date>.json (or --out) and prints a summary.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import inspect
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STAGES = ["probe", "filter", "bucket", "captions", "text-embeds", "latents"]
BASES = 16  # distinct encodes; every clip is a copy made unique by a trailing MP4 `free` box
FRAMES, FPS, SIZE = 17, 25, 64
EMPTY_TASKS = 20
ENGINE_CALLS = ("task call", "task submit", "future result", "future wait")


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": str(ROOT), "LTX2_HOME": str(home.parent / "ltx2-home")}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


# ---- data


def make_dataset(folder: Path, n: int) -> None:
    """n distinct 64x64 17-frame clips and one distinct caption each (distinct captions: n text embeddings)."""
    from ltx2core.media.synth import look, write_clip

    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        bases = [write_clip(Path(scratch) / f"base_{i:02d}.mp4", width=SIZE, height=SIZE, num_frames=FRAMES, fps=FPS,
                            seed=i).read_bytes() for i in range(BASES)]
    for i in range(n):
        tag = f"bench clip {i}".encode()
        # A trailing `free` box is skipped by every MP4 reader and makes each file's bytes (its video id) unique.
        (folder / f"clip_{i:05d}.mp4").write_bytes(bases[i % BASES] + (8 + len(tag)).to_bytes(4, "big") + b"free" + tag)
        (folder / f"clip_{i:05d}.txt").write_text(f"{look(i % BASES).caption()}, take {i}.\n")


def write_configs(tmp: Path, clips: Path, model: Path) -> tuple[Path, Path]:
    config = json.loads((ROOT / "config" / "config.json").read_text())
    backend = json.loads((ROOT / "config" / "multidatabackend.json").read_text())
    config |= {"pretrained_model_name_or_path": str(model), "output_dir": str(tmp / "output"),
               "data_backend_config": str(tmp / "multidatabackend.json"), "eval_dataset_id": "bench"}
    video = next(d for d in backend if d.get("dataset_type") == "video")
    video |= {"id": "bench", "instance_data_dir": str(clips), "resolution": SIZE,
              "video": video["video"] | {"num_frames": FRAMES, "min_frames": FRAMES, "frame_rate": FPS}}
    for d in backend:
        if d.get("dataset_type") == "text_embeds":
            d["cache_dir"] = str(tmp / "cache" / "text")
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    (tmp / "multidatabackend.json").write_text(json.dumps(backend, indent=1))
    return tmp / "config.json", tmp / "multidatabackend.json"


# ---- child: the real CLI or flow with timers around Prefect's entry points


class Recorder:
    """Intervals (label, thread, start, end) in time.time() seconds, and a few timestamps."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self.bodies: list[tuple[str, int, float, float]] = []  # task bodies, any thread
        self.prefect: list[tuple[str, int, float, float]] = []  # inside Prefect: engine calls, artifact calls
        self.stages: list[tuple[str, str, float, float]] = []  # `tracked` intervals: stage, scope
        self.requests: dict[str, list[float]] = {}  # "METHOD /path" -> [count, seconds]
        self.server_cpu_s: float | None = None
        self.extra: dict = {}
        self.flow_thread: int | None = None
        self.server_pid: int | None = None
        self.lock = threading.Lock()

    def timed(self, intervals: list, label: str, fn, flow_thread_only: bool = False):
        """fn, with each call appended to `intervals` (only those made on the flow's thread if asked)."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t0 = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                tid = threading.get_ident()
                if not flow_thread_only or tid == self.flow_thread:
                    with self.lock:
                        intervals.append((label, tid, t0, time.time()))

        return wrapper


def instrument(rec: Recorder) -> None:
    """Timers around the flow body, every task body, Prefect's engine entry points and artifact calls."""
    from prefect import futures
    from prefect.tasks import Task

    import flows.pipeline as pipeline_module

    # Every Prefect task and artifact function our flow and stage modules hold, whatever the stages are now.
    seen: set[int] = set()
    for name, module in list(sys.modules.items()):
        if not name.startswith(("tasks.", "flows.")):
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, Task) and id(value) not in seen:
                seen.add(id(value))
                value.fn = rec.timed(rec.bodies, value.name, value.fn)
            elif callable(value) and getattr(value, "__module__", "") == "prefect.artifacts":
                setattr(module, attr, rec.timed(rec.prefect, attr, value))
    rec.extra["wrapped_tasks"] = len(seen)
    Task.__call__ = rec.timed(rec.prefect, "task call", Task.__call__, flow_thread_only=True)
    Task.submit = rec.timed(rec.prefect, "task submit", Task.submit, flow_thread_only=True)
    for cls in (futures.PrefectConcurrentFuture, futures.PrefectDistributedFuture):
        cls.result = rec.timed(rec.prefect, "future result", cls.result, flow_thread_only=True)
        cls.wait = rec.timed(rec.prefect, "future wait", cls.wait, flow_thread_only=True)

    flow = pipeline_module.pipeline
    body = flow.fn

    def timed_body(*args, **kwargs):
        rec.flow_thread = threading.get_ident()
        rec.t["body_start"] = time.time()
        rec.extra["server_cpu_s_at_body_start"] = process_cpu_s(rec.server_pid) if rec.server_pid else None
        try:
            return body(*args, **kwargs)
        finally:
            rec.t["body_end"] = time.time()
            rec.extra["server_cpu_s_at_body_end"] = process_cpu_s(rec.server_pid) if rec.server_pid else None

    flow.fn = functools.wraps(body)(timed_body)
    # Resolved hints: Prefect validates parameters in the wrapper's globals, which are not the flow module's.
    flow.fn.__signature__ = inspect.signature(body, eval_str=True)
    tracked = pipeline_module.tracked

    def timed_tracked(store_uri, stage, scope, *args, **kwargs):
        t0 = time.time()
        try:
            return tracked(store_uri, stage, scope, *args, **kwargs)
        finally:
            rec.stages.append((stage, scope, t0, time.time()))

    pipeline_module.tracked = timed_tracked

    if os.environ.get("PREFECT_API_URL"):
        instrument_http(rec)
        return
    t0 = time.time()  # `ltx2 run` imports this inside the flow call, to start the ephemeral server
    from prefect.server.api import server

    rec.extra["import_prefect_server_s"] = time.time() - t0
    start, stop = server.SubprocessASGIServer.start, server.SubprocessASGIServer.stop

    def timed_start(self, *args, **kwargs):
        t0, was_running = time.time(), self.running  # every API client creation calls start()
        start(self, *args, **kwargs)
        if not was_running:
            rec.t |= {"server_start_begin": t0, "server_start_end": time.time()}
            rec.server_pid = self.server_process.pid

    def timed_stop(self):
        if self.server_process is not None:
            rec.server_cpu_s = process_cpu_s(self.server_process.pid)
        t0 = time.time()
        stop(self)
        rec.t |= {"server_stop_begin": t0, "server_stop_end": time.time()}

    server.SubprocessASGIServer.start, server.SubprocessASGIServer.stop = timed_start, timed_stop
    instrument_http(rec)


def instrument_http(rec: Recorder) -> None:
    """Count the requests to the API and sum their latency, by endpoint."""
    import httpx

    def count(send):
        def wrapper(self, request, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return send(self, request, *args, **kwargs)
            finally:
                endpoint(rec, request, time.perf_counter() - t0)

        async def async_wrapper(self, request, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return await send(self, request, *args, **kwargs)
            finally:
                endpoint(rec, request, time.perf_counter() - t0)

        return async_wrapper if send is httpx.AsyncClient.send else wrapper

    httpx.Client.send, httpx.AsyncClient.send = count(httpx.Client.send), count(httpx.AsyncClient.send)


def endpoint(rec: Recorder, request, seconds: float) -> None:
    path = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "{id}", request.url.path)
    with rec.lock:
        entry = rec.requests.setdefault(f"{request.method} {path}", [0, 0.0])
        entry[0] += 1
        entry[1] += seconds


def process_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def empty_task_cost(n: int) -> dict[str, float]:
    """Seconds per task run of an empty task in a warm flow: called one by one, and submitted then awaited."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    @task(name="empty", cache_policy=NO_CACHE)
    def empty(i: int) -> int:
        return i

    @flow(name="bench-empty-tasks")
    def empty_tasks() -> dict[str, float]:
        t0 = time.perf_counter()
        for i in range(n):
            empty(i)
        t1 = time.perf_counter()
        for future in [empty.submit(i) for i in range(n)]:
            future.result()
        return {"called_s_per_task": (t1 - t0) / n, "submitted_s_per_task": (time.perf_counter() - t1) / n}

    return empty_tasks()


def child(mode: str, out: Path, run_args: list[str]) -> None:
    rec = Recorder()
    rec.t["child_start"] = time.time()
    rec.t["spawn"] = float(os.environ["BENCH_SPAWN"])

    def save() -> None:
        out.write_text(json.dumps({"t": rec.t, "flow_thread": rec.flow_thread, "bodies": rec.bodies,
                                   "prefect": rec.prefect, "stages": rec.stages,
                                   "requests": rec.requests, "server_cpu_s": rec.server_cpu_s,
                                   "extra": rec.extra}, indent=1))

    atexit.register(lambda: (rec.t.update(last_atexit=time.time()), save()))  # registered first: runs last
    from flows.cli import _prefect_defaults

    _prefect_defaults(verbose=False)  # as `ltx2 run` does before Prefect is imported
    t0 = time.time()
    # Prefect and the parts of it our code and the engine use, timed apart: every `ltx2 run` that does work pays it.
    import prefect.artifacts  # noqa: F401
    import prefect.cache_policies  # noqa: F401
    import prefect.context  # noqa: F401
    import prefect.flow_engine  # noqa: F401
    import prefect.task_engine  # noqa: F401
    from prefect import flow, get_run_logger, task  # noqa: F401

    rec.t["prefect_imported"] = time.time()
    rec.extra["import_prefect_s"] = rec.t["prefect_imported"] - t0
    from flows import cli

    instrument(rec)
    rec.t["imports_done"] = time.time()

    import flows.pipeline as pipeline_module

    flow = pipeline_module.pipeline

    def timed_flow(**kwargs):
        rec.t["flow_call"] = time.time()
        try:
            rec.extra["reports"] = flow(**kwargs)
            return rec.extra["reports"]
        finally:
            rec.t["flow_return"] = time.time()

    rec.t["main_start"] = time.time()
    pipeline_module.pipeline = timed_flow  # what `cmd_run` imports
    if mode == "flow":  # through the flow even when nothing is pending, as a deployment run or Retry would go
        import tasks.pending

        tasks.pending.nothing_pending = lambda *args, **kwargs: False
    code = cli.main(run_args)
    if code:
        sys.exit(code)
    rec.t["main_end"] = time.time()
    rec.extra["requests_at_main_end"] = {k: list(v) for k, v in rec.requests.items()}
    rec.extra["empty_task"] = empty_task_cost(EMPTY_TASKS)  # after the pipeline: its cost is not in the run's
    rec.t["empty_tasks_end"] = time.time()
    save()


# ---- analysis


def merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        elif b > a:
            out.append([a, b])
    return [(a, b) for a, b in out]


def minus(keep: list[tuple[float, float]], drop: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out, drop = [], merged(drop)
    for a, b in merged(keep):
        for c, d in drop:
            if d <= a or c >= b:
                continue
            if c > a:
                out.append((a, c))
            a = max(a, d)
        if a < b:
            out.append((a, b))
    return out


def ours_within(lo: float, hi: float, raw: dict) -> float:
    """Seconds of [lo, hi] in which some thread ran our code: the flow's thread outside Prefect's engine calls,
    and every task body, each less the artifact calls made on its thread."""
    flow = raw["flow_thread"]
    clip = lambda rows: [(max(a, lo), min(b, hi)) for _, _, a, b in rows if b > lo and a < hi]  # noqa: E731
    threads = {tid for _, tid, _, _ in raw["bodies"]} | {flow}
    ours = []
    for tid in threads:
        mine = clip([r for r in raw["bodies"] if r[1] == tid])
        if tid == flow:
            mine += minus([(lo, hi)], clip([r for r in raw["prefect"] if r[1] == tid and r[0] in ENGINE_CALLS]))
        ours += minus(mine, clip([r for r in raw["prefect"] if r[1] == tid and r[0] not in ENGINE_CALLS]))
    return sum(b - a for a, b in merged(ours))


def analyse(raw: dict, wall: float, end: float) -> dict:
    """Phases of one child run (seconds), Prefect's share, and the cross-checks."""
    t, extra = raw["t"], raw["extra"]
    r = lambda x: None if x is None else round(x, 3)  # noqa: E731
    body = t["body_end"] - t["body_start"]
    work = ours_within(t["body_start"], t["body_end"], raw)
    import_server = extra.get("import_prefect_server_s", 0.0)  # done before the flow call here, inside it for users
    server_start = import_server + t.get("server_start_end", 0) - t.get("server_start_begin", 0)
    server_stop = t.get("server_stop_end", 0) - t.get("server_stop_begin", 0)
    pipeline_end = t["main_end"]
    wall -= t["empty_tasks_end"] - t["main_end"]  # the empty-task measurement after the pipeline: not its run
    phases = {
        "python_start": t["child_start"] - t["spawn"],
        "import_prefect": extra["import_prefect_s"],
        "import_ours": t["imports_done"] - t["prefect_imported"] - import_server,
        "cli_before_flow": t["flow_call"] - t["main_start"],
        "ephemeral_server_start": server_start,
        "flow_startup": t["body_start"] - t["flow_call"] - (server_start - import_server),
        "flow_body_work": work,
        "flow_body_prefect": body - work,
        "flow_teardown": t["flow_return"] - t["body_end"],
        "cli_after_flow": pipeline_end - t["flow_return"],
        "ephemeral_server_stop": server_stop,
        "exit_other": t["last_atexit"] - t["empty_tasks_end"] - server_stop,
        "interpreter_finalise": end - t["last_atexit"],
    }
    per_run = ("import_prefect", "flow_startup", "flow_body_prefect", "flow_teardown", "exit_other")
    prefect = sum(phases[k] for k in per_run) + server_start + server_stop
    per_run_s = sum(phases[k] for k in per_run)
    requests = extra["requests_at_main_end"]  # the pipeline's, not the empty tasks' after it
    stages = []
    reported = {(rep["stage"], rep["scope"]): rep["seconds"] for rep in extra.get("reports") or []}
    for stage, scope, a, b in raw["stages"]:
        ours = ours_within(a, b, raw)
        stages.append({"stage": stage, "scope": scope, "wall_s": r(b - a), "work_s": r(ours),
                       "stage_report_seconds": r(reported.get((stage, scope))),
                       "prefect_s": r(b - a - ours), "task_runs": sum(1 for _, _, x, _ in raw["bodies"] if a <= x <= b),
                       "task_bodies_s": r(sum(y - x for _, _, x, y in raw["bodies"] if x >= a and y <= b))})
    cpu = [extra.get("server_cpu_s_at_body_start"), extra.get("server_cpu_s_at_body_end")]
    out = {
        "wall_s": r(wall),
        "phases_s": {k: r(v) for k, v in phases.items()},
        "flow_body_s": r(body),
        "prefect_total_s": r(prefect),
        "prefect_share_of_wall": r(prefect / wall),
        "prefect_per_run_s": r(per_run_s),
        "prefect_per_run_share": r(per_run_s / (wall - server_start - server_stop)),
        "prefect_in_flow_share_of_body": r((body - work) / body),
        "stages": stages,
        "task_runs": len(raw["bodies"]),
        "task_bodies_s": r(sum(b - a for _, _, a, b in raw["bodies"])),
        "artifact_calls": sum(1 for name, *_ in raw["prefect"] if name not in ENGINE_CALLS),
        "artifact_calls_s": r(sum(b - a for name, _, a, b in raw["prefect"] if name not in ENGINE_CALLS)),
        "api_requests": sum(c for c, _ in requests.values()),
        "api_request_seconds_summed": r(sum(s for _, s in requests.values())),
        "api_requests_by_endpoint": {k: [c, r(s)] for k, (c, s) in sorted(requests.items(), key=lambda kv: -kv[1][0])},
        "api_server_cpu_s": r(raw["server_cpu_s"]),
        "api_server_cpu_s_during_body": r(cpu[1] - cpu[0]) if None not in cpu else None,
    }
    out["empty_task_s"] = {k: r(v) for k, v in extra["empty_task"].items()}
    # Cross-check: Prefect's cost per task run (an empty task, measured after the pipeline in the same process)
    # times the task runs, plus the artifact calls, against what the interval split found in the flow body.
    out["estimate_flow_body_prefect_s"] = r(len(raw["bodies"]) * extra["empty_task"]["called_s_per_task"]
                                            + out["artifact_calls_s"])
    return out


def run_child(mode: str, tmp: Path, run_args: list[str], env: dict[str, str], name: str) -> dict:
    raw_path = tmp / f"{name}.json"
    env = env | {"BENCH_SPAWN": repr(time.time())}
    log = tmp / f"{name}.log"
    # Output to a file, not a pipe: the wait ends when the process does, not when the last holder of a pipe
    # (a pool worker, the server) closes it.
    with log.open("w") as sink, Contention() as contention:
        t0 = time.perf_counter()
        code = subprocess.run([sys.executable, __file__, "--child", mode, "--raw", str(raw_path), "--", *run_args],
                              cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT).returncode
        wall, end = time.perf_counter() - t0, time.time()
    if code:
        sys.exit(f"{name} failed ({code}):\n{log.read_text()[-4000:]}")
    return analyse(json.loads(raw_path.read_text()), wall, end) | {"machine_during_run": contention.facts}


class Contention:
    """Other people's use of the cores while a child runs: busy CPU seconds of the machine less ours."""

    def __enter__(self) -> Contention:
        self.busy, self.ours, self.t0 = busy_cpu_s(), children_cpu_s(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        seconds = time.perf_counter() - self.t0
        busy, ours = busy_cpu_s() - self.busy, children_cpu_s() - self.ours
        self.facts = {"cores": os.cpu_count(), "busy_cpu_s": round(busy, 1), "ours_cpu_s": round(ours, 1),
                      "others_cpu_s": round(busy - ours, 1), "others_cores_mean": round((busy - ours) / seconds, 2),
                      "load_after": os.getloadavg()[0]}


def busy_cpu_s() -> float:
    """CPU seconds the whole machine spent not idle since boot (/proc/stat)."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for children and their waited-for children
    return usage.ru_utime + usage.ru_stime


def timed_cli(run_args: list[str], env: dict[str, str], log: Path) -> tuple[float, str]:
    with log.open("w") as sink:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flows.cli", *run_args], cwd=ROOT, env=env, stdout=sink,
                       stderr=subprocess.STDOUT, check=True)
        seconds = time.perf_counter() - t0
    return seconds, log.read_text()


# ---- a running server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = prefect_env(home)
    t0 = time.perf_counter()
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--port", str(port),
                               "--no-ui"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    while time.perf_counter() - t0 < 180:
        try:
            if urllib.request.urlopen(f"{api}/health", timeout=2).status == 200:
                return server, api, time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    server.kill()
    sys.exit("prefect server did not start in 180 s")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# ---- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--no-server", action="store_true", help="skip the no-op flow against `prefect server`")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/orchestration-cpu-<date>.json)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--child", choices=["cli", "flow"], help=argparse.SUPPRESS)
    parser.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("run_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.raw, args.run_args)

    today = date.today().isoformat()
    out = args.out or ROOT / "bench" / "results" / f"orchestration-cpu-{today}.json"
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="orch-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        result = bench(args, tmp, today)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    summary(result)
    print(f"written to {out}")


def bench(args: argparse.Namespace, tmp: Path, today: str) -> dict:
    facts: dict = {"date": today, "machine": f"{platform.node()} {os.cpu_count()} cores", "clips": args.clips,
                   "clip": f"{SIZE}x{SIZE}, {FRAMES} frames, {FPS} fps, H.264", "stages": STAGES,
                   "load_before": os.getloadavg()}
    t0 = time.perf_counter()
    make_dataset(tmp / "clips", args.clips)
    facts["generate_s"] = round(time.perf_counter() - t0, 1)
    home = tmp / "prefect-home"
    env = prefect_env(home)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flows.cli", "make-tiny-model", str(tmp / "tiny")], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    facts["tiny_model_s"] = round(time.perf_counter() - t0, 1)
    config, backend = write_configs(tmp, tmp / "clips", tmp / "tiny")
    run_args = ["run", "--config", str(config), "--databackend", str(backend), "--storage", str(tmp / "store"),
                "--stages", ",".join(STAGES)]
    t0 = time.perf_counter()  # a new PREFECT_HOME migrates its database once: paid on a user's first run only
    subprocess.run([str(Path(sys.executable).parent / "prefect"), "server", "database", "upgrade", "-y"], cwd=ROOT,
                   env=env, check=True, capture_output=True)
    facts["prefect_home_migrations_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(facts), flush=True)

    first = run_child("cli", tmp, run_args, env, "first-run")
    print(f"first run: {first['wall_s']} s", flush=True)
    noop_cli, noop_cli_machine = [], []
    for i in range(2):
        with Contention() as contention:
            seconds, stdout = timed_cli(run_args, env, tmp / f"noop-cli-{i}.log")
        if "nothing to run" not in stdout:
            sys.exit(f"`ltx2 run` found work after the first run:\n{stdout}")
        noop_cli.append(round(seconds, 2))
        noop_cli_machine.append(contention.facts)
    print(f"no-op `ltx2 run`: {noop_cli} s", flush=True)
    noop_flow = run_child("flow", tmp, run_args, env, "noop-flow-ephemeral")
    print(f"no-op flow, ephemeral API: {noop_flow['wall_s']} s", flush=True)
    result = {"facts": facts, "first_run": first, "noop_cli_s": noop_cli, "noop_cli_machine": noop_cli_machine,
              "noop_flow_ephemeral": noop_flow}
    if not args.no_server:
        server, api, ready = start_server(home)
        try:
            facts["server_ready_s"] = round(ready, 1)
            result["noop_flow_server"] = run_child("flow", tmp, run_args, prefect_env(home, api), "noop-flow-server")
        finally:
            stop_server(server)
        print(f"no-op flow, running server: {result['noop_flow_server']['wall_s']} s", flush=True)
    status = subprocess.run([sys.executable, "-m", "flows.cli", "status", "--json", "--config", str(config),
                             "--databackend", str(backend), "--storage", str(tmp / "store")], cwd=ROOT, env=env,
                            check=True, capture_output=True, text=True)
    result["status"] = json.loads(status.stdout)
    facts["load_after"] = os.getloadavg()
    return result


def summary(result: dict) -> None:
    for name in ("first_run", "noop_flow_ephemeral", "noop_flow_server"):
        if name not in result:
            continue
        run = result[name]
        print(f"{name}: wall {run['wall_s']} s; Prefect {run['prefect_total_s']} s "
              f"({run['prefect_share_of_wall']:.1%}), per run without the ephemeral server "
              f"{run['prefect_per_run_s']} s ({run['prefect_per_run_share']:.1%}), in the flow body "
              f"{run['phases_s']['flow_body_prefect']} s ({run['prefect_in_flow_share_of_body']:.1%})")
        print("   " + ", ".join(f"{k} {v}" for k, v in run["phases_s"].items()))
        for s in run["stages"]:
            print(f"   {s['stage']:<12} {s['scope']:<6} wall {s['wall_s']:>8} work {s['work_s']:>8} "
                  f"prefect {s['prefect_s']:>6} tasks {s['task_runs']}")
    print(f"no-op `ltx2 run` (shortcut, no Prefect): {result['noop_cli_s']} s")


if __name__ == "__main__":
    main()
