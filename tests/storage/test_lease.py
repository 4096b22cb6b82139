"""The store's writer lease under real processes, on a local folder and on a real S3 server: of runs that
start together exactly one writes; a dead holder's lease is taken over; a live one is named."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.lease import STALE_AFTER, Holder, LeaseHeld, writer_lease
from storage.store import Store

REPO = Path(__file__).resolve().parents[2]
CONTENDERS = 4
# A child: wait for the go file, try the lease, say what happened, hold it a while (or die holding it).
CHILD = """
import os, sys, time
from pathlib import Path
from storage.lease import Holder, LeaseHeld, writer_lease
from storage.store import Store
uri, go, hold, how = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
store = Store.open(uri)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
try:
    with writer_lease(store, Holder.this_process("run-" + str(os.getpid()))):
        print("got", flush=True)
        time.sleep(hold)
        if how == "die":
            os._exit(0)  # as a kill -9 would: no release
except LeaseHeld as e:
    print("held", e, flush=True)
"""


def _contend(uri: str, tmp_path: Path, count: int, hold: float, how: str = "release") -> list[str]:
    go = tmp_path / f"go-{time.monotonic_ns()}"
    env = os.environ | {"PYTHONPATH": str(REPO)}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, uri, str(go), str(hold), how], env=env,
                                 stdout=subprocess.PIPE, text=True) for _ in range(count)]
    for child in children:  # every child imported and connected, however busy the machine
        assert child.stdout.readline().strip() == "ready"
    go.touch()
    return [child.communicate(timeout=120)[0].strip() for child in children]


@pytest.fixture(params=["local", "s3"])
def uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return request.getfixturevalue("s3_uri")
    return str(tmp_path / "store")


def test_of_runs_that_start_together_one_writes_and_the_others_are_told_who(uri: str, tmp_path: Path) -> None:
    said = _contend(uri, tmp_path, CONTENDERS, hold=4)
    assert sorted(s.split()[0] for s in said) == ["got"] + ["held"] * (CONTENDERS - 1), said
    for refusal in (s for s in said if s.startswith("held")):
        assert f"{uri} is being written by another run: flow run run-" in refusal
        assert f"on {socket.gethostname()}, since " in refusal

    # Released at the end: the next run gets it.
    with writer_lease(Store.open(uri), Holder.this_process(None)):
        pass


def test_a_holder_that_died_is_taken_over_and_a_live_one_elsewhere_is_not(uri: str, tmp_path: Path) -> None:
    assert _contend(uri, tmp_path, 1, hold=0, how="die") == ["got"]
    store = Store.open(uri)
    with writer_lease(store, Holder.this_process(None)):  # its pid is gone from this host: stale
        pass

    now = datetime.now(UTC)
    elsewhere = {"name": "writer", "holder": "h", "host": "gpu-box-7", "pid": 1, "flow_run_id": "f-1", "since": now,
                 "heartbeat": now}
    assert store.insert_if_absent("leases", elsewhere)
    with pytest.raises(LeaseHeld, match="flow run f-1, pid 1 on gpu-box-7"), writer_lease(store, Holder.this_process(None)):
        pass
    store.update_where("leases", "holder = 'h'", {"heartbeat": now - STALE_AFTER - timedelta(seconds=1)})
    with writer_lease(store, Holder.this_process(None)):  # its heartbeat stopped: stale
        assert store.read("leases", ["host"]).to_pylist() == [{"host": socket.gethostname()}]


def test_when_two_inserts_of_the_lease_both_land_the_first_committed_holds_it(tmp_path: Path) -> None:
    """Two merges that commit together can both insert the key (seen once on S3 in make test: two runs wrote). The
    row committed first wins for every reader, and the other run takes its row back as it is refused."""
    from storage.schemas import table_spec
    from storage.store import _to_arrow

    store = Store.open(str(tmp_path / "store"))
    first, second = Holder.this_process("run-1"), Holder.this_process("run-2")
    now = datetime.now(UTC)
    rows = [{"name": "writer", "holder": h.holder, "host": h.host, "pid": h.pid, "flow_run_id": h.flow_run_id,
             "since": now, "heartbeat": now} for h in (first, second)]
    store.insert_if_absent("leases", rows[0])
    spec = table_spec("leases")
    store._writable(spec).add(_to_arrow(spec, [rows[1]], insert=True))  # the duplicate such a race leaves
    assert [r["holder"] for r in store.read("leases", commit_order=True).to_pylist()] == [first.holder,
                                                                                          second.holder]
    with pytest.raises(LeaseHeld, match="flow run run-1"), writer_lease(store, second):
        pass
    assert [r["holder"] for r in store.read("leases").to_pylist()] == [first.holder]
