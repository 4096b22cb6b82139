"""How a cache stage cuts its work into shard tasks, and where each shard goes: a `Spread`, given by the flow
(flows/cluster.py makes one per stage from the Dask cluster it runs on)."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Shard(Generic[T]):
    """One shard task's items, in an object Prefect does not look into. Prefect walks every list, tuple, dict and
    dataclass of a task's parameters for futures, when the flow submits (one shard after another) and again in
    the worker: on the 2-core VM a submit of 2,048 probe entries took 165 ms against 38 ms for one (in-process
    Dask), 50 ms wrapped. In a probe over one worker the first shard now starts ~0.09 s sooner (BENCHMARKS.md).
    A plain object: a dataclass would be walked."""

    __slots__ = ("items",)

    def __init__(self, items: list[T]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)


def _anywhere(shard: int) -> AbstractContextManager:
    return nullcontext()


@dataclass(frozen=True)
class Spread:
    """Cut a stage's work into at least `count` shards (one locally: one model load; one per slot on a cluster)
    and enter `place(i)` around shard i's submit (on a cluster: shard i to slot i, so a shard that finishes
    before the next is submitted does not leave the next to the same worker)."""

    count: int = 1
    place: Callable[[int], AbstractContextManager] = _anywhere

    def cut(self, items: list[T], most: int | None = None) -> list[Shard[T]]:
        """`items` in `count` shards of equal size (at most `most` items each, so maybe more shards)."""
        size = math.ceil(len(items) / self.count)
        size = (min(size, most) if most else size) or 1
        return [Shard(items[i:i + size]) for i in range(0, len(items), size)]

    def submit(self, shards: list[Shard[T]], submit: Callable[[Shard[T]], Any]) -> list[Any]:
        """`submit(shard)` for each shard, in its place; the futures in shard order."""
        futures = []
        for i, shard in enumerate(shards):
            with self.place(i):
                futures.append(submit(shard))
        return futures


ONE = Spread()
