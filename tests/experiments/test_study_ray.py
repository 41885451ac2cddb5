"""A study run on the Ray executor gives the in-process run's numbers (needs gradaudit[ray])."""

import json

import pytest

from gradaudit.experiments import run_study

pytestmark = pytest.mark.slow

# BlockMNIST only, the two MLPs: model training and DiffROAR both go through the executor.
SMALL = ("datasets=[blockmnist]", "models=[{label: MLP, model: mlp, recipe: {epochs: 1}}, "
         "{label: MLP l2, model: mlp, recipe: {epochs: 1, attack: l2, eps: 2.0, attack_steps: 3}}]",
         "diffroar_models=[MLP, MLP l2]")


def _results(out):
    return json.loads((out / "results.json").read_text())["results"]


def test_blockmnist_on_ray_matches_in_process(mnist_root, tmp_path):
    ray = pytest.importorskip("ray")
    local, remote = tmp_path / "local", tmp_path / "ray"
    run_study("blockmnist", quick=True, overrides=SMALL, out=local, quiet=True, data_root=mnist_root)
    run_study("blockmnist", quick=True, overrides=SMALL, out=remote, quiet=True, data_root=mnist_root,
              executor="ray")
    assert not ray.is_initialized()  # the study shut down the Ray it started

    a, b = _results(local), _results(remote)
    assert [(r["dataset"], r["model"]) for r in a["leakage"]] == [(r["dataset"], r["model"]) for r in b["leakage"]]
    for ra, rb in zip(a["leakage"], b["leakage"], strict=True):
        # Ray workers may run with another thread count: equal up to float rounding
        assert rb["mass_null_mean"] == pytest.approx(ra["mass_null_mean"], abs=0.01)
    for label in ("MLP", "MLP l2"):
        da = a["diffroar"][label]["curves"]["attribution"]["diffroar"]["mean"]
        db = b["diffroar"][label]["curves"]["attribution"]["diffroar"]["mean"]
        assert db == pytest.approx(da, abs=0.02)
    # every model and DiffROAR job landed in the study's own store
    for kind in ("model", "diffroar"):
        assert sorted(p.name for p in (local / "store" / kind).iterdir()) == \
            sorted(p.name for p in (remote / "store" / kind).iterdir())
