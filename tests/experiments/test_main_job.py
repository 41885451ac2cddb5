"""The README's main job (`gradaudit run` with no study) at --quick scale, through the CLI."""

import json
import re
import subprocess
import sys

import pytest

from tablefit import overflowing_tables

pytestmark = pytest.mark.slow


def test_main_job_writes_an_index_report_linking_both_studies(mnist_root, tmp_path):
    out = tmp_path / "main"
    proc = subprocess.run([sys.executable, "-m", "gradaudit.cli", "run", "--quick", "--quiet", "--out", str(out),
                           "--data-root", str(mnist_root)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert f"report: {out / 'report.html'}" in proc.stdout
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'href="synthetic/report.html"' in html and 'href="blockmnist/report.html"' in html
    for part in ("synthetic", "blockmnist"):
        assert (out / part / "report.html").is_file()
        assert json.loads((out / part / "results.json").read_text())["results"]["findings"]
    record = json.loads((out / "results.json").read_text())
    assert record["study"] == "main" and record["quick"] is True
    assert (out / "store").is_dir()  # one store shared by both studies
    # the same closing sections in the index and in both reports, and every table fits the page at 1280 px
    for path in (out / "report.html", out / "synthetic" / "report.html", out / "blockmnist" / "report.html"):
        page = path.read_text(encoding="utf-8")
        assert all(f">{s}</h2>" in page for s in ("Reproduce", "Provenance")), path
        assert "wall time of this run" in page and "--quick --config config.yaml" in page, path
        assert overflowing_tables(page, 1280) == [], path
        shown = re.sub(r"<[^>]+>", " ", page.split("<details>")[0])  # the text a reader sees, not the config
        for raw in ("test_accuracy", "own_share", "top_block_is_own", "LERF", "MORF"):
            assert raw not in shown, (path, raw)
