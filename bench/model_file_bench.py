"""Loading the transformer from a single checkpoint file: time and host memory at full size.

Writes the full-size transformer of a release (random-free: uninitialised bf16 tensors, the size is what matters)
as one `.safetensors` file in Lightricks' original layout (`model.diffusion_model.` names), then loads it in a fresh
process per row and reports wall seconds, the process's peak resident host memory and peak GPU memory:

  ours       ltx2core.models.single_file.load_component straight onto the GPU (the train stage loads to the
             host: `--device cpu`)
  diffusers  (2.0 only, the baseline) `LTX2VideoTransformer3DModel.from_single_file` on the same file with the same
             config, then `.to(device)`; diffusers maps 2.0 files only (../shared/research/ltx2_flavours.md, 5)

The file is in the page cache when the rows run (it was just written), so the rows compare the loaders, not disks.

  python3 bench/model_file_bench.py --flavour 2.0 --dir /tmp/files     # writes ~35 GiB there
  python3 bench/model_file_bench.py --flavour 2.3 --fp8 --dir /tmp/files   # an FP8 file: kept vs upcast
  python3 bench/model_file_bench.py --tiny                             # the tiny model on the CPU (smoke test)

Writes JSON to $OUT if set, else bench/results/model-file-<flavour>-<device>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def full_config(flavour: str) -> dict:
    from ltx2core.models import full_size

    return full_size.transformer(flavour)


def tiny_config(flavour: str) -> dict:
    from ltx2core.models.source import component_config, resolve_source

    return component_config(resolve_source("tiny", flavour), "transformer")


def write_file(config: dict, path: Path, fp8: bool = False) -> dict:
    import torch
    from accelerate import init_empty_weights
    from diffusers import LTX2VideoTransformer3DModel
    from safetensors.torch import save_file

    from ltx2core.models.original_keys import PREFIX, to_original

    with init_empty_weights():
        model = LTX2VideoTransformer3DModel.from_config(config)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    started = time.perf_counter()
    tensors = {}
    for name, original in to_original(shapes).items():
        if fp8 and name.startswith("transformer_blocks.") and name.endswith(".weight") and len(shapes[name]) == 2:
            # as Lightricks' FP8 files: float8_e4m3fn block weights with a float32 scale each
            tensors[PREFIX + original] = torch.zeros(shapes[name], dtype=torch.float8_e4m3fn)
            tensors[PREFIX + original + "_scale"] = torch.ones(())
        else:
            tensors[PREFIX + original] = torch.empty(shapes[name], dtype=torch.bfloat16)
    save_file(tensors, str(path))
    return {"file_gib": round(path.stat().st_size / 2**30, 2), "tensors": len(tensors),
            "write_s": round(time.perf_counter() - started, 1)}


class AnonPeak:
    """The peak anonymous (not file-backed) resident memory of this process, sampled every 20 ms: what a load
    costs beyond the page cache of the memory-mapped file."""

    def __init__(self) -> None:
        import threading

        self.peak, self.done = 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) * 1024)
            time.sleep(0.02)

    def stop(self) -> float:
        self.done = True
        self.thread.join()
        return round(self.peak / 2**30, 2)


def load_row(row: str, path: Path, config_path: Path, device: str) -> dict:
    """One row, in this (fresh) process."""
    import torch
    from diffusers import LTX2VideoTransformer3DModel

    from ltx2core.models.single_file import load_component

    config = json.loads(config_path.read_text())
    anon = AnonPeak()
    started = time.perf_counter()  # after the imports
    if row == "ours":
        model = load_component(path, "transformer", LTX2VideoTransformer3DModel, config, dtype=torch.bfloat16,
                               device=device)
    elif row.startswith("fp8-"):  # the train stage's path with base_model_precision fp8-e4m3fn: host, then blocks
        from ltx2core.training.fp8 import apply_fp8_base

        model = load_component(path, "transformer", LTX2VideoTransformer3DModel, config, dtype=torch.bfloat16,
                               device="cpu", keep_fp8=row == "fp8-kept")
        model.requires_grad_(False)  # the base is frozen there (add_lora); fp8 converts frozen layers only
        fp8_saved_gib = apply_fp8_base(model, device=device) / 2**30
        model.to(device)
    else:
        model = LTX2VideoTransformer3DModel.from_single_file(
            str(path), config=str(config_path.parent), torch_dtype=torch.bfloat16, local_files_only=True).to(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    fp8 = {"fp8_saved_gib": round(fp8_saved_gib, 4)} if row.startswith("fp8-") else {}
    return {"row": row, "device": device, "load_s": round(seconds, 1), "params": params, **fp8,
            "peak_host_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "peak_host_anon_gib": anon.stop(),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flavour", default="2.3", choices=["2.0", "2.3", "2.5"])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--fp8", action="store_true", help="an FP8 file (block weights float8 with scales): "
                        "kept as fp8 vs upcast then quantized again, each through apply_fp8_base")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row in this process
    args = parser.parse_args()
    path = args.dir / f"ltx-{args.flavour}{'-tiny' if args.tiny else ''}{'-fp8' if args.fp8 else ''}.safetensors"
    config_path = args.dir / f"config-{args.flavour}{'-tiny' if args.tiny else ''}" / "transformer" / "config.json"
    if args.row:
        print(json.dumps(load_row(args.row, path, config_path, args.device)))
        return

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = tiny_config(args.flavour) if args.tiny else full_config(args.flavour)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps({"_class_name": "LTX2VideoTransformer3DModel", **config}))
    facts = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "flavour": args.flavour,
             "mode": "tiny" if args.tiny else "full size, uninitialised bf16 weights", "date": str(date.today()),
             "torch": torch.__version__, "cpus": os.cpu_count(), "fp8_file": args.fp8,
             **write_file(config, path, fp8=args.fp8)}
    print(json.dumps(facts), flush=True)
    plan = [("ours", device)] + ([("ours", "cpu")] if device != "cpu" else [])  # the train stage loads to the host
    plan += [("diffusers", device)] if args.flavour == "2.0" else []
    if args.fp8:
        plan = [("fp8-kept", device), ("fp8-upcast", device)]
    rows = []
    for row, where in plan:
        done = subprocess.run([sys.executable, __file__, "--flavour", args.flavour, "--dir", str(args.dir),
                               "--device", where, "--row", row, *(["--tiny"] if args.tiny else []),
                               *(["--fp8"] if args.fp8 else [])],
                              capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {
            "row": row, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}
        rows.append(result)
        print(json.dumps(result), flush=True)
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    slug = "tiny-cpu" if args.tiny else facts["device"].split()[1].lower() if device == "cuda" else "cpu"
    target = out / f"model-file-{args.flavour}{'-fp8' if args.fp8 else ''}-{slug}-{facts['date']}.json"
    target.write_text(json.dumps({"facts": facts, "rows": rows}, indent=1) + "\n")
    print(f"wrote {target}")
    if not args.tiny:
        path.unlink()  # ~35 GiB


if __name__ == "__main__":
    main()
