"""Store on s3:// against a real S3-compatible server (SeaweedFS, started once per session).

Settings come from the AWS environment variables, as in production; each test writes under its
own prefix of the session's bucket.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import lancedb
import numpy as np
import pytest
from writer import file_row

from storage import Store, sql_eq
from storage.location import StorageUnavailable, resolve
from tests.s3server import S3Server, free_port

REPO = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).with_name("writer.py")
T0 = datetime(2025, 1, 1, tzinfo=UTC)
TENSOR_BYTES = 2 * 1024 * 1024


def video(i: int, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {"video_id": f"v{i}", "path": f"/d/{i}.mp4", "width": 640, "height": 480, "num_frames": 97}
    return row | changes


def test_server_checks_signatures_and_refuses_a_second_conditional_put(s3_store_env: S3Server) -> None:
    # What makes the other tests meaningful: Lance commits a version with PUT If-None-Match: *.
    key = f"probe/{os.getpid()}"
    assert s3_store_env.request("PUT", key, b"first", {"If-None-Match": "*"}) == 200
    assert s3_store_env.request("PUT", key, b"second", {"If-None-Match": "*"}) == 412
    assert dataclasses.replace(s3_store_env, secret_key="not-the-secret").request("HEAD") == 403


def test_store_reads_and_writes_on_s3(s3_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = Store.open(s3_uri)
    assert store.uri == s3_uri

    v1 = store.upsert("videos", [video(i) for i in range(256)])
    assert store.upsert("videos", [video(i) for i in range(256)]) == v1  # identical rows: no commit
    v2 = store.upsert("videos", [video(1, width=1280), video(256)])
    assert v2 > v1 and store.count("videos") == 257
    assert store.insert_missing("videos", [video(1, width=1), video(300)]) > v2
    assert store.read("videos", ["video_id", "width"], sql_eq("video_id", "v1")).to_pylist() == [
        {"video_id": "v1", "width": 1280}]
    v3 = store.delete("videos", ["v0", "absent"])
    assert store.keys("videos") == {f"v{i}" for i in range(1, 257)} | {"v300"}
    assert store.versions(["videos", "files"]) == {"videos": v3, "files": None}
    assert store.read("files").num_rows == 0  # a table never written reads empty

    store.record_stage_run("probe", "*", fingerprint="fp", status="completed", done=257, skipped=0, failed=0,
                           error=None, versions={"videos": v3}, flow_run_id=None, started_at=T0, finished_at=T0)

    # A second process-like handle (no shared state) sees everything; nothing was written locally.
    again = Store.open(s3_uri)
    assert again.count("videos") == 257 and again.version("videos") == v3
    assert [(r["stage"], r["versions"]) for r in again.last_stage_runs()] == [("probe", {"videos": v3})]
    assert list(tmp_path.iterdir()) == []


def test_explicit_storage_options_win_over_the_environment(
    s3_uri: str, s3_store_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    options = {"aws_endpoint": s3_store_env.endpoint, "aws_secret_access_key": s3_store_env.secret_key}
    Store.open(s3_uri, storage_options=options).upsert("videos", [video(0)])

    for name in s3_store_env.env:
        monkeypatch.delenv(name)
    env_free = {"aws_access_key_id": s3_store_env.access_key, "aws_region": "us-east-1", **options}
    assert Store.open(s3_uri, storage_options=env_free).keys("videos") == {"v0"}


def test_two_processes_writing_disjoint_keys_store_each_row_once(s3_uri: str, tmp_path: Path) -> None:
    # The table exists first, so the writers' commits overlap instead of queueing behind the
    # creation race (measured: then 1-2 of 12 commits needed a retry after a refused PUT).
    Store.open(s3_uri).upsert("files", [file_row(1000)])
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # os.environ carries the server's AWS settings
    writers = [
        subprocess.Popen([sys.executable, str(WRITER), s3_uri, str(first), str(first + 150), "25", str(go)],
                         env=env, stdout=subprocess.PIPE, text=True)
        for first in (0, 150)
    ]
    for writer in writers:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    go.touch()  # 6 commits of 25 rows each
    for writer in writers:
        writer.communicate(timeout=120)
        assert writer.returncode == 0

    options = resolve(s3_uri, None, os.environ).storage_options
    stored = lancedb.connect(s3_uri, storage_options=options).open_table("files").to_arrow().column("path")
    counts = Counter(stored.to_pylist())
    assert set(counts) == {file_row(i)["path"] for i in [*range(300), 1000]}
    assert max(counts.values()) == 1


def test_large_tensor_rows_round_trip_bit_exact(s3_uri: str) -> None:
    rng = np.random.default_rng(0)
    tensors = {f"k{i}": rng.integers(0, 2**16, size=TENSOR_BYTES // 2, dtype=np.uint16) for i in range(6)}
    rows = [{"key": key, "video_id": key, "clip_spec": "c", "bucket": "b", "vae_fp": "f", "options": "o",
             "frame_rate": 24.0, "latents": bits.tobytes(), "latents_shape": [2, bits.size // 2],
             "latents_dtype": "bfloat16"} for key, bits in tensors.items()]
    store = Store.open(s3_uri)
    store.upsert("latents", rows)

    read = Store.open(s3_uri).read("latents", ["key", "latents", "latents_shape", "latents_dtype"]).to_pylist()
    assert {r["key"] for r in read} == set(tensors)
    for row in read:
        restored = np.frombuffer(row["latents"], dtype=np.uint16)
        assert np.array_equal(restored, tensors[row["key"]]) and row["latents_dtype"] == "bfloat16"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("closed endpoint", "cannot reach http://127.0.0.1:"),
        ("missing bucket", "bucket 'no-such-bucket' does not exist"),
        ("wrong secret", "refused the credentials"),
    ],
)
def test_unusable_settings_fail_clearly_without_secrets(
    case: str, expected: str, s3_uri: str, s3_store_env: S3Server, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uri = s3_uri
    if case == "closed endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    elif case == "missing bucket":
        uri = "s3://no-such-bucket/db"
    else:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", f"{s3_store_env.secret_key}-wrong")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StorageUnavailable) as caught:
        Store.open(uri, storage_options={"client_max_retries": "1"})
    message = str(caught.value)
    assert message.startswith(f"cannot open storage {uri} ") and expected in message
    assert "AWS_" in message  # names the variable to fix
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    for secret in (s3_store_env.secret_key, s3_store_env.access_key):
        assert secret not in message and secret not in caplog.text


def test_secrets_never_reach_logs_or_output(s3_uri: str, s3_store_env: S3Server) -> None:
    # A child with Python logging at DEBUG and Lance's Rust logging at trace: everything it prints.
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "from storage import Store\n"
        "store = Store.open(sys.argv[1])\n"
        "store.upsert('videos', [{'video_id': 'v0', 'path': '/d/0.mp4'}])\n"
        "print(store.keys('videos'))\n"
        "Store.open('s3://no-such-bucket/db')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANCEDB_LOG": "trace"}
    child = subprocess.run([sys.executable, "-c", script, s3_uri], env=env, capture_output=True, text=True,
                           timeout=120)
    output = child.stdout + child.stderr
    assert "{'v0'}" in child.stdout and "StorageUnavailable: cannot open storage s3://no-such-bucket/db" in output
    assert "lance_io" in output  # Rust logging was really on
    for secret in (s3_store_env.secret_key, s3_store_env.access_key):
        assert secret not in output
