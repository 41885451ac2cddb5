"""A local two-node Ray test cluster, for the tests of the Ray executor (needs gradaudit[ray])."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest


@contextlib.contextmanager
def two_node_cluster(head: dict[str, Any] | None = None, worker: dict[str, Any] | None = None) -> Iterator[Any]:
    """Start a head node and a second node (1 CPU, no GPU each: separate raylets and
    resources on this machine, one filesystem), connect this process as the driver, and
    shut both down at the end. Yields the ``ray.cluster_utils.Cluster``.

    ``head`` / ``worker`` override a node's arguments, e.g. ``{"num_gpus": 1}``: Ray then
    schedules GPU tasks on that node as if it had one GPU (no real GPU is needed)."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "a Ray from an earlier test is still running"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0, **(head or {})})
    try:
        cluster.add_node(**{"num_cpus": 1, "num_gpus": 0, **(worker or {})})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
