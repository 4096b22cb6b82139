"""Stage `text-embeds`: compact Gemma-3 features of every distinct caption, keyed by content.

Recipe: the captions of kept samples -> keys hash(caption, encoder fingerprint, max length) missing from
`text_embeds` -> shards (one locally; one per GPU worker of a Dask cluster) -> per shard, load the
tokenizer, text encoder and connectors once -> encode in length-bucketed batches, shortest captions first ->
write each chunk's rows on a writer thread while the encoder goes on with the next.
"""

from __future__ import annotations

import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ltx2core.config.databackend import VideoDataset
from ltx2core.config.train import TrainConfig
from ltx2core.data.tensors import to_record
from ltx2core.keys import TextModel, model_source, text_model
from ltx2core.models.loading import load_connectors, load_text_encoder, load_tokenizer
from ltx2core.models.placement import release_memory
from ltx2core.models.runtime import compute_dtype, pick_device
from ltx2core.models.text import ENCODE_BATCH, ENCODE_TOKENS, encode_captions
from storage.store import Store
from tasks.pending import text_embed_work, wanted_captions
from tasks.progress import sink
from tasks.report import StageReport, reporting
from tasks.shards import ONE, Shard, Spread

# Captions per commit: one encoder batch (~2.5 MB a caption at full size), written to Lance on a thread while the GPU
# encodes the next. Written in line, it held the GPU idle: 15-18 ms a caption on our 2-core host
# (bench/text_embeds_write_bench.py) against ~15 ms of encoding on an H100 (BENCHMARKS.md, #18).
COMMIT_EVERY = ENCODE_BATCH


@task(name="text-embeds-shard", cache_policy=NO_CACHE, retries=1)
def text_embeds_shard(store_uri: str, config: TrainConfig, shard: Shard[tuple[str, str]], model: TextModel,
                      replace: bool = False) -> dict:
    """Encode one shard of (key, caption) with the text encoder loaded once, committing every COMMIT_EVERY.

    Returns the captions encoded and the seconds the models took to load. Idempotent (Dask may run a shard again
    after a worker loss): a row is a function of its key, so a key already stored is left as it is, unless
    `replace` (a forced run) rewrites it. `model` is the encoder the keys were made for; a worker whose encoder
    differs refuses instead of writing mismatched rows."""
    keyed = shard.items
    store = Store.open(store_uri)
    source = model_source(config)
    if text_model(source) != model:
        raise RuntimeError(f"the text encoder of {source.label} on this machine differs from the one the flow "
                           "planned for; give every Dask worker the same model files (or hub cache)")
    device = pick_device()
    dtype = compute_dtype(config.mixed_precision, device)
    log = get_run_logger()
    log.info("text-embeds: encoding %d captions with %s on %s", len(keyed), source.label, device)
    loading = time.perf_counter()
    tokenizer = load_tokenizer(source)
    # Loaded straight onto the device (no 24 GB host copy of Gemma-3-12B) and dropped when the shard ends, so the
    # VAE never shares the GPU with it.
    text_encoder = load_text_encoder(source, dtype=dtype, device=device)
    connectors = load_connectors(source, dtype=dtype, device=device)
    load_seconds = time.perf_counter() - loading
    ordered = sorted(keyed, key=lambda item: len(item[1]))  # a chunk of like lengths pads little
    try:
        # Leaving the block waits for the last write, also when encoding fails: what was encoded is kept.
        with ThreadPoolExecutor(1, thread_name_prefix="text-embeds-writer") as writer:
            writing: Future[int] | None = None
            encoded = [time.perf_counter()]  # when each chunk's encoding (and the wait for the write before) ended
            for start in range(0, len(ordered), COMMIT_EVERY):
                chunk = ordered[start:start + COMMIT_EVERY]
                embeds = encode_captions([c for _, c in chunk], tokenizer=tokenizer, text_encoder=text_encoder,
                                         connectors=connectors, max_length=model.max_length, device=device,
                                         dtype=dtype, batch_size=ENCODE_BATCH, max_batch_tokens=ENCODE_TOKENS)
                _written(writing)
                encoded.append(time.perf_counter())
                writing = writer.submit(_write, store, model, chunk, embeds, replace)
            _written(writing)
        if ordered:
            log.info("text-embeds: %s", _timeline(len(ordered), load_seconds, encoded, time.perf_counter()))
    except BaseException as error:
        traceback.clear_frames(error.__traceback__)  # its frames hold the encoder: free the GPU for a retry
        raise
    finally:
        del text_encoder, connectors
        release_memory()
    return {"encoded": len(keyed), "load_seconds": load_seconds}


def _write(store: Store, model: TextModel, chunk: list[tuple[str, str]], embeds: list, replace: bool) -> int:
    rows = []
    for (key, caption), e in zip(chunk, embeds, strict=True):
        data, shape, dt = to_record(e.features)
        rows.append({"key": key, "caption": caption, "encoder_fp": model.encoder_fp, "max_length": model.max_length,
                     "num_tokens": e.num_tokens, "features": data, "features_shape": shape, "features_dtype": dt})
    # An append where the keys are new (a shard run again finds its first chunks stored); a forced run replaces.
    (store.upsert if replace else store.insert_missing)("text_embeds", rows)
    return len(rows)


def _timeline(captions: int, load_seconds: float, encoded: list[float], end: float) -> str:
    """Where a shard's seconds went: the first chunk carries the GPU's first calls, the chunks after it are the rate
    a larger dataset runs at, and the last write is not hidden behind any encoding."""
    parts = [f"{captions} captions: models loaded in {load_seconds:.1f} s",
             f"first {min(captions, COMMIT_EVERY)} encoded in {encoded[1] - encoded[0]:.1f} s"]
    if len(encoded) > 2:
        rest = captions - COMMIT_EVERY
        parts.append(f"the next {rest} at {rest / max(encoded[-1] - encoded[1], 1e-9):.1f} captions/s")
    return ", ".join([*parts, f"last write {end - encoded[-1]:.1f} s"])


def _written(writing: Future[int] | None) -> None:
    """Wait for the chunk being written (raising its error) and count it."""
    if writing is not None:
        sink().advance("text-embeds", writing.result())


def cache_text_embeds(store_uri: str, config: TrainConfig, datasets: list[VideoDataset], force: bool = False,
                      spread: Spread = ONE) -> StageReport:
    """Encode the missing captions in the shards `spread` asks for: one locally (the encoder loads once), one
    per GPU of a cluster."""
    log = get_run_logger()
    with reporting(store_uri, "text-embeds", tables=["text_embeds"], verb="encoded") as (store, report):
        source = model_source(config)
        model = text_model(source)
        work = text_embed_work(store, wanted_captions(store, datasets), model, force)
        report.skipped = len(work.wanted) - len(work.todo)
        sink().start("text-embeds", len(work.todo))
        items = list(work.todo.items())
        shards = spread.cut(items)
        futures = spread.submit(shards, lambda shard: text_embeds_shard.submit(store_uri, config, shard, model, force))
        for future in futures:
            out = future.result()
            report.done += out["encoded"]
            report.load_seconds += out["load_seconds"]
        report.counts = {"captions": len(work.wanted), "bytes": store.stats("text_embeds").get("bytes") or 0}
    log.info("text-embeds: %d distinct captions, %s", len(work.wanted),
             "up to date" if report.up_to_date else f"{report.done} encoded")
    return report
