r"""Dask worker scaling of the cache stages' CPU work alone, for a machine with more cores than this one.

bench/dask_bench.py measures the real stages (Prefect flow, Lance store) over 1 and 2 local workers, but on this
2-core machine two workers share the cores with the scheduler and the flow. This benchmark runs what a stage's
shard does in a Dask worker, and nothing else, so that it can run where prefect and lancedb cannot be installed
(the lent GPU machine, 16 cores; their wheels are too large to carry):
  probe    ltx2core.media.pool.examine per file (content hash + probe), as tasks/probe.probe_shard in a worker
  decode   ltx2core.media.decode.decode_frames per clip: 41 frames of a 640x360 clip fitted to the 64x64 bucket
           (uint8), as the latents stage decodes (the VAE encode left out: on a GPU machine the GPU does it)
One `dask scheduler` and N `dask worker --nthreads 1` on 127.0.0.1 (bench/dask_bench.py's cluster), items split
into 2N shards (one Dask task each), rate = items / (submit -> last result), best of --repeats after a warm-up.
No store writes, no Prefect task runs: the figures bound what the stages can reach on that many cores.

    .venv/bin/python bench/dask_workers_bench.py --workers 1,2 --files 400 --clips 16    # here (a smoke test)
GPU box, with carry [".whl"] (.whl holding av, and dask and distributed with the dependencies the image lacks):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; python3 bench/dask_workers_bench.py
Writes JSON to $OUT if set, else bench/results/dask-workers-<cores>cores-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.dask_bench import CLIP, TUNED, local_cluster, make_latent_clips  # noqa: E402
from ltx2core.media.decode import ClipPlan, decode_frames  # noqa: E402
from ltx2core.media.pool import examine  # noqa: E402
from ltx2core.media.synth import make_many_clips  # noqa: E402

SIDE = 64  # the bucket: 64x64, 41 frames
PLAN = ClipPlan(start_frame=0, num_frames=41, frame_rate=Fraction(CLIP["fps"]),
                resize_width=round(CLIP["width"] * SIDE / CLIP["height"]), resize_height=SIDE,
                crop_left=(round(CLIP["width"] * SIDE / CLIP["height"]) - SIDE) // 2, crop_top=0, width=SIDE,
                height=SIDE)


def probe_files(paths: list[str]) -> int:
    return sum(examine(path)[0] is not None for path in paths)


def decode_clips(paths: list[str]) -> int:
    return sum(decode_frames(path, PLAN).shape[0] == PLAN.num_frames for path in paths)


WORK = {"probe": probe_files, "decode": decode_clips}


def run_once(address: str, stage: str, items: list[str], shards: int) -> float:
    from distributed import Client

    parts = [items[i::shards] for i in range(shards)]
    with Client(address, set_as_default=False) as client:
        started = time.perf_counter()
        done = sum(client.gather(client.map(WORK[stage], parts, pure=False)))
        seconds = time.perf_counter() - started
    if done != len(items):
        raise RuntimeError(f"{stage}: {done} of {len(items)} items came back right")
    return len(items) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated worker counts")
    parser.add_argument("--files", type=int, default=4000, help="files to probe")
    parser.add_argument("--clips", type=int, default=128, help="640x360 clips to decode")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    cores = os.cpu_count() or 1
    facts = {"date": date.today().isoformat(), "machine": f"{platform.node()}, {cores} cores",
             "command": " ".join(["bench/dask_workers_bench.py", *sys.argv[1:]]), "files": args.files,
             "clips": args.clips, "clip": f"{CLIP['width']}x{CLIP['height']}, 41 frames decoded to {SIDE}x{SIDE}",
             "repeats": args.repeats}
    rates: dict[str, dict[int, list[float]]] = {"probe": {}, "decode": {}}
    with tempfile.TemporaryDirectory(prefix="dask-workers-") as tmp:
        t0 = time.perf_counter()
        files = [str(p) for p in make_many_clips(Path(tmp) / "probe", args.files)]
        make_latent_clips(Path(tmp) / "clips", args.clips, first_seed=0)
        clips = sorted(str(p) for p in (Path(tmp) / "clips").glob("*.mp4"))
        facts["make_inputs_s"] = round(time.perf_counter() - t0, 1)
        for workers in counts:
            with local_cluster(workers, Path(tmp) / f"logs{workers}", TUNED) as address:
                for stage, items in (("probe", files), ("decode", clips)):
                    run_once(address, stage, items[: max(2 * workers, len(items) // 10)], 2 * workers)  # warm-up
                    rates[stage][workers] = [run_once(address, stage, items, 2 * workers)
                                             for _ in range(args.repeats)]
                    print(f"{workers} workers  {stage:6}  best {max(rates[stage][workers]):8.1f} items/s  "
                          f"({', '.join(f'{r:.1f}' for r in rates[stage][workers])})", flush=True)
    best = {stage: {w: round(max(r), 1) for w, r in per.items()} for stage, per in rates.items()}
    base = counts[0]
    result = {**facts, "best_per_s": best,
              "speedup_vs_first": {stage: {w: round(per[w] / per[base], 2) for w in per}
                                   for stage, per in best.items()},
              "all_per_s": {stage: {w: [round(r, 1) for r in rs] for w, rs in per.items()}
                            for stage, per in rates.items()}}
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"dask-workers-{cores}cores-{facts['date']}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["speedup_vs_first"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
