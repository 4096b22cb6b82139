"""Dask benchmark: the CPU-bound cache work (probe stage; latents stage = clip decode + tiny VAE on the CPU) with
1 and 2 local Dask workers; for reference, one worker left with Dask's malloc setting and no cluster at all.

    .venv/bin/python bench/dask_bench.py [--files 4000] [--clips 96] [--workers 1,2] [--repeats 2] [--budget-s S]
                                         [--out FILE]

One `dask scheduler` with N `dask worker --nthreads 1` on 127.0.0.1 per setting, started from the repository
root as the README says (TUNED below); all stay up for the whole run and each is warmed by a small run of both
stages (imports, model load, first Prefect task runs). Then, in rounds that alternate the settings (the load
from other people's work changes over minutes): the probe stage over --files new files (distinct bytes,
`make_many_clips`) and the latents stage over --clips clips (probe/filter/bucket done once beforehand, without
the cluster), each on a fresh store. Rate = items / the stage's own seconds (`StageReport.seconds`: from reading
its work to the last commit); the best and the median round per setting are compared. Each measurement also
records the workers' CPU seconds per item (all their threads), how busy the whole machine's cores were
(/proc/stat) and the 1-minute load average before and after: other people's work on the machine shows there.
Prints a line per measurement; writes bench/results/dask-cpu-<date>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
DASK = [sys.executable, "-m", "dask"]  # the `dask` command, also where only the package is on PYTHONPATH
# As the README starts workers: without the nanny's MALLOC_TRIM_THRESHOLD_, which also pins glibc's mmap threshold
# and made PyAV's probe and decode 2x slower in worker processes here. DASK_DEFAULT keeps Dask's setting.
TUNED = {"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": '{"MALLOC_TRIM_THRESHOLD_": None}'}
DASK_DEFAULT: dict[str, str] = {}
# Latents clips: 640x360 sources, the first 41 of their frames decoded and resized to a small bucket, so that the
# decode (the CPU's part of the stage on a GPU machine) outweighs the tiny VAE.
CLIP = {"width": 640, "height": 360, "fps": 25}
RESOLUTION = 64


def write_configs(root: Path, folder: Path, name: str) -> tuple[str, str]:
    config, backend = root / f"{name}.config.json", root / f"{name}.backend.json"
    config.write_text(json.dumps({"model_family": "ltxvideo2", "pretrained_model_name_or_path": "tiny",
                                  "output_dir": str(root / "output")}))
    backend.write_text(json.dumps([{"id": name, "type": "local", "dataset_type": "video",
                                    "instance_data_dir": str(folder), "caption_strategy": "filename",
                                    "resolution": RESOLUTION, "video": {"num_frames": 41, "min_frames": 41}}]))
    return str(config), str(backend)


def make_latent_clips(folder: Path, n: int, first_seed: int) -> None:
    from ltx2core.media.synth import write_clip

    folder.mkdir(parents=True)
    for i in range(n):
        # distinct bytes by seed; lengths cycle (41 frames are decoded), so 320 clips cost as much to write as 8 do
        write_clip(folder / f"clip{i:04d}.mp4", num_frames=41 + i % 8, seed=first_seed + i, **CLIP)


@contextmanager
def local_cluster(workers: int, logs: Path, env: dict[str, str], gpu_workers: int = 0):
    """`dask scheduler` + `workers` x `dask worker --nthreads 1`, on 127.0.0.1, `env` added; stopped on exit. The
    first `gpu_workers` offer `--resources GPU=1` (GPU i each), the others see no GPU."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    logs.mkdir(parents=True, exist_ok=True)

    def start(args: list, name: str, more: dict[str, str] | None = None) -> subprocess.Popen:
        with (logs / f"{name}.log").open("wb") as out:
            return subprocess.Popen([str(a) for a in args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    env=os.environ | env | (more or {}))

    procs = [start([*DASK, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"], "scheduler")]
    try:
        for i in range(workers):
            gpu = ["--resources", "GPU=1"] if i < gpu_workers else []
            procs.append(start([*DASK, "worker", address, "--nthreads", 1, "--no-dashboard", "--name", f"w{i}",
                                "--local-directory", logs / f"w{i}", *gpu], f"w{i}",
                               {"CUDA_VISIBLE_DEVICES": str(i) if gpu else ""} if gpu_workers else None))
        from distributed import Client

        with Client(address, timeout=120, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=300)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def machine_cpu() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine since boot, in jiffies (/proc/stat; steal counts as busy)."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return user + nice + system + irq + softirq + steal, user + nice + system + idle + iowait + irq + softirq + steal


def workers_cpu_s(address: str | None) -> float | None:
    """CPU seconds used so far by the worker processes of the cluster at `address` (all their threads)."""
    if address is None:
        return None
    import resource

    from distributed import Client

    with Client(address, set_as_default=False) as client:
        usage = client.run(resource.getrusage, resource.RUSAGE_SELF).values()
    return sum(u.ru_utime + u.ru_stime for u in usage)


def measure(setting: str, stage: str, config: tuple[str, str], store: Path, address: str | None) -> dict:
    """One stage run; its rate, the workers' CPU seconds per item and how busy the whole machine was."""
    from flows.pipeline import pipeline

    load_before, cpu_before, machine_before = os.getloadavg()[0], workers_cpu_s(address), machine_cpu()
    [report] = pipeline(config=config[0], databackend=config[1], storage=str(store), stages=[stage],
                        dask_address=address)
    machine_after, cpu_after = machine_cpu(), workers_cpu_s(address)
    busy = (machine_after[0] - machine_before[0]) / (machine_after[1] - machine_before[1])
    loaded = report["seconds"] - report["load_seconds"]  # past loading models (GPU stages; 0 for the probe)
    row = {"setting": setting, "stage": stage, "items": report["done"], "seconds": round(report["seconds"], 2),
           "per_s": round(report["done"] / report["seconds"], 1), "load_seconds": round(report["load_seconds"], 2),
           "per_s_loaded": round(report["done"] / loaded, 1) if loaded > 0 else None,
           "worker_cpu_ms_per_item": None if address is None else
           round(1000 * (cpu_after - cpu_before) / report["done"], 1),
           "machine_busy_pct": round(100 * busy), "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    print(f"{setting:>30}  {stage:8} {row['items']:5d} items {row['seconds']:7.2f} s {row['per_s']:8.1f}/s  "
          f"(loads {row['load_seconds']} s)  "
          f"workers {row['worker_cpu_ms_per_item']} cpu-ms/item  machine {row['machine_busy_pct']}% busy  "
          f"load {row['load_1min']}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=4000, help="files for the probe stage")
    parser.add_argument("--clips", type=int, default=96, help="clips for the latents stage")
    parser.add_argument("--workers", default="1,2", help="Dask worker counts to measure")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over every setting (the load changes)")
    parser.add_argument("--no-local", action="store_true", help="skip the runs without a cluster")
    parser.add_argument("--out", help="results file (default bench/results/dask-cpu-<date>.json)")
    parser.add_argument("--no-dask-default", action="store_true",
                        help="skip the 1-worker cluster with Dask's own MALLOC_TRIM_THRESHOLD_")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no round that the last one says would end past this many seconds from the start "
                             "(a GPU machine's call has 10 minutes; the results file is rewritten after each run)")
    args = parser.parse_args()

    from flows.pipeline import pipeline
    from ltx2core.media.synth import make_many_clips
    from ltx2core.models.source import resolve_source

    t_start = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as clusters:
        tmp = Path(tmp)
        os.environ.setdefault("LTX2_HOME", str(tmp / "ltx2-home"))  # workers inherit it: the same tiny model
        resolve_source("tiny")  # builds the tiny model once, before any worker looks for it
        make_many_clips(tmp / "probe", args.files)
        make_latent_clips(tmp / "latents", args.clips, first_seed=100)
        make_latent_clips(tmp / "warm", 6, first_seed=0)
        data = {name: write_configs(tmp, tmp / name, name) for name in ("probe", "latents", "warm")}
        prepared = tmp / "latents-prepared"  # probe/filter/bucket done once; each latents run starts from a copy
        pipeline(config=data["latents"][0], databackend=data["latents"][1], storage=str(prepared),
                 stages=["probe", "filter", "bucket"])
        settings = {} if args.no_local else {"no cluster (threads)": None}
        # Every cluster stays up for the whole run (idle workers cost nothing), so the rounds alternate
        # settings and each setting sees the machine's changing load.
        for n in [int(w) for w in args.workers.split(",")]:
            settings[f"dask, {n} worker{'s' if n > 1 else ''}"] = clusters.enter_context(
                local_cluster(n, tmp / f"dask-{n}", TUNED))
        if not args.no_dask_default:
            settings["dask, 1 worker, Dask's malloc"] = clusters.enter_context(
                local_cluster(1, tmp / "dask-default", DASK_DEFAULT))
        for i, (label, address) in enumerate(settings.items()):  # imports, model load, first task runs
            pipeline(config=data["warm"][0], databackend=data["warm"][1], storage=str(tmp / f"warm-{i}"),
                     stages=["probe", "filter", "bucket", "latents"], dask_address=address)
        out = Path(args.out or ROOT / "bench" / "results" / f"dask-cpu-{date.today().isoformat()}.json")
        for round_ in range(args.repeats):
            began = time.time()
            for i, (label, address) in enumerate(settings.items()):
                rows.append(measure(label, "probe", data["probe"], tmp / f"probe-{round_}-{i}", address))
                write_result(out, args, rows, t_start)
                store = shutil.copytree(prepared, tmp / f"latents-{round_}-{i}")
                rows.append(measure(label, "latents", data["latents"], store, address))
                write_result(out, args, rows, t_start)
            if args.budget_s is not None and time.time() + (time.time() - began) - t_start > args.budget_s:
                print(f"stopping after round {round_ + 1}: another would end past --budget-s {args.budget_s:g}")
                break
    result = write_result(out, args, rows, t_start)
    print("best rates:", result["best_per_s"])
    print("speed-up over 1 worker (best of rounds):", result["speedup_vs_1_worker_best"])
    print("speed-up over 1 worker (median of rounds):", result["speedup_vs_1_worker_median"])
    print(f"wrote {out}")


def write_result(out: Path, args: argparse.Namespace, rows: list[dict], t_start: float) -> dict:
    """The results so far, summarised and (re)written to `out`: a run cut short keeps every measurement it made."""
    rates: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        rates.setdefault((r["setting"], r["stage"]), []).append(r["per_s"])
    best = {key: max(values) for key, values in rates.items()}
    median = {key: statistics.median(values) for key, values in rates.items()}

    def speedup(of: dict[tuple[str, str], float]) -> dict[str, dict[str, float]]:
        """Each cluster's rate over the 1-worker cluster's, per stage (what both have measured so far)."""
        return {setting: {stage: round(rate / of[("dask, 1 worker", stage)], 2)
                          for (s, stage), rate in of.items() if s == setting and ("dask, 1 worker", stage) in of}
                for setting in dict.fromkeys(s for s, _ in of) if setting.startswith("dask, ")}

    result = {
        "date": date.today().isoformat(), "machine": f"{platform.node()} {os.cpu_count()} cores, no GPU",
        "command": " ".join([".venv/bin/python bench/dask_bench.py", *sys.argv[1:]]),
        "files": args.files, "clips": args.clips, "clip": CLIP | {"frames": "41-48 (41 decoded)",
                                                                  "resolution": RESOLUTION},
        "model": "tiny (random weights, CPU)", "wall_s": round(time.time() - t_start, 1),
        "best_per_s": {f"{s} / {st}": v for (s, st), v in best.items()},
        "median_per_s": {f"{s} / {st}": v for (s, st), v in median.items()},
        "speedup_vs_1_worker_best": speedup(best), "speedup_vs_1_worker_median": speedup(median), "rows": rows,
    }
    out.parent.mkdir(exist_ok=True)
    partial = out.with_name(out.name + ".part")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(out)
    return result


if __name__ == "__main__":
    main()
