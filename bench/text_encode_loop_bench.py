"""Text-embeds benchmark: the stage's encode-and-write loop in a bare process, to split the stage's rate from the
library's (issue #18).

    python3 bench/text_encode_loop_bench.py [--flavour 2.3] [--captions 256] [--rounds 2] [--out FILE]
    .venv/bin/python bench/text_encode_loop_bench.py --tiny     # the same code path on the CPU (a smoke test)

Loads the text encoder as the stage does (`ltx2core.models.loading` of the flavour's full-size random weights, or
the tiny model), warms it up on one chunk, then per round and way encodes the rehearsal's captions
(`ltx2core.rehearsal.caption`, 150-250 tokens) and reports captions/s:

  all at once     one `encode_captions` call (what cache_bench times)
  chunks          the stage's COMMIT_EVERY-caption calls, nothing written
  chunks+writer   ... each chunk written to a fresh Lance store on one writer thread (the stage's loop)
  chunks+inline   ... written in line (the stage before session 14)

each with the encoder's KV cache off (ours since session 16) and on (transformers' default, what the stage had),
alternating. `--cache-bench-model`: the encoder as cache_bench builds it (session 16: the same rates as the
stage's loader, 60-68 captions/s on an H100). Dependencies on the GPU machine: as bench/stage_figures.sh
(`source bench/device_env.sh`). Writes bench/results/text-encode-loop-<flavour>-<date>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WAYS = ["all at once", "chunks", "chunks+writer", "chunks+inline"]


def kv_cache_forced_on(text_encoder: Any) -> Callable[[], None]:
    """Make the encoder build its KV cache whatever it is asked (the stage's encoder before session 16); returns
    the undo."""
    language_model = getattr(text_encoder, "model", text_encoder)
    forward = language_model.forward
    language_model.forward = lambda *args, **kwargs: forward(*args, **(kwargs | {"use_cache": True}))
    return lambda: delattr(language_model, "forward")


def run_way(way: str, captions: list[str], models: dict[str, Any], tag: str) -> float:
    import torch

    from ltx2core.keys import TextModel
    from ltx2core.models.text import ENCODE_BATCH, ENCODE_TOKENS, encode_captions
    from storage.store import Store
    from tasks.text_embeds import COMMIT_EVERY, _write

    device, dtype = models["device"], models["dtype"]
    encoder = {k: models[k] for k in ("tokenizer", "text_encoder", "connectors")}

    def encode(chunk: list[str]) -> list:
        return encode_captions(chunk, **encoder, max_length=models["max_length"], device=device, dtype=dtype,
                               batch_size=ENCODE_BATCH, max_batch_tokens=ENCODE_TOKENS)

    model = TextModel(encoder_fp="bench", max_length=models["max_length"])
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(1) as writer:
        store = Store.open(tmp)
        keyed = [(f"{tag}-{i}", c) for i, c in enumerate(captions)]
        started = time.perf_counter()
        writing: Future | None = None
        if way == "all at once":
            encode(captions)
        else:
            for start in range(0, len(keyed), COMMIT_EVERY):
                chunk = keyed[start:start + COMMIT_EVERY]
                embeds = encode([c for _, c in chunk])
                if writing is not None:
                    writing.result()
                if way == "chunks+writer":
                    writing = writer.submit(_write, store, model, chunk, embeds, False)
                elif way == "chunks+inline":
                    _write(store, model, chunk, embeds, False)
        if writing is not None:
            writing.result()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        return len(captions) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flavour", default="2.3")
    parser.add_argument("--captions", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="the tiny random model on the CPU")
    parser.add_argument("--cache-bench-model", action="store_true",
                        help="the encoder built as bench/cache_bench.py builds it, instead of the stage's loader")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from ltx2core.models import loading
    from ltx2core.models.source import resolve_source
    from ltx2core.rehearsal import caption

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    dtype = torch.float32 if args.tiny else torch.bfloat16
    source = resolve_source("tiny" if args.tiny else "random", args.flavour)
    loaded = time.perf_counter()
    if args.cache_bench_model:
        sys.path.insert(0, str(ROOT / "bench"))
        import cache_bench

        sizes = cache_bench.Sizes(tiny=args.tiny, device=torch.device(device), dtype=dtype, flavour=args.flavour,
                                  **(cache_bench.TINY if args.tiny else cache_bench.FULL))
        models = cache_bench.build_text(sizes)
    else:
        models = dict(tokenizer=loading.load_tokenizer(source),
                      text_encoder=loading.load_text_encoder(source, dtype=dtype, device=device),
                      connectors=loading.load_connectors(source, dtype=dtype, device=device))
    models |= dict(device=device, dtype=dtype, max_length=source.text_max_length)
    print(f"{source.label} on {device}: loaded in {time.perf_counter() - loaded:.1f} s", flush=True)
    captions = [caption(seed) for seed in range(args.captions)]
    run_way("chunks", captions[:64], models, "warm-up")

    rates: dict[str, list[float]] = {}
    for rnd in range(args.rounds):
        for way in WAYS:
            for cache in ("off", "on"):
                undo = kv_cache_forced_on(models["text_encoder"]) if cache == "on" else None
                try:
                    rate = run_way(way, captions, models, f"{rnd}-{way}-{cache}")
                finally:
                    if undo is not None:
                        undo()
                rates.setdefault(f"{way}, KV cache {cache}", []).append(round(rate, 1))
                print(f"round {rnd}  {way:14s} KV cache {cache:3s}  {rate:6.1f} captions/s", flush=True)
    medians = {k: round(statistics.median(v), 1) for k, v in rates.items()}
    result = {"date": date.today().isoformat(), "flavour": args.flavour, "device": device,
              "card": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
              "captions": args.captions, "captions_per_s": rates, "medians": medians}
    out = args.out or ROOT / "bench" / "results" / f"text-encode-loop-{args.flavour}-{result['date']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(medians, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
