"""Work a run spreads over the Ray cluster named by ``RAY_ADDRESS``: model search trials, feature
builds over many entities and batch scoring over many days. Each piece is a Ray task scheduled
SPREAD (over every node, rather than first filling the one the run is on) and comes back with the
id of the node that computed it, which the asset records.

Feature builds and scoring go to the cluster only from ``ML_PLATFORM_RAY_MIN_ROWS`` rows on: below
that, joining the cluster and shipping the rows cost more than the work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import polars as pl

from ml_platform.settings import Settings

Item = TypeVar("Item")
Result = TypeVar("Result")


def join_cluster(address: str) -> None:
    """Make this process a driver of the cluster at ``address`` (once)."""
    import ray

    from ml_platform.serving.cluster import NAMESPACE, stay_on_loopback

    if not ray.is_initialized():
        stay_on_loopback(address)
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="WARNING")


def spread(
    address: str, function: Callable[..., Result], items: Sequence[Item], *shared: Any
) -> list[tuple[Result, str]]:
    """``function(item, *shared)`` for each item as a Ray task, in the items' order, each with the
    node it ran on. ``shared`` goes to the object store once, not once per task."""
    import ray

    join_cluster(address)
    remote = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_on_node)
    refs = [ray.put(value) for value in shared]
    return ray.get([remote.remote(function, item, *refs) for item in items])


def _on_node(function: Callable[..., Result], item: Any, *shared: Any) -> tuple[Result, str]:
    import ray

    return function(item, *shared), ray.get_runtime_context().get_node_id()


def cluster_cpus(address: str) -> int:
    """The CPUs of the cluster's nodes, together."""
    import ray

    join_cluster(address)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def spread_rows(settings: Settings, rows: int) -> bool:
    """Whether work over ``rows`` rows goes to the cluster (never none at all)."""
    return bool(settings.ray_address) and rows >= max(1, settings.ray_min_rows)


def nodes_metadata(nodes: list[str]) -> dict[str, list[str]]:
    """The materialization's record of the nodes that did its work (nothing when none did)."""
    return {"ray_nodes": sorted(set(nodes))} if nodes else {}


def entity_shards(rows: pl.DataFrame, entity: str, shards: int) -> list[pl.DataFrame]:
    """``rows`` in up to ``shards`` parts, each holding whole entities, in sorted entity order
    (rows without an entity in the last part, where a sort by entity puts them)."""
    names = rows[entity].unique().drop_nulls().sort().to_list()
    size = -(-len(names) // max(1, shards)) or 1
    parts = [rows.filter(pl.col(entity).is_in(names[i : i + size])) for i in range(0, len(names), size)]
    missing = rows.filter(pl.col(entity).is_null())
    if len(missing):
        parts = [*parts[:-1], pl.concat([parts[-1], missing])] if parts else [missing]
    return parts
