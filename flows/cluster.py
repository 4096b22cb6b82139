"""Where the cache stages' shard tasks run: the flow's own thread pool, or a Dask cluster given by address.

A Prefect flow's task runner is fixed when the flow is called, and a deployment run brings only parameters.
So the pipeline flow enters `shards_on(dask_address)` around its stages: with an address it starts
prefect-dask's `DaskTaskRunner(address=...)` and makes it this flow run's task runner until the block ends
(a copy of the run context with that runner, the way Prefect's engine makes its own contexts). The stages
keep calling `task.submit`; their shards become task runs of the same flow run, so `stage_runs`, the UI and
retries see one run, as without a cluster. (An inner flow with `.with_options(task_runner=...)` would have
moved the stages into a child run; see docs/decisions.md.)

Workers must run the same checkout (`pip install -e .`, or start `dask worker` from the repository root)
and reach what the flow reaches: the store URI (s3:// with AWS_* in each worker's environment, or a folder at
the same path), the model at the same path (or a hub id in their cache) and the Prefect API.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.network import host_of, is_loopback
from tasks.shards import ONE, Spread

GPU_STAGES = frozenset({"text-embeds", "latents"})  # their shards go to `--resources GPU=1` workers when any


class ClusterUnavailable(ValueError):
    """The Dask scheduler at the given address cannot be reached, or may not be used as given (plain tcp://
    beyond this machine, tls:// without certificates)."""


TLS_RECIPE = ("the TLS recipe in the README (\"More than one machine\"): `ltx2 cluster-certs DIR`, the scheduler "
              "and workers started with its certificates, then --dask-address tls://HOST:PORT --dask-certs DIR")


@dataclass(frozen=True)
class ClusterAccess:
    """How to connect: the address, and for tls:// the client's certificate (a `distributed.Security`)."""

    address: str
    security: Any = None


def cluster_access(address: str, certs: str | None = None, insecure_plaintext: bool = False) -> ClusterAccess:
    """Check an address before connecting. A Dask scheduler runs whatever code its clients send, so beyond this
    machine only tls:// with mutual authentication is accepted, unless `insecure_plaintext` says otherwise."""
    scheme = address.split("://", 1)[0].lower() if "://" in address else "tcp"
    if scheme == "tls":
        if not certs:
            raise ClusterUnavailable(f"{address} is TLS: pass --dask-certs DIR (the dask_certs parameter), the "
                                     f"folder `ltx2 cluster-certs DIR` wrote; see {TLS_RECIPE}")
        from distributed.security import Security

        from flows.cluster_certs import role_files

        files = role_files(Path(certs), "client")
        for path in (files.ca, files.cert, files.key):
            if not path.is_file():
                raise ClusterUnavailable(f"{path} not found: --dask-certs must be the folder `ltx2 cluster-certs` "
                                         "wrote (copy it from the machine that made it)")
        return ClusterAccess(address, Security(tls_ca_file=str(files.ca), tls_client_cert=str(files.cert),
                                               tls_client_key=str(files.key), require_encryption=True))
    if scheme != "tcp":
        raise ClusterUnavailable(f"--dask-address {address}: use tls://HOST:PORT (or tcp://127.0.0.1:PORT on this "
                                 "machine)")
    if certs:
        raise ClusterUnavailable(f"--dask-certs given but {address} is plain tcp://: write tls://{address.split('://')[-1]}")
    if not is_loopback(host_of(address)) and not insecure_plaintext:
        raise ClusterUnavailable(
            f"--dask-address {address} is plain tcp:// to another machine: anyone who reaches that port can run "
            f"code on the workers and read what they send. Use {TLS_RECIPE}; or, on a network only you reach, "
            "pass --insecure-dask-plaintext (the dask_insecure_plaintext parameter)")
    return ClusterAccess(address)


@dataclass(frozen=True)
class Capacity:
    """What the workers offer right now: task slots (threads) and GPU units (`--resources GPU=n`)."""

    slots: int
    gpus: int


def capacity(client: Any) -> Capacity:
    """Summed over every worker the scheduler knows (`client`: a connected `distributed.Client`)."""
    threads, gpus = _slots(client)
    return Capacity(slots=len(threads), gpus=len(gpus))


def _slots(client: Any) -> tuple[list[str], list[str]]:
    """Each worker's address once per thread, and once per GPU unit (`--resources GPU=n`): one scheduler call."""
    workers = client.scheduler_info(n_workers=-1)["workers"].items()
    return ([a for a, w in workers for _ in range(w["nthreads"])],
            [a for a, w in workers for _ in range(int(w.get("resources", {}).get("GPU", 0)))])


@dataclass(frozen=True)
class Fanout:
    """How a stage spreads its shards: over the flow's own runner (no client) or a Dask cluster."""

    client: Any = None  # distributed.Client of the cluster; None: the flow's own task runner

    @contextmanager
    def stage(self, stage: str) -> Iterator[Spread]:
        """Inside: `stage`'s shard submits go where they may run (GPU workers for GPU stages when the cluster
        has any, else any worker). Yields the stage's `Spread`: one shard locally (one model load); on a
        cluster one per slot that can take them, counted now since workers come and go, shard i placed on slot
        i (another worker if that one is gone). Placed, since Dask hands a task to an idle worker: a shard that
        ends before the flow submits the next (a Prefect submit takes 30-100 ms) would leave the next to the
        same worker. One per slot, not more: each shard pays a Prefect task run and its models' load (two per
        slot cost 0.33 s more per probe stage over two workers: docs/decisions.md)."""
        if self.client is None:
            yield ONE
            return
        import dask

        threads, gpus = _slots(self.client)
        if stage in GPU_STAGES and gpus:
            with dask.annotate(resources={"GPU": 1}):
                yield _placed(gpus)
        else:
            yield _placed(threads)


def _placed(slots: list[str]) -> Spread:
    """One shard per slot (a worker address once per thread or GPU), shard i on slot i."""
    if not slots:
        return ONE
    import dask

    return Spread(len(slots), lambda i: dask.annotate(workers=[slots[i % len(slots)]], allow_other_workers=True))


LOCAL = Fanout()


@contextmanager
def shards_on(address: str | None, store_uri: str, certs: str | None = None,
              insecure_plaintext: bool = False) -> Iterator[Fanout]:
    """Inside (in a flow run): this run's `task.submit` calls go to the Dask cluster at `address`
    (tls://host:port with `certs`, or tcp:// on loopback: `cluster_access`); without an address nothing changes
    and the stages use the flow's own runner. `store_uri` only serves a warning: workers on other machines need
    a store they can all reach."""
    if not address:
        yield LOCAL
        return
    access = cluster_access(address, certs, insecure_plaintext)
    from prefect import get_run_logger
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    log = get_run_logger()
    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("shards_on() needs a running flow: its task runner is what it replaces")
    # Workers report their task runs to the API named in the settings each task carries. Without
    # PREFECT_API_URL that is no URL, and every worker process would start a temporary server of its own;
    # name the flow's (a temporary one listens on 127.0.0.1, so this helps workers on this machine only).
    api = PREFECT_API_URL.value() or str(context.client.api_url)
    if not _is_loopback(address) and _is_loopback(api):
        log.warning("Dask workers on other machines cannot reach the Prefect API at %s: run `ltx2 server --host "
                    "0.0.0.0` and set PREFECT_API_URL=http://<this host>:4200/api and PREFECT_API_AUTH_STRING (README: "
                    "\"More than one machine\")", api)
    if not _is_loopback(address) and "://" not in store_uri:
        log.warning("Dask workers on other machines write to %s on their own disk unless it is a folder shared at "
                    "that path; use an s3:// store", store_uri)
    with DaskTaskRunner(address=address, client_kwargs={"security": access.security} if access.security else None
                        ) as runner:
        try:
            client = runner.client  # connects
        except OSError as err:
            raise ClusterUnavailable(f"cannot reach the Dask scheduler at {address} ({err}); start one with "
                                     "`dask scheduler`, or fix --dask-address (the dask_address parameter)") from None
        now = capacity(client)
        log.info("Dask cluster at %s: %d worker slots, %d GPUs", address, now.slots, now.gpus)
        with temporary_settings({PREFECT_API_URL: api}), context.model_copy(update={"task_runner": runner}):
            yield Fanout(client)


def _is_loopback(url: str) -> bool:
    return is_loopback(host_of(url))
