"""A local two-node Ray test cluster, for the tests of the Ray executor (needs gradaudit[ray])."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest


@contextlib.contextmanager
def two_node_cluster() -> Iterator[Any]:
    """Start a head node and a second node (1 CPU, no GPU each: separate raylets and
    resources on this machine, one filesystem), connect this process as the driver, and
    shut both down at the end. Yields the ``ray.cluster_utils.Cluster``."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "a Ray from an earlier test is still running"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    try:
        cluster.add_node(num_cpus=1, num_gpus=0)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
