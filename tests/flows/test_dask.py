"""The cache stages on a real Dask cluster: `dask scheduler` and two `dask worker`s on 127.0.0.1, started from the
repository root as the README says, writing to the real S3 server; and the GPU routing against real Dask workers."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import ssl
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import dask
import pytest
from distributed import Client, Scheduler, Worker, get_worker
from distributed.deploy.spec import SpecCluster
from distributed.security import Security

from flows.cluster import Capacity, ClusterUnavailable, Fanout, capacity, cluster_access
from flows.cluster_certs import make_certs, role_files
from flows.pipeline import pipeline
from ltx2core.config.load import load_project
from ltx2core.keys import latent_model
from ltx2core.media.synth import write_clip
from ltx2core.models.source import resolve_source
from storage.store import Store
from tasks.latents import latents_shard
from tasks.pending import latent_work
from tasks.shards import Shard
from tests.flows.helpers import REPO, write_configs
from tests.ports import free_port
from tests.s3server import CLEARED_ENV

DASK = Path(sysconfig.get_path("scripts")) / "dask"
STAGES = ["probe", "filter", "bucket", "latents"]
N_CLIPS = 44
# As the README starts workers: Dask's MALLOC_TRIM_THRESHOLD_ halves PyAV's speed (bench/dask_bench.py).
WORKER_ENV = {"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": '{"MALLOC_TRIM_THRESHOLD_": None}'}
LOOPBACK = {"host": "127.0.0.1", "dashboard": False, "dashboard_address": "127.0.0.1:0"}  # in-process Dask nodes


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """44 distinct small clips, plus a byte-identical copy that sorts into another probe shard."""
    folder = tmp_path_factory.mktemp("dask-clips") / "videos"
    folder.mkdir()
    for i in range(N_CLIPS):
        write_clip(folder / f"clip{i:02d}.mp4", width=64, height=64, num_frames=33 + i, fps=25, seed=i)
    (folder / "zz_copy_of_clip00.mp4").write_bytes((folder / "clip00.mp4").read_bytes())
    return folder


def tls_flags(certs: Path, role: str) -> list[str]:
    files = role_files(certs, role)
    return ["--tls-ca-file", str(files.ca), "--tls-cert", str(files.cert), "--tls-key", str(files.key)]


def client_security(certs: Path) -> Security:
    files = role_files(certs, "client")
    return Security(tls_ca_file=str(files.ca), tls_client_cert=str(files.cert), tls_client_key=str(files.key),
                    require_encryption=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_store_env, tiny) -> Iterator[SimpleNamespace]:
    """The README's recipe on loopback: certificates from `ltx2 cluster-certs`, a TLS scheduler and two workers
    (each a nanny and one single-threaded worker process), with the S3 settings and LTX2_HOME (the tiny model) in
    their environment, as every worker machine needs them."""
    logs = tmp_path_factory.mktemp("dask-logs")
    certs = logs / "certs"
    subprocess.run([sys.executable, "-m", "flows.cli", "cluster-certs", str(certs)], cwd=REPO, check=True,
                   capture_output=True)
    address = f"tls://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV} | s3_store_env.env | WORKER_ENV | {
        "PREFECT_HOME": str(logs / "prefect-home")}
    procs = [_start([DASK, "scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port",
                     address.rsplit(":", 1)[1], "--no-dashboard", *tls_flags(certs, "scheduler")],
                    logs / "scheduler.log", env)]
    try:
        for name in ("w1", "w2"):
            procs.append(_start([DASK, "worker", address, "--nthreads", "1", "--no-dashboard", "--name", name,
                                 "--local-directory", logs / name, *tls_flags(certs, "worker")],
                                logs / f"{name}.log", env))
        # Not the process's default client: prefect-dask's runner would take that one instead of its address.
        with Client(address, timeout=90, set_as_default=False, security=client_security(certs)) as client:
            client.wait_for_workers(2, timeout=120)
            client.get_task_stream()  # installs the scheduler's task-stream recorder from here on
            # Each worker imports the stages (torch, diffusers, Prefect: most of this test's time on a busy
            # machine) while the test makes its clips and its single-process run.
            warming = [client.submit(exec, "import tasks.latents, tasks.probe", workers=[w], pure=False)
                       for w in client.scheduler_info()["workers"]]
            yield SimpleNamespace(address=address, certs=certs, client=client, logs=logs, warming=warming)
    finally:
        _stop(*procs[1:])  # the workers together (a nanny takes seconds to close its worker), then the scheduler
        _stop(procs[0])


@pytest.fixture
def work(tmp_path, clips, prefect_api, tiny) -> SimpleNamespace:
    config, backend = write_configs(tmp_path, clips)
    return SimpleNamespace(config=str(config), backend=str(backend), root=tmp_path)


def run(work: SimpleNamespace, storage: str, stages: list[str] = STAGES, **kw) -> dict[str, dict]:
    reports = pipeline(config=work.config, databackend=work.backend, storage=storage, stages=stages, **kw)
    return {r["stage"]: r for r in reports}


def latent_rows(store: Store) -> dict[str, dict]:
    rows = store.read("latents").to_pylist()
    by_key = {r["key"]: r for r in rows}
    assert len(by_key) == len(rows), "a key is stored more than once"
    return by_key


def test_latents_over_two_workers_equal_a_single_process_run(cluster, work, s3_uri):
    single = run(work, str(work.root / "single"))
    assert single["latents"]["done"] == N_CLIPS
    t0 = time.time()
    spread = run(work, s3_uri, dask_address=cluster.address, dask_certs=str(cluster.certs))
    assert spread["probe"]["done"] == N_CLIPS + 1 and spread["latents"]["done"] == N_CLIPS

    store = Store.open(s3_uri)
    expected = latent_rows(Store.open(str(work.root / "single")))
    assert latent_rows(store) == expected  # same keys, same tensors, byte for byte
    assert all(r["error"] is None for r in expected.values())
    videos = store.read("videos", ["video_id"]).column("video_id").to_pylist()
    assert len(videos) == len(set(videos)) == N_CLIPS  # the copy, probed by another shard, is one video

    stream = cluster.client.get_task_stream(start=t0)
    ran = {prefix: {t["worker"] for t in stream if t["key"].startswith(prefix)} for prefix in
           ("probe_shard", "latents_shard")}
    assert len(ran["probe_shard"]) == 2 and len(ran["latents_shard"]) == 2, ran  # both workers did each stage

    # Dask may run a finished shard again after losing the worker that held its result: nothing changes.
    project = load_project(work.config, work.backend, check_paths=False)
    config, dataset = project.config, project.datasets[0]
    model = latent_model(resolve_source(config.pretrained_model_name_or_path, config.model_flavour), config)
    shard = list(latent_work(store, dataset, model, force=True).todo.items())[:5]
    version = store.version("latents")
    again = latents_shard.fn(s3_uri, config, dataset, Shard(shard), model)
    assert (again["encoded"], again["errors"]) == (5, 0) and again["load_seconds"] > 0
    assert store.version("latents") == version and latent_rows(store) == expected


def test_a_worker_killed_mid_stage_loses_nothing_after_a_rerun(cluster, work, s3_uri):
    run(work, s3_uri, stages=["probe", "filter", "bucket"])
    killed: list[str] = []
    stage_over = threading.Event()

    def kill_a_worker_encoding_latents() -> None:
        while not stage_over.is_set() and not killed:
            busy = [w for w, keys in cluster.client.processing().items()
                    if any(str(k).startswith("latents_shard") for k in keys)]
            if busy:
                pid = cluster.client.run(os.getpid, workers=busy[:1])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker_encoding_latents)
    killer.start()
    try:
        run(work, s3_uri, stages=["latents"], dask_address=cluster.address, dask_certs=str(cluster.certs))
    except Exception as err:  # the lost shard may fail the run; what counts is what a rerun leaves
        print(f"run with a killed worker failed: {err!r}")
    finally:
        stage_over.set()
        killer.join()
    assert killed, "no worker was seen encoding latents"

    again = run(work, s3_uri, stages=["latents"], dask_address=cluster.address, dask_certs=str(cluster.certs))
    assert again["latents"]["skipped"] + again["latents"]["done"] == N_CLIPS
    rows = latent_rows(Store.open(s3_uri))
    assert len(rows) == N_CLIPS and all(r["error"] is None and r["latents"] for r in rows.values())
    cluster.client.wait_for_workers(2, timeout=120)  # the nanny restarted the killed worker process


def test_the_tls_cluster_takes_only_clients_with_a_certificate_of_its_ca(cluster, tmp_path):
    other = tmp_path / "other-cluster"
    make_certs(other)  # a valid certificate, from another CA
    port = cluster.address.rsplit(":", 1)[1]
    attempts = {"another CA's certificate": (cluster.address, client_security(other)),
                "plain tcp://": (f"tcp://127.0.0.1:{port}", None)}
    for what, (address, security) in attempts.items():
        with pytest.raises(OSError):  # distributed's CommClosedError and its TLS "certificate does not match"
            Client(address, timeout=10, set_as_default=False, security=security).close()
            pytest.fail(f"a client with {what} connected")
    # TLS that trusts the cluster's CA but shows no certificate (distributed itself will not even try that):
    # the scheduler ends the session instead of answering.
    context = ssl.create_default_context(cafile=str(role_files(cluster.certs, "client").ca))
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", int(port)), timeout=20) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)), context.wrap_socket(raw) as tls:
            tls.sendall(b"\0" * 8)
            if not tls.recv(1):
                raise ConnectionResetError("closed by the scheduler")
    assert cluster.client.submit(sum, [1, 2]).result() == 3  # the cluster's own client still works


def test_addresses_beyond_loopback_need_tls_and_tls_needs_the_certificates(tmp_path):
    make_certs(tmp_path / "certs")
    with pytest.raises(ClusterUnavailable, match="plain tcp:// to another machine.*--insecure-dask-plaintext"):
        cluster_access("tcp://192.0.2.7:8786")
    assert cluster_access("tcp://192.0.2.7:8786", insecure_plaintext=True).security is None
    assert cluster_access("tcp://127.0.0.1:8786").security is None
    with pytest.raises(ClusterUnavailable, match="pass --dask-certs"):
        cluster_access("tls://192.0.2.7:8786")
    with pytest.raises(ClusterUnavailable, match="nowhere/ca.pem not found"):
        cluster_access("tls://192.0.2.7:8786", str(tmp_path / "nowhere"))
    with pytest.raises(ClusterUnavailable, match="write tls://192.0.2.7:8786"):
        cluster_access("tcp://192.0.2.7:8786", str(tmp_path / "certs"))
    security = cluster_access("tls://192.0.2.7:8786", str(tmp_path / "certs")).security
    assert security.require_encryption and security.tls_client_cert == str(tmp_path / "certs" / "client.pem")
    # The CLI says so before Prefect or the configs are touched.
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--dask-address", "tcp://192.0.2.7:8786"],
                          cwd=tmp_path, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "ltx2 cluster-certs" in done.stderr and "--insecure-dask-plaintext" in done.stderr


def test_an_unreachable_scheduler_fails_the_run_before_any_work(work, tmp_path):
    store = tmp_path / "store"
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}), pytest.raises(ClusterUnavailable) as err:
        run(work, str(store), stages=["probe"], dask_address=f"tcp://127.0.0.1:{free_port()}")
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:" in str(err.value)
    assert "start one with `dask scheduler`" in str(err.value)
    assert not Store.open(str(store)).exists("files")


def test_gpu_stages_go_to_gpu_workers_when_the_cluster_has_any(tmp_path):
    """Real Dask workers (in this process), one advertising `GPU=1`: text-embeds and latents shards run there
    only, probe shards anywhere; without GPU workers every stage may use every worker."""
    cpu = {"cls": Worker, "options": LOOPBACK | {"nthreads": 1, "local_directory": str(tmp_path)}}
    gpu = {"cls": Worker, "options": cpu["options"] | {"resources": {"GPU": 1}}}
    with _in_process_cluster({"cpu": cpu, "gpu": gpu}) as client:
        gpu_worker = next(a for a, w in client.scheduler_info()["workers"].items() if w["resources"])
        assert capacity(client) == Capacity(slots=2, gpus=1)
        fanout = Fanout(client)
        for stage in ("latents", "text-embeds"):
            with fanout.stage(stage) as spread:
                placed = client.gather(spread.submit(list(range(6)), lambda i: client.submit(_where, i, pure=False)))
            assert spread.count == 1 and set(placed) == {gpu_worker}
        with fanout.stage("probe") as spread:
            assert dask.get_annotations() == {}
        assert spread.count == 2

    with _in_process_cluster({"a": cpu, "b": cpu, "c": cpu}) as client:
        with Fanout(client).stage("latents") as spread:
            assert dask.get_annotations() == {}
        assert spread.count == 3


def test_shard_i_goes_to_slot_i_even_when_the_others_sit_idle(tmp_path):
    """Dask hands a task to an idle worker; shards submitted one after another, each done before the next, would
    all land on the first. Placed, each worker slot gets its shard (a worker with two threads, two)."""
    one = {"cls": Worker, "options": LOOPBACK | {"nthreads": 1, "local_directory": str(tmp_path)}}
    two = {"cls": Worker, "options": one["options"] | {"nthreads": 2}}
    with _in_process_cluster({"a": one, "b": one, "c": two}) as client:
        with Fanout(client).stage("probe") as spread:
            shards = spread.cut(list(range(8)))
            placed = spread.submit(shards, lambda shard: client.submit(_where, shard, pure=False).result())
        threads = {a: w["nthreads"] for a, w in client.scheduler_info()["workers"].items()}
    assert spread.count == 4 and len(shards) == 4
    assert {a: placed.count(a) for a in threads} == threads  # one shard per slot, though each ran alone


def test_prefect_does_not_walk_a_shards_items():
    """Prefect looks for futures in every list, tuple and dataclass of a task's parameters, item by item, as the
    flow submits each shard; a Shard's items stay out of that walk (tasks/shards.py)."""
    from prefect.utilities.collections import visit_collection

    from ltx2core.data.discover import FileEntry

    entries = [FileEntry(path=f"/clips/{i}.mp4", size=i, mtime_ns=i) for i in range(100)]
    seen = []
    visit_collection({"shard": Shard(entries)}, visit_fn=lambda x: seen.append(x) or x, return_data=False)
    assert not any(isinstance(x, FileEntry) for x in seen) and any(isinstance(x, Shard) for x in seen)
    seen.clear()
    visit_collection({"shard": entries}, visit_fn=lambda x: seen.append(x) or x, return_data=False)
    assert sum(isinstance(x, FileEntry) for x in seen) == 100  # what a plain list costs


@contextmanager
def _in_process_cluster(workers: dict) -> Iterator[Client]:
    scheduler = {"cls": Scheduler, "options": LOOPBACK}
    with SpecCluster(workers=workers, scheduler=scheduler) as spec, Client(spec, set_as_default=False) as client:
        client.wait_for_workers(len(workers))
        yield client


def _where(_) -> str:
    return get_worker().address


def _start(args: list, log: Path, env: dict) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen([str(a) for a in args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM if the test process dies without cleaning up."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.terminate()  # a nanny closes its worker process on SIGTERM
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
