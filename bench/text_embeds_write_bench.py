"""Store benchmark: what writing one chunk of full-size text embeddings costs, merged (upsert) or appended.

    .venv/bin/python bench/text_embeds_write_bench.py [--chunks 8] [--rows 64] [--tokens 202] [--out FILE]

The text-embeds stage commits COMMIT_EVERY captions at a time, each ~2.5 MB of features at full size (2.3's
connectors: 6,144 bf16 channels a token; 202 tokens, cache_bench's mean caption). Alternating, on one growing
table: the stage's own writer (`tasks.text_embeds._write`: the tensors to records, then Arrow, then Lance) with
`Store.upsert` (a Lance merge on the key, a forced run's) and with `Store.insert_missing` (a key lookup, then an
insert-only merge), each with the merge's source in one record batch (as before session 16) and in batches of
`storage.store.MERGE_BATCH_BYTES`. Prints the medians in ms per caption; writes
bench/results/text-embeds-write-cpu-<date>.json (or --out).
The stage writes on a thread beside the encoder, so what matters on a GPU is that this stays under the encoder's
time per caption (~15 ms on an H100).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHANNELS = 6144


def chunk_of(tag: str, count: int, tokens: int) -> tuple[list[tuple[str, str]], list]:
    """(key, caption) pairs and their embeddings, as the stage hands them to its writer."""
    import torch

    from ltx2core.models.text import CaptionEmbedding

    keyed = [(f"{tag}-{i}", "a caption " * 20) for i in range(count)]
    return keyed, [CaptionEmbedding(torch.randn(tokens, CHANNELS).to(torch.bfloat16)) for _ in keyed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=8, help="chunks written per way (alternating)")
    parser.add_argument("--rows", type=int, default=64, help="captions per chunk (the stage's COMMIT_EVERY)")
    parser.add_argument("--tokens", type=int, default=202, help="tokens per caption")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import storage.store
    from ltx2core.keys import TextModel
    from storage.store import Store
    from tasks.text_embeds import _write

    batched = storage.store.MERGE_BATCH_BYTES
    ways = {f"{write}, {batch}": (write == "upsert", size)
            for batch, size in [("one batch", 2**62), (f"{batched >> 20} MiB batches", batched)]
            for write in ("upsert", "insert_missing")}
    ms: dict[str, list[float]] = {way: [] for way in ways}
    model = TextModel(encoder_fp="bench", max_length=1024)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(tmp)
        for i in range(len(ways) * args.chunks):
            way = list(ways)[i % len(ways)]
            replace, storage.store.MERGE_BATCH_BYTES = ways[way]
            keyed, embeds = chunk_of(f"c{i}", args.rows, args.tokens)
            started = time.perf_counter()
            _write(store, model, keyed, embeds, replace=replace)  # the stage's writer: records, Arrow, Lance
            ms[way].append(1000 * (time.perf_counter() - started) / args.rows)
    medians = {way: round(statistics.median(v), 2) for way, v in ms.items()}
    mb = args.tokens * CHANNELS * 2 / 2**20
    print(f"{args.rows} captions a chunk, {mb:.2f} MiB each; median ms per caption: {medians}")
    result = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "rows_per_chunk": args.rows, "tokens": args.tokens, "mib_per_caption": mb,
              "ms_per_caption": {way: [round(x, 2) for x in v] for way, v in ms.items()}, "medians": medians}
    out = args.out or ROOT / "bench" / "results" / f"text-embeds-write-cpu-{result['date']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
