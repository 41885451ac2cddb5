"""The synthetic study at --quick scale: outputs, and the findings robust at that scale."""

import json
import re
from html.parser import HTMLParser

import pytest

from gradaudit import ParameterError
from gradaudit.experiments import run_study, study_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    report = run_study("synthetic", quick=True, out=out, quiet=True)
    return out, report


def test_writes_valid_report_and_results(synthetic_run):
    out, report = synthetic_run
    assert report == out / "report.html"
    HTMLParser().feed(report.read_text(encoding="utf-8"))
    record = json.loads((out / "results.json").read_text())
    assert {"study", "config", "seed", "results", "versions", "git", "wall_time_s"} <= set(record)
    res = record["results"]
    assert [r["model"] for r in res["v1"]] == ["standard MLP", "ℓ∞-robust MLP (ε=0.3)"]
    for row in res["v1"]:
        assert {"test_accuracy", "top1", "bottom1", "aq", "robust_accuracy"} <= set(row)
    assert len(res["simplified"]) == 3 and res["findings"]


def test_report_has_the_common_sections_and_tables_that_fit_the_page(synthetic_run):
    from tablefit import overflowing_tables

    html = synthetic_run[1].read_text(encoding="utf-8")
    for section in ("Findings", "Reproduce", "Provenance"):
        assert f">{section}</h2>" in html
    assert "gradaudit run synthetic --quick --config config.yaml" in html and "wall time of this run" in html
    shown = re.sub(r"<[^>]+>", " ", html.split("<details>")[0])  # the text a reader sees, not the config dump
    assert "own_share" not in shown and "top_block_is_own" not in shown and ">mass on own block (%)</th>" in html
    assert overflowing_tables(html, 1280) == []


def test_robust_model_ranks_the_signal_first(synthetic_run):
    res = json.loads((synthetic_run[0] / "results.json").read_text())["results"]
    standard, robust = res["v1"]
    assert robust["top1"] >= 0.95
    assert standard["aq"] < 0  # feature inversion of the standard model
    assert robust["robust_accuracy"]["0.3"] > 0.9 > standard["robust_accuracy"]["0.3"]


def test_standard_models_leak_and_the_robust_one_does_not(synthetic_run):
    res = json.loads((synthetic_run[0] / "results.json").read_text())["results"]
    linear, standard, robust = res["simplified"]
    assert linear["own_share"] < 2 * linear["chance"]
    assert standard["own_share"] < 2 * standard["chance"]
    assert robust["own_share"] > 0.5 and robust["top_block_is_own"] > 0.9


def test_rerun_reuses_finished_jobs(synthetic_run):
    out, _ = synthetic_run
    before = json.loads((out / "results.json").read_text())["results"]
    run_study("synthetic", quick=True, out=out, quiet=True)
    after = json.loads((out / "results.json").read_text())
    assert after["results"] == before
    assert after["wall_time_s"] < 15


@pytest.mark.parametrize("override", ["bogus=1", "v1.dim=x", "v1.n_train=0", "simplified.noise=laplace"])
def test_bad_config_fails_before_work(override, tmp_path):
    with pytest.raises(ParameterError):
        study_config("synthetic", quick=True, overrides=[override])
    with pytest.raises(ParameterError):
        run_study("synthetic", quick=True, overrides=[override], out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
