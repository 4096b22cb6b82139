"""How a cache stage cuts its work into shard tasks, and where each shard goes: a `Spread`, given by the flow
(flows/cluster.py makes one per stage from the Dask cluster it runs on)."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any


def _anywhere(shard: int) -> AbstractContextManager:
    return nullcontext()


@dataclass(frozen=True)
class Spread:
    """Cut a stage's work into at least `count` shards (one locally: one model load; one per slot on a cluster)
    and enter `place(i)` around shard i's submit (on a cluster: shard i to slot i, so a shard that finishes
    before the next is submitted does not leave the next to the same worker)."""

    count: int = 1
    place: Callable[[int], AbstractContextManager] = _anywhere

    def cut(self, items: list, most: int | None = None) -> list[list]:
        """`items` in `count` shards of equal size (at most `most` items each, so maybe more shards)."""
        size = math.ceil(len(items) / self.count)
        size = (min(size, most) if most else size) or 1
        return [items[i:i + size] for i in range(0, len(items), size)]

    def submit(self, shards: list[list], submit: Callable[[list], Any]) -> list[Any]:
        """`submit(shard)` for each shard, in its place; the futures in shard order."""
        futures = []
        for i, shard in enumerate(shards):
            with self.place(i):
                futures.append(submit(shard))
        return futures


ONE = Spread()
