"""One of each: one seed module, one mode/device helper module, one mask view; the old
import paths still work and name the same objects, and derived seeds are unchanged."""

from __future__ import annotations

import torch

from gradaudit import _seeding, _torch_utils
from gradaudit.attribution import _core
from gradaudit.data._seeding import split_generator
from gradaudit.evaluation import _curves, retrain, retrain_setup
from gradaudit.masking import fill
from gradaudit.training import attacks, eval_mode


def test_old_paths_name_the_one_helper() -> None:
    assert _core.derive_seed is retrain_setup.derive_seed is _seeding.derive_seed
    assert _curves.stream_seed is _seeding.stream_seed
    assert eval_mode is attacks.eval_mode is _torch_utils.eval_mode
    assert _curves.model_device is _torch_utils.model_device
    assert retrain.MASK_VIEW is fill.MASK_VIEW


def test_derived_seeds_are_unchanged() -> None:
    """Values computed by the separate copies before they were merged (bit-identical results)."""
    assert _seeding.derive_seed(0, "inner") == 25510714494987180
    assert _seeding.derive_seed(7, "random-train") == 7033974782494028
    assert _seeding.stream_seed(3, "road-noise", "morf", 0.5) == 3004178378974085398
    assert split_generator(1, "blockmnist", "test").initial_seed() == 8140896518130695871


def test_model_device_and_eval_mode() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    assert _torch_utils.model_device(net) == torch.device("cpu")
    assert _torch_utils.model_device(torch.nn.ReLU(), default="meta") == torch.device("meta")
    assert _torch_utils.model_device(net, "meta") == torch.device("meta")
    net[1].train()
    net[0].eval()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net] == [False, True]
    # a model in eval mode everywhere is not asked to switch (a custom train() is not called),
    # and a mode changed inside the block is put back
    calls = []

    class Custom(torch.nn.Sequential):
        def train(self, mode: bool = True):
            calls.append(mode)
            return super().train(mode)

    custom = Custom(torch.nn.Linear(2, 2), torch.nn.Dropout())
    custom.training = custom[0].training = custom[1].training = False
    with eval_mode(custom):
        custom[1].training = True
    assert calls == [] and not any(m.training for m in custom.modules())
    custom[0].training = True
    with eval_mode(custom):
        assert not any(m.training for m in custom.modules())
    assert calls == [False] and [m.training for m in custom.modules()] == [False, True, False]


def _retrain_config() -> dict:
    from pathlib import Path

    from gradaudit.training import Recipe

    return {"protocol": "diffroar", "levels": [0.05, 0.1, 1.0], "seeds": (0, 1, 2), "seed": 7,
            "fill": "zero", "method_options": {"n_steps": 32, "sigma": 0.15, "baseline": None},
            "controls": {"random": True, "mask_only": False}, "recipe": Recipe(epochs=3, lr=0.05),
            "noise": 0.1 + 0.2, "eps": 8 / 255, "note": "\u03b5-ball", "folder": Path("a/b"),
            "weights": torch.tensor([0.5, 2.0]), "big": 2**60, "zero": 0.0}


def test_one_config_hash_keeps_the_retrain_folders_hash() -> None:
    """The retrain folders' hash, now the run store's config_hash(None, ..., exact=True,
    length=16), is bit-for-bit the one the removed evaluation.retrain.config_hash gave."""
    import hashlib
    import json

    from gradaudit._io import to_jsonable
    from gradaudit.runs.hashing import config_hash
    from gradaudit.runs.store import RunFolder

    cfg = _retrain_config()
    old_way = hashlib.sha256(json.dumps(to_jsonable(cfg), sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert config_hash(None, cfg, exact=True, length=16) == old_way == "21d716fb73323202"  # value of the old function at 598a84c
    assert RunFolder(None, cfg).hash == old_way
    assert RunFolder(None, {"levels": [0.1], "seeds": [0]}).hash == "dc5d3ae34ee8b485"
    assert retrain.retrain_store(None, cfg).hash == old_way
    # the job store's hash is unchanged too: kind + config, floats rounded, 12 characters
    job_way = hashlib.sha256(json.dumps({"config": {"lr": 0.3}, "kind": "model"}, separators=(",", ":")).encode()).hexdigest()[:12]
    assert config_hash("model", {"lr": 0.1 + 0.2}) == job_way


def test_a_retrain_folder_written_before_the_merge_resumes(tmp_path) -> None:
    """A folder whose config.json and group files were written with the old hash is resumed
    (its groups load), and a folder of another config is refused with the difference named."""
    import json

    import pytest

    from gradaudit import ParameterError

    cfg = {"levels": [0.1], "seeds": [0], "fill": "zero"}
    (tmp_path / "groups").mkdir()
    old = retrain.retrain_store(None, cfg).hash
    (tmp_path / "config.json").write_text(json.dumps({"config_hash": old, "config": cfg}))
    (tmp_path / "groups" / "s0.json").write_text(json.dumps({"config_hash": old, "group": "s0", "acc": [0.75]}))
    store = retrain.retrain_store(tmp_path, cfg)
    assert store.load("s0")["acc"] == [0.75] and store.load("s1") is None
    store.save("s1", {"acc": [0.5]})
    assert retrain.retrain_store(tmp_path, cfg).load("s1")["acc"] == [0.5]
    with pytest.raises(ParameterError, match=r"another config \(config\.fill is 'zero' there, 'mean' here\)\. "
                                             r"Write to another folder \(--out of gradaudit diffroar"):
        retrain.retrain_store(tmp_path, {**cfg, "fill": "mean"})


def _quiet_defaults() -> dict[str, object]:
    import inspect

    from gradaudit import evaluation

    found = {}
    for name in evaluation.__all__:
        fn = getattr(evaluation, name)
        if callable(fn) and not isinstance(fn, type):
            param = inspect.signature(fn).parameters.get("quiet")
            if param is not None:
                found[name] = param.default
    return found


def test_every_evaluation_has_the_one_quiet_default() -> None:
    from gradaudit._progress import EVAL_QUIET

    found = _quiet_defaults()
    assert {"diffroar", "roar", "kar", "road", "pixel_perturbation", "degradation", "evaluate",
            "activation_maximization", "gan_test_score"} <= set(found)
    assert found == dict.fromkeys(found, EVAL_QUIET)


def test_every_study_report_opens_the_same_way() -> None:
    """One report header (title, study line, findings first) for the studies."""
    from gradaudit.experiments.reporting import open_report

    record = {"study": "srinivas", "quick": True, "results": {"findings": ["robust leaks less", "k=1 is 0"]}}
    html = open_report(record, "Score matching", on=" on fmnist").to_html()
    assert "<h1>Score matching</h1><p class=\"subtitle\">gradaudit study &#x27;srinivas&#x27; on fmnist (--quick)</p>" in html
    assert html.index("Findings") < html.index("robust leaks less") < html.index("k=1 is 0")
    plain = open_report({**record, "quick": False, "study": "synthetic"}, "Synthetic").to_html()
    assert "<p class=\"subtitle\">gradaudit study &#x27;synthetic&#x27;</p>" in plain


def test_diffroar_defaults_are_the_named_constants() -> None:
    """Levels and max_stack are defined once (evaluation.diffroar) and every place that
    offers them (the functions, the metric registry behind the CLI, the studies) reads them."""
    import importlib
    import inspect

    from gradaudit.evaluation.registry import get_metric
    from gradaudit.experiments.measures import DiffROARSettings

    dr = importlib.import_module("gradaudit.evaluation.diffroar")  # (the package exports the function)
    for fn, levels in ((dr.diffroar, dr.LEVELS), (dr.roar, dr.ROAR_LEVELS), (dr.kar, dr.ROAR_LEVELS)):
        params = inspect.signature(fn).parameters
        assert params["levels"].default is levels and params["max_stack"].default == dr.MAX_STACK
    options = get_metric("diffroar").options
    assert options["levels"].default is dr.LEVELS and options["max_stack"].default == dr.MAX_STACK == 32
    settings = DiffROARSettings()
    assert settings.levels == list(dr.LEVELS) and settings.max_stack == dr.STUDY_MAX_STACK == 64


def test_torch_thread_pool_gives_workers_their_count_and_leaves_later_threads_the_callers() -> None:
    """rank_positions and the side-by-side retrain stacks share one pool helper; a worker's
    torch.set_num_threads must not become the count of threads started after the pool."""
    import threading

    from gradaudit.masking.ranking import rank_positions

    def count_in_new_thread() -> int:
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        return seen[0]

    caller = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with _torch_utils.torch_thread_pool(2, 1) as pool:
            assert list(pool.map(lambda _: torch.get_num_threads(), range(4))) == [1, 1, 1, 1]
        assert torch.get_num_threads() == 2 and count_in_new_thread() == 2
        rank_positions(torch.randn(64, 50), seed=0, workers=2)
        assert torch.get_num_threads() == 2 and count_in_new_thread() == 2
    finally:
        torch.set_num_threads(caller)
