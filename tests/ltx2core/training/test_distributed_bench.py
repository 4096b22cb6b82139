"""bench/multigpu_bench.py runs (tiny model, CPU, gloo), so the two-GPU benchmark does not break unseen.

Only the fsdp2 mode: each mode is one more torchrun launch (the imports alone take 10-20 s per launch here);
`single` and `ddp` run the same worker without shard_base, on loop paths test_distributed.py covers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def test_the_bench_trains_two_steps_with_fsdp2_on_two_cpu_ranks(tiny: Any, tmp_path: Path) -> None:
    command = [sys.executable, "bench/multigpu_bench.py", "--tiny", "--modes", "fsdp2", "--steps", "2",
               "--warmup", "0", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    (written,) = tmp_path.glob("multigpu-tiny-*.json")
    (record,) = json.loads(written.read_text())["runs"]
    assert record["mode"] == "fsdp2" and record["ranks"] == 2, record
    assert record["s_per_step"] > 0 and record["clips_per_s"] > 0 and record["allreduce_ms"] > 0
    assert len(record["host_rss_gib_per_rank"]) == 2 and record["peak_gib_per_gpu"] == [None, None]  # no GPU
    assert "fsdp2" in done.stdout.split("mode")[-1]  # the table
