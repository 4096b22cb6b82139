"""Secrets never land where they could leak: a full `ltx2 run` (every stage, the tiny model) against the session's
`ltx2 server` (beyond loopback, auth on) into the real S3 server, with a marker value in every secret variable;
then every file and record the run, the server and the store hold is searched for the markers."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs

from storage.schemas import TABLES
from storage.store import Store
from tests.flows.helpers import REPO, LocalServer, make_dataset, train_project
from tests.s3server import REGION, S3Server

PREFECT = str(Path(sys.executable).with_name("prefect"))


def _ltx2_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "run", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def _files(*roots: Path, skip: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for root in roots for path in sorted(root.rglob("*"))
            if path.is_file() and path != skip}


def _objects(s3: S3Server, uri: str) -> dict[str, bytes]:
    """Every object under the store's prefix, byte for byte, read by an S3 client of its own (Arrow's)."""
    fs = pafs.S3FileSystem(access_key=s3.access_key, secret_key=s3.secret_key, region=REGION,
                           endpoint_override=s3.endpoint, scheme="http")
    prefix = uri.removeprefix("s3://")
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
    objects = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as stream:
                objects[info.path] = stream.read()
    return objects


def test_no_secret_reaches_logs_prefect_tables_artifacts_or_output_dir(server: LocalServer, s3_uri: str,
                                                                      s3_store_env: S3Server, tiny, tmp_path):
    project = train_project(tmp_path, make_dataset(tmp_path / "clips"), validation_steps=0,
                            validation_prompt="a red square", validation_resolution="64x64",
                            validation_num_video_frames=9, validation_num_inference_steps=2)
    output_dir = Path(json.loads(Path(project["config"]).read_text())["output_dir"])
    markers = {"AWS_ACCESS_KEY_ID": s3_store_env.access_key, "AWS_SECRET_ACCESS_KEY": s3_store_env.secret_key,
               "PREFECT_API_AUTH_STRING": server.auth, "WANDB_API_KEY": f"wandb{secrets.token_hex(16)}",
               "HF_TOKEN": f"hf_{secrets.token_hex(16)}"}
    env = os.environ | server.env | s3_store_env.env | {k: markers[k] for k in ("WANDB_API_KEY", "HF_TOKEN")}
    configs = ["--config", project["config"], "--databackend", project["databackend"]]

    done = _ltx2_run(env, *configs, "--storage", s3_uri)
    assert done.returncode == 0, done.stdout + done.stderr
    store = Store.open(s3_uri)
    assert store.count("validations") > 0 and (output_dir / "pytorch_lora_weights.safetensors").is_file()

    # Credentials written into a storage URI are refused, by the CLI and by the API for a deployment run, and
    # the refusal does not repeat them.
    with_credentials = s3_uri.replace("s3://", f"s3://{markers['AWS_ACCESS_KEY_ID']}:{markers['AWS_SECRET_ACCESS_KEY']}@")
    refused = _ltx2_run(env, *configs, "--storage", with_credentials, "--stages", "probe")
    assert refused.returncode == 2, refused.stderr
    assert "carries credentials" in refused.stderr and "AWS_SECRET_ACCESS_KEY" in refused.stderr
    assert "Traceback" not in refused.stderr
    deployment = subprocess.run([PREFECT, "deployment", "run", "ltx2-pipeline/stages", "--param",
                                 f"storage={with_credentials}"], env=server.env, cwd=server.root,
                                capture_output=True, text=True, timeout=120, check=False)
    assert deployment.returncode != 0 and "Error creating flow run" in deployment.stdout + deployment.stderr

    searched = {"ltx2 run output": (done.stdout + done.stderr).encode(),
                "the refusal": (refused.stdout + refused.stderr).encode()}
    # The server's database (parameters, logs, artifacts, events), its log, and the client settings.
    searched |= _files(server.root, skip=Path(server.base_env["PREFECT_HOME"]) / "ltx2-api-auth")
    # Checkpoints, the LoRA files and their metadata, loss.csv, samples, logs.
    searched |= _files(output_dir, skip=Path())
    for what, query in {"flow runs": "/flow_runs/filter", "logs": "/logs/filter", "artifacts": "/artifacts/filter",
                        "task runs": "/task_runs/filter", "variables": "/variables/filter"}.items():
        searched[f"the API's {what}"] = server.http.post(query, json={}).content
    # Every table, row by row, and every object of the store as the S3 server holds it.
    for name in TABLES:
        if store.exists(name):
            searched[f"table {name}"] = repr(store.read(name).to_pylist()).encode()
    searched |= _objects(s3_store_env, s3_uri)

    assert len(searched) > 40  # the search covered a real run, not an empty folder
    found = [(variable, where) for where, blob in searched.items() for variable, marker in markers.items()
             if marker.encode() in blob]
    assert not found, found
