"""Cache on one machine, train on another: the cache stages write to an S3-compatible store, and a second
working folder with no access to the videos finds every latent and embedding there, byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

from flows.pipeline import pipeline
from storage.store import Store
from tests.flows.helpers import KEPT, make_dataset, write_configs

READER = textwrap.dedent("""
    import hashlib, json, sys
    from storage.store import Store
    store = Store.open(sys.argv[1])
    out = {}
    for table, column in (("latents", "latents"), ("text_embeds", "features")):
        rows = store.read(table, ["key", column, column + "_shape"]).to_pylist()
        out[table] = {r["key"]: [hashlib.sha256(r[column]).hexdigest(), r[column + "_shape"]] for r in rows}
    print(json.dumps(out))
""")


def digests(store: Store) -> dict:
    out = {}
    for table, column in (("latents", "latents"), ("text_embeds", "features")):
        rows = store.read(table, ["key", column, column + "_shape"]).to_pylist()
        out[table] = {r["key"]: [hashlib.sha256(r[column]).hexdigest(), r[column + "_shape"]] for r in rows}
    return out


def test_cache_written_to_s3_is_complete_and_identical_from_an_empty_folder(tmp_path, s3_uri, prefect_api, tiny):
    machine_a = tmp_path / "machine-a"
    data = make_dataset(machine_a / "videos")
    config, backend = write_configs(machine_a, data)
    pipeline(config=str(config), databackend=str(backend), storage=s3_uri,
             stages=["probe", "filter", "bucket", "captions", "text-embeds", "latents"])
    written = digests(Store.open(s3_uri))
    assert len(written["latents"]) == len(KEPT) and len(written["text_embeds"]) == len(KEPT)

    shutil.rmtree(data)  # machine B has no videos
    machine_b = tmp_path / "machine-b"
    machine_b.mkdir()
    read = subprocess.run([sys.executable, "-c", READER, s3_uri], cwd=machine_b, capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": os.getcwd()}, timeout=120)
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout) == written
    assert list(machine_b.iterdir()) == []  # nothing local was needed or written
