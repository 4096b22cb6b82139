"""Dask benchmark of the GPU stages (issue #18): text-embeds and latents of full-size random weights over a local
cluster of one GPU worker (`--resources GPU=1`, where their shards go) beside CPU workers, against the same stages
without a cluster (the flow's own threads, one model load each).

    python3 bench/dask_gpu_bench.py [--flavour 2.3] [--clips 48] [--cpu-workers 2] [--repeats 2] [--out FILE]
    .venv/bin/python bench/dask_gpu_bench.py --tiny      # the same code path on the CPU (a smoke test)

Clips are 768x512x121 at 25 fps (the rehearsal's shape; --tiny: 96x64x17), each with its own caption; probe,
filter, bucket and captions run once without the cluster, then each round copies that store and runs text-embeds
and latents per setting, the settings alternating. A row is a stage's items, its own seconds, of them the seconds
its shards spent loading models (`StageReport.load_seconds`, summed over shards: a cluster cuts a stage into
shards and each loads its models), and items/s with and without those loads. Dependencies on the GPU machine: as
bench/stage_figures.sh (`source bench/device_env.sh`). Writes bench/results/dask-gpu-<flavour>-<date>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dask_bench import TUNED, local_cluster, measure  # noqa: E402

SHAPES = {False: {"width": 768, "height": 512, "num_frames": 121}, True: {"width": 96, "height": 64, "num_frames": 17}}
PREPARE = ["probe", "filter", "bucket", "captions"]


def write_dataset(root: Path, clips: int, tiny: bool, flavour: str) -> tuple[str, str]:
    """`clips` distinct clips with a caption file each (the rehearsal's), and the config + databackend that train on
    them."""
    from flows.rehearse import write_clips
    from ltx2core.rehearsal import ClipShape

    shape = SHAPES[tiny]
    folder = write_clips(root / "clips", ClipShape(shape["width"], shape["height"], shape["num_frames"], 25), clips)
    config, backend = root / "config.json", root / "multidatabackend.json"
    config.write_text(json.dumps({"model_family": "ltxvideo2", "model_flavour": flavour,
                                  "pretrained_model_name_or_path": "tiny-random" if tiny else "random",
                                  "mixed_precision": "no" if tiny else "bf16", "output_dir": str(root / "output")}))
    backend.write_text(json.dumps([
        {"id": "clips", "type": "local", "dataset_type": "video", "instance_data_dir": str(folder),
         "caption_strategy": "textfile", "resolution": shape["height"],
         "video": {"num_frames": shape["num_frames"], "min_frames": shape["num_frames"], "frame_rate": 25}},
        {"id": "text-embeds", "dataset_type": "text_embeds", "default": True, "type": "local"}]))
    return str(config), str(backend)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flavour", default="2.3")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--cpu-workers", type=int, default=2, help="CPU workers beside the GPU worker")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="the tiny random model on the CPU (a smoke test)")
    parser.add_argument("--out")
    args = parser.parse_args()

    from flows.pipeline import pipeline

    t_start = time.time()
    rows = []
    cluster_label = f"dask, 1 GPU worker + {args.cpu_workers} CPU"
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        tmp = Path(tmp)
        os.environ.setdefault("LTX2_HOME", str(tmp / "ltx2-home"))  # workers inherit it: the same model folder
        data = write_dataset(tmp / "data", args.clips, args.tiny, args.flavour)
        prepared = tmp / "prepared"
        pipeline(config=data[0], databackend=data[1], storage=str(prepared), stages=PREPARE)
        address = stack.enter_context(local_cluster(args.cpu_workers + 1, tmp / "dask", TUNED, gpu_workers=1))
        settings = {"no cluster (threads)": None, cluster_label: address}
        for i, (label, where) in enumerate(settings.items()):  # imports and first task runs, on a copy
            pipeline(config=data[0], databackend=data[1], storage=str(shutil.copytree(prepared, tmp / f"warm-{i}")),
                     stages=["text-embeds", "latents"], dask_address=where)
        for round_ in range(args.repeats):
            for i, (label, where) in enumerate(settings.items()):
                store = shutil.copytree(prepared, tmp / f"round-{round_}-{i}")
                for stage in ("text-embeds", "latents"):
                    rows.append(measure(label, stage, data, store, where))

    def median(column: str) -> dict[str, float | None]:
        """Per setting and stage; rounds without a figure (loads that overlapped the work) are left out."""
        figures = {(label, stage): [r[column] for r in rows if (r["setting"], r["stage"]) == (label, stage)
                                    and r[column] is not None]
                   for label in settings for stage in ("text-embeds", "latents")}
        return {f"{label} / {stage}": statistics.median(v) if v else None for (label, stage), v in figures.items()}

    result = {"date": date.today().isoformat(), "machine": f"{platform.node()} {os.cpu_count()} cores",
              "device": _device(), "command": " ".join(["python3 bench/dask_gpu_bench.py", *sys.argv[1:]]),
              "flavour": args.flavour, "model": "tiny random" if args.tiny else "full-size random",
              "clips": args.clips, "shape": SHAPES[args.tiny], "wall_s": round(time.time() - t_start, 1),
              "median_per_s": median("per_s"), "median_per_s_loaded": median("per_s_loaded"), "rows": rows}
    print("median items/s:", result["median_per_s"])
    print("median items/s past the models' loads:", result["median_per_s_loaded"])
    device = "cpu" if args.tiny else "gpu"
    out = Path(args.out or ROOT / "bench" / "results" / f"dask-{device}-{args.flavour}-{result['date']}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    main()
