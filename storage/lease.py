"""One writing run per store: a lease row in the store's own `leases` table.

Two `ltx2 run`s on one store (a UI trigger and a CI run, say) would both do the latents work, and their
commits would interleave. The first run inserts the row `writer` (insert-if-absent on the primary key; Lance's
commits are atomic, locally and on S3 with conditional PUTs, where a lock file would not be); the second finds it
and is refused with the holder's flow run, host, pid and start time. Two inserts that commit together can both
land: the row committed first (Lance's row id order) holds the lease for every reader, and the other run takes its
row back. The holder renews a heartbeat; a lease is stale, and taken over, when its heartbeat is older than
`STALE_AFTER` or its holder's process is gone from this host (a `kill -9` leaves the row behind).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from storage.sql import sql_eq
from storage.store import Store

TABLE = "leases"
WRITER = "writer"
STALE_AFTER = timedelta(seconds=90)
RENEW_EVERY = timedelta(seconds=20)
TRIES = 6
_CONFLICTS = ("Incompatible transaction", "commit conflict", "TooMuchContention")


class LeaseHeld(RuntimeError):
    """Another live run holds the lease; the message names it."""


@dataclass(frozen=True)
class Holder:
    flow_run_id: str | None
    holder: str = ""
    host: str = ""
    pid: int = 0

    @classmethod
    def this_process(cls, flow_run_id: str | None) -> Holder:
        return cls(flow_run_id, uuid.uuid4().hex, socket.gethostname(), os.getpid())


@contextmanager
def writer_lease(store: Store, holder: Holder) -> Iterator[None]:
    """Hold the store's writer lease for the block, renewing it meanwhile; LeaseHeld if a live run has it."""
    _acquire(store, holder)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(store, holder, stop), name="ltx2-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        store.delete_where(TABLE, _mine(holder))


def _acquire(store: Store, holder: Holder) -> None:
    for attempt in range(TRIES):  # a stale row is deleted, or a conflicting commit retried, then tried again
        now = datetime.now(UTC)
        try:
            store.insert_if_absent(TABLE, {"name": WRITER, "holder": holder.holder, "host": holder.host,
                                           "pid": holder.pid, "flow_run_id": holder.flow_run_id, "since": now,
                                           "heartbeat": now})
        except RuntimeError as error:
            # Runs that start together on a new store also race to create the table; Lance refuses the merges
            # that lost, rather than rebasing them. The row, not the insert's report, says who holds the lease.
            if not any(word in str(error) for word in _CONFLICTS):
                raise
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
        # Concurrent inserts of the key can both land (Lance does not enforce it between two merges that commit
        # together); the row committed first holds the lease, the same for every reader, and a later duplicate
        # of ours is taken back.
        rows = store.read(TABLE, where=sql_eq("name", WRITER), commit_order=True).to_pylist()
        if not rows:
            continue  # released meanwhile, or our insert lost a race
        other = rows[0]
        if other["holder"] == holder.holder:
            return
        if not _stale(other, now):
            if any(row["holder"] == holder.holder for row in rows):
                store.delete_where(TABLE, _mine(holder))
            raise LeaseHeld(_describe(store, other))
        store.delete_where(TABLE, sql_eq("name", WRITER) + " AND " + sql_eq("holder", other["holder"]))
    raise LeaseHeld(f"{store.uri}: could not take the writer lease after {TRIES} tries (other runs starting "
                    "at the same moment): run again")


def _renew(store: Store, holder: Holder, stop: threading.Event) -> None:
    while not stop.wait(RENEW_EVERY.total_seconds()):
        try:
            store.update_where(TABLE, _mine(holder), {"heartbeat": datetime.now(UTC)})
        except Exception:  # a store hiccup: the next renewal tries again, well before the lease is stale
            continue


def _stale(row: dict, now: datetime) -> bool:
    if now - row["heartbeat"] > STALE_AFTER:
        return True
    return row["host"] == socket.gethostname() and not _alive(row["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _mine(holder: Holder) -> str:
    return sql_eq("name", WRITER) + " AND " + sql_eq("holder", holder.holder)


def _describe(store: Store, row: dict) -> str:
    run = f"flow run {row['flow_run_id']}" if row["flow_run_id"] else "a run outside Prefect"
    return (f"{store.uri} is being written by another run: {run}, pid {row['pid']} on {row['host']}, since "
            f"{row['since']:%Y-%m-%d %H:%M:%S} UTC (heartbeat {row['heartbeat']:%H:%M:%S}). Wait for it to finish "
            f"(`ltx2 status` shows its progress) or give this run another --storage; a run that died is taken over "
            f"once its process is gone (same host) or its heartbeat is {int(STALE_AFTER.total_seconds())} s old")
