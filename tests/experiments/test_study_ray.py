"""A study's jobs spread over a two-node Ray cluster (one shared store and data root) give the
in-process run's numbers (needs gradaudit[ray], which `make test` installs)."""

import json

import pytest

import raycluster
from gradaudit import GradauditError
from gradaudit.experiments import base, run_study
from gradaudit.runs import RayExecutor

pytestmark = pytest.mark.slow

# BlockMNIST only, the two MLPs, small splits: model training and DiffROAR both go through
# the executor (2 model jobs, then 2 DiffROAR jobs).
SMALL = ("datasets=[blockmnist]", "models=[{label: MLP, model: mlp, recipe: {epochs: 1}}, "
         "{label: MLP l2, model: mlp, recipe: {epochs: 1, attack: l2, eps: 2.0, attack_steps: 3}}]",
         "diffroar_models=[MLP, MLP l2]", "n_train=600", "n_test=200", "leakage_ks=[10.0]",
         "road_percentages=[0.5]")


def _results(out):
    return json.loads((out / "results.json").read_text())["results"]


@pytest.fixture(scope="module")
def cluster():
    with raycluster.two_node_cluster() as c:
        yield c


def test_blockmnist_on_two_node_cluster_matches_in_process(cluster, mnist_root, tmp_path,
                                                           monkeypatch):
    import ray

    made = []
    make = base.make_executor

    def keep(name="inprocess", **options):
        made.append(make(name, **options))
        return made[-1]

    monkeypatch.setattr(base, "make_executor", keep)  # to see where the study's jobs ran
    local, remote = tmp_path / "local", tmp_path / "ray"
    run_study("blockmnist", quick=True, overrides=SMALL, out=local, quiet=True, data_root=mnist_root)
    run_study("blockmnist", quick=True, overrides=SMALL, out=remote, quiet=True, data_root=mnist_root,
              executor="ray")
    assert ray.is_initialized()  # the study used the caller's cluster and left it running
    ex = made[-1]
    assert isinstance(ex, RayExecutor)
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    assert len(ex.task_nodes) == 4 and set(ex.task_nodes) == nodes  # both nodes ran jobs

    a, b = _results(local), _results(remote)
    assert [(r["dataset"], r["model"]) for r in a["leakage"]] == [(r["dataset"], r["model"]) for r in b["leakage"]]
    for ra, rb in zip(a["leakage"], b["leakage"], strict=True):
        # Ray workers run with another thread count: equal up to float rounding
        assert rb["mass_null_mean"] == pytest.approx(ra["mass_null_mean"], abs=0.01)
    for label in ("MLP", "MLP l2"):
        da = a["diffroar"][label]["curves"]["attribution"]["diffroar"]["mean"]
        db = b["diffroar"][label]["curves"]["attribution"]["diffroar"]["mean"]
        assert db == pytest.approx(da, abs=0.02)
    # every model and DiffROAR job landed in the study's own store, done
    for kind in ("model", "diffroar"):
        assert sorted(p.name for p in (local / "store" / kind).iterdir()) == \
            sorted(p.name for p in (remote / "store" / kind).iterdir())
        assert all((p / "done.json").is_file() for p in (remote / "store" / kind).iterdir())


def test_cuda_study_is_refused_by_a_cluster_without_gpus(cluster, mnist_root, tmp_path):
    # --device cuda on Ray: each job reserves a GPU, which no node of this cluster has
    with pytest.raises(GradauditError, match=r"Each job asks for 1 GPU\(s\), but no node of the Ray "
                       r"cluster has that many \(2 node\(s\), 0 GPU\(s\) in all"):
        run_study("blockmnist", quick=True, overrides=SMALL, out=tmp_path / "s", quiet=True,
                  data_root=mnist_root, device="cuda", executor="ray")
    assert not (tmp_path / "s").exists()  # refused before the first job
