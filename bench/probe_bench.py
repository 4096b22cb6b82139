"""Probe benchmark: our probe stage vs one ffprobe subprocess per file, and a no-op rerun of four stages.

    .venv/bin/python bench/probe_bench.py [--files 1000] [--ffprobe-files 200]

Everything is measured in this one run on this machine: the figures are comparable with each other,
not with another machine. Prints a table and writes bench/results/probe-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


def write_configs(root: Path, folder: Path) -> tuple[Path, Path]:
    config, backend = root / "config.json", root / "multidatabackend.json"
    config.write_text(json.dumps({"model_family": "ltxvideo2", "pretrained_model_name_or_path": "tiny"}))
    backend.write_text(json.dumps([{"id": "bench", "type": "local", "dataset_type": "video",
                                    "instance_data_dir": str(folder), "caption_strategy": "filename",
                                    "resolution": 64, "video": {"num_frames": 9, "min_frames": 9}}]))
    return config, backend


def bare_pyav_rate(paths: list[Path]) -> float:
    import av

    t0 = time.perf_counter()
    for p in paths:
        with av.open(str(p)) as c:
            c.streams.video[0].frames
    return len(paths) / (time.perf_counter() - t0)


def ffprobe_rate(paths: list[Path]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                        "stream=width,height,nb_frames,avg_frame_rate,duration", "-of", "json", str(p)],
                       check=True, capture_output=True)
    return len(paths) / (time.perf_counter() - t0)


def probe_stage_rate(folder: Path, warm_folder: Path, store: Path) -> tuple[float, float, int]:
    """(seconds to start Prefect's ephemeral API, steady-state files/s of the probe stage, files probed).

    A first stage run over a small separate folder starts the probe workers' fork server and warms the
    page cache of the Python modules; the measured run then sees what every later shard sees.
    """
    from prefect import flow

    from tasks.probe import run

    @flow(name="bench-probe")
    def probe_only() -> dict:
        run(str(store), [str(warm_folder)])
        t0 = time.perf_counter()
        report = run(str(store), [str(folder)])
        return {"seconds": time.perf_counter() - t0, "done": report.done}

    @flow(name="bench-warmup")
    def warmup() -> None:
        pass

    t0 = time.perf_counter()
    warmup()  # starts the ephemeral API server: reported apart from the stage's steady state
    startup = time.perf_counter() - t0
    out = probe_only()
    return startup, out["done"] / out["seconds"], out["done"]


def noop_rerun_seconds(config: Path, backend: Path, store: Path) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "flows.cli", "run", "--config", str(config), "--databackend", str(backend),
           "--storage", str(store)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return first, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--ffprobe-files", type=int, default=200, help="ffprobe is slow: time a subset")
    args = parser.parse_args()
    if not shutil.which("ffprobe"):
        sys.exit("ffprobe not found: run `make ffmpeg` (installs Debian's ffmpeg)")

    from ltx2core.media.synth import make_many_clips

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = make_many_clips(tmp / "clips", args.files)
        made = time.perf_counter() - t0
        make_many_clips(tmp / "warm", 64, seed=1)
        pyav = bare_pyav_rate(paths)
        ffprobe = ffprobe_rate(paths[: args.ffprobe_files])
        startup, ours, probed = probe_stage_rate(tmp / "clips", tmp / "warm", tmp / "store")
        config, backend = write_configs(tmp, tmp / "clips")
        first_run, noop = noop_rerun_seconds(config, backend, tmp / "store-cli")

    result = {
        "date": date.today().isoformat(), "machine": f"{platform.node()} {os.cpu_count()} cores",
        "files": args.files, "generate_s": round(made, 1),
        "probe_stage_files_per_s": round(ours), "probe_stage_files": probed,
        "ffprobe_subprocess_files_per_s": round(ffprobe, 1), "ffprobe_files": args.ffprobe_files,
        "speedup_vs_ffprobe": round(ours / ffprobe, 1), "bare_pyav_open_files_per_s": round(pyav),
        "prefect_startup_s": round(startup, 2),
        "cli_first_run_4_stages_s": round(first_run, 2), "cli_noop_rerun_4_stages_s": round(noop, 2),
    }
    out = ROOT / "bench" / "results" / f"probe-{result['date']}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result))
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
