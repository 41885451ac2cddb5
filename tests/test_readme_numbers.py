"""The README quotes only numbers from committed results files (issue 13).

Its result blocks must be exactly what ``scripts/render_readme.py`` renders from
``docs/results/*.json``; and every number in a rendered block must be a value of those
files (rounded as shown, or as a percentage, or a wall time in min/s), so a number typed
into a block by hand, or a renderer that makes one up, fails here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _renderer():
    spec = importlib.util.spec_from_file_location("render_readme", ROOT / "scripts" / "render_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rr = _renderer()
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _leaves(obj, numbers: list[float], strings: set[str]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            with contextlib.suppress(ValueError):
                numbers.append(float(k))  # robust-accuracy curves are keyed by ε
            _leaves(v, numbers, strings)
    elif isinstance(obj, list):
        for v in obj:
            _leaves(v, numbers, strings)
        if len(obj) > 1 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in obj):
            # a mean over the first levels (e.g. over k < 1, the last level being k = 1) is a value too
            numbers.extend(sum(obj[:n]) / n for n in range(2, len(obj) + 1))
    elif isinstance(obj, bool) or obj is None:
        return
    elif isinstance(obj, int | float):
        if math.isfinite(obj):
            numbers.append(float(obj))
    elif isinstance(obj, str):
        strings.add(obj)


_NUMBER = re.compile(r"(?<![\w.§])([+−-]?±?)(\d+(?:,\d{3})*(?:\.\d+)?)(%?)(?![\w.])")
_DURATION = re.compile(r"\b(\d+) min (\d+) s\b|\b(\d+) s\b")
_IGNORED = re.compile(r"§\d+|Fig\. \d+|\d{4}-\d{2}-\d{2}|revision `[0-9a-f]+`|`[^`]*`")


def _matches(token: str, decimals: int, percent: bool, numbers: list[float]) -> bool:
    value = float(token.replace(",", ""))
    tol = 0.5 * 10 ** -decimals + 1e-9
    for v in numbers:
        for cand in (abs(v), 100 * abs(v)) if percent else (abs(v),):
            if abs(cand - value) <= tol:
                return True
    return False


def unexplained_numbers(block: str, record_numbers: list[float], record_strings: set[str]) -> list[str]:
    """Numbers in ``block`` that are no value of the results files."""
    text = block
    for s in sorted((s for s in record_strings if len(s) >= 3), key=len, reverse=True):
        text = text.replace(s, " ")  # model labels such as 'MLP ℓ2 ε=2' are file strings
    text = _IGNORED.sub(" ", text)
    bad = []
    for m in _DURATION.finditer(text):
        secs = int(m.group(1)) * 60 + int(m.group(2)) if m.group(1) else int(m.group(3))
        if not any(abs(v - secs) <= 0.5 + 1e-9 for v in record_numbers):
            bad.append(m.group(0))
    text = _DURATION.sub(" ", text)
    for m in _NUMBER.finditer(text):
        token = m.group(2)
        decimals = len(token.split(".")[1]) if "." in token else 0
        if not _matches(token, decimals, m.group(3) == "%", record_numbers):
            bad.append(m.group(0))
    return bad


@pytest.fixture(scope="module")
def results():
    return rr.load_results()


@pytest.fixture(scope="module")
def extra():
    """The other committed runs (cifar10 --quick, srinivas, the own-model example) the blocks read."""
    return rr.load_extra()


def _numbers_of(records) -> tuple[list[float], set[str]]:
    numbers: list[float] = []
    strings: set[str] = set()
    _leaves(records, numbers, strings)
    return numbers, strings


def test_every_block_is_present_once():
    names = [m["name"] for m in rr._BLOCK.finditer(README)]
    assert sorted(names) == sorted(rr.BLOCKS), names


def test_readme_blocks_are_what_the_results_files_render(results):
    rendered = rr.render(README, results)
    for name, body in rr.blocks(rendered).items():
        assert rr.blocks(README)[name] == body, (
            f"README block {name!r} differs from docs/results: run python scripts/render_readme.py")
    assert rendered == README


def test_every_number_in_a_block_comes_from_the_files(results, extra):
    main_numbers, main_strings = _numbers_of(results)
    for name, body in rr.blocks(README).items():
        if name in rr.FILES:  # a block of another committed run: only its own files explain its numbers
            numbers, strings = _numbers_of({f: extra[f] for f in rr.FILES[name] if f in extra})
        else:
            numbers, strings = main_numbers, main_strings
        assert unexplained_numbers(body, numbers, strings) == [], name


def test_every_results_file_is_read_by_a_block(results, extra):
    """Each docs/results/*.json is the main job's or read by a block, and each file a block reads exists."""
    on_disk = {p.stem for p in (ROOT / "docs" / "results").glob("*.json")}
    read = set(rr.PARTS) | {f for files in rr.FILES.values() for f in files}
    assert {f for files in rr.FILES.values() for f in files} <= on_disk
    unread = on_disk - read
    assert unread <= {"zoo-cifar10-quick"}, f"results files no block reads: {sorted(unread)}"
    assert set(extra) == read - set(rr.PARTS)


def test_other_runs_blocks_quote_their_files(extra):
    """The cifar10 block's table is the file's per-model numbers; its verdict follows the file."""
    body = rr.blocks(README)["cifar10-quick"]
    r = extra["cifar10-quick"]["results"]
    for m in r["models"]:
        row = next(line for line in body.splitlines() if line.startswith(f"| {m['model']} |"))
        assert rr.pct(m["test_accuracy"]) in row
        d = r["diffroar"]["label"][m["model"]]
        assert rr.signed(d["curves"]["attribution"]["diffroar"]["mean"][0]) in row
        assert rr.signed(d["leakage"]["attribution"]["mask_only_diffroar"]["mean"][0]) in row
        assert rr.signed(r["road"][m["model"]]["score"]) in row
    best = max(r["diffroar"]["label"],
               key=lambda lab: r["diffroar"]["label"][lab]["curves"]["attribution"]["diffroar"]["mean"][0])
    assert f"{best} has the higher DiffROAR" in body
    assert rr.duration(extra["cifar10-quick"]["wall_time_s"]) in body
    sri = rr.blocks(README)["srinivas"]
    for name, _ in rr._SRINIVAS:
        rec = extra[name]
        assert rr.pct(rec["results"]["proxy"]["test_accuracy"], 1) in sri
        if "gan_test" in rec["results"]:
            assert rec["results"]["gan_test"]["probability"]["reason"] in sri
    own = rr.blocks(README)["own-model"]
    assert own.count("\n| ") == 1 + len(extra["own_model_example"]["levels"])  # header + a row per level


def test_a_missing_other_run_file_gives_the_placeholder(results):
    body = rr.blocks(rr.render(README, results, extra={}))
    for name in rr.FILES:
        assert body[name] == rr.extra_placeholder(name)
        assert unexplained_numbers(body[name], [], set()) == []


def test_the_number_check_catches_a_made_up_number(results):
    numbers: list[float] = []
    strings: set[str] = set()
    _leaves(results, numbers, strings)
    wall = results["synthetic"]["wall_time_s"]
    good = f"took {rr.duration(wall)} and {rr.pct(results['synthetic']['results']['v1'][0]['bottom1'])}"
    assert unexplained_numbers(good, numbers, strings) == []
    assert unexplained_numbers(f"took {rr.duration(wall + 7777)}", numbers, strings) != []  # no file holds it
    assert unexplained_numbers("leaks 46.27% of its mass", numbers, strings) == ["46.27%"]


def test_results_files_are_copies_of_runs_with_provenance_and_wall_time(results):
    assert "synthetic" in results, "docs/results must hold at least the synthetic study of a main-job run"
    for part, record in results.items():
        assert record["study"] == part
        assert record["quick"] is False, f"{part}: the README quotes the full default run"
        assert {"config", "seed", "versions", "git", "wall_time_s", "copied"} <= set(record)
        assert record["git"]["commit"], f"{part}: the run must record its git revision"
        assert record["copied"]["results_written"][:4].isdigit()
    if "main" in results:  # the index and the studies are the same run
        main = results["main"]["results"]
        for part in ("synthetic", "blockmnist"):
            assert main[part]["wall_time_s"] == results[part]["wall_time_s"]
            assert main[part]["findings"] == results[part]["results"]["findings"]
    revisions = {r["git"]["commit"] for r in results.values()}
    assert len(revisions) == 1, f"docs/results mixes runs of several revisions: {revisions}"


def test_a_block_without_its_file_says_so_and_quotes_nothing(results):
    body = rr.blocks(rr.render(README, {}))
    assert all(text == rr.placeholder(list(rr.NEEDS[name])) for name, text in body.items() if rr.NEEDS[name])
    for name, needs in rr.NEEDS.items():
        if any(p not in results for p in needs):
            assert "Not measured at this revision" in rr.blocks(README)[name]


def test_render_script_check_mode_agrees(results):
    assert rr.main(["--check"]) == 0
    path = ROOT / "docs" / "results" / "synthetic.json"
    assert json.loads(path.read_text(encoding="utf-8"))["study"] == "synthetic"
