"""Figures of gradaudit.report.plots: structure (axes, lines, bands), the numbers drawn,
NaN handling, determinism, no leaked matplotlib state, and clear errors on bad input."""

from __future__ import annotations

import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from gradaudit import ParameterError, ParameterTypeError
from gradaudit.report import plots

PNG = b"\x89PNG\r\n\x1a\n"
K = [0.05, 0.1, 0.2, 0.5, 1.0]


def _by_gid(artists, prefix):
    return [a for a in artists if (a.get_gid() or "").startswith(prefix)]


def _png_ok(fig: Figure) -> bytes:
    blob = plots.figure_bytes(fig, "png", dpi=60)
    assert blob.startswith(PNG)
    return blob


# ------------------------------------------------------------------ diffroar_curves
def test_diffroar_curves_structure_and_values():
    curves = {
        "standard": (K, [0.05, 0.04, 0.03, 0.01, 0.0], [0.01] * 5),
        "ℓ∞ 16/255": (np.array(K), np.array([0.15, 0.12, 0.08, 0.03, 0.0]), np.full(5, 0.02)),
        "linear": (torch.tensor(K), torch.tensor([-0.02, -0.01, 0.0, 0.0, 0.0]), torch.zeros(5)),
        "random": {"levels": K, "mean": [0.0, 0.01, -0.01, 0.0, 0.0]},  # no std: no band
    }
    extra = {"standard": (K, [0.02, 0.02, 0.01, 0.0, 0.0])}
    fig = plots.diffroar_curves(curves, "Fashion-MNIST", extra=extra)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    lines = _by_gid(ax.lines, "line:")
    assert [ln.get_gid() for ln in lines] == [f"line:{k}" for k in curves]
    assert len(_by_gid(ax.collections, "band:")) == 3
    (dotted,) = _by_gid(ax.lines, "extra:")
    assert dotted.get_linestyle() == ":" and dotted.get_color() == lines[0].get_color()
    (ref,) = _by_gid(ax.lines, "reference:")
    assert list(ref.get_ydata()) == [0.0, 0.0] and ref.get_linestyle() == "--"
    assert len(_by_gid(ax.patches, "shade:negative")) == 1
    np.testing.assert_allclose(lines[1].get_ydata(), [0.15, 0.12, 0.08, 0.03, 0.0])
    band = _by_gid(ax.collections, "band:ℓ∞ 16/255")[0]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx(0.17) and ys.min() == pytest.approx(-0.02)
    lo, hi = ax.get_ylim()
    assert lo < -0.02 and hi > 0.15
    # colours are distinct Okabe–Ito entries
    assert len({ln.get_color() for ln in lines}) == 4
    assert {to_hex(ln.get_color()).upper() for ln in lines} <= {c.upper() for c in plots.PALETTE}
    _png_ok(fig)


def test_diffroar_curves_sorts_levels_and_survives_nan():
    fig = plots.diffroar_curves({"m": ([1.0, 0.05, 0.5], [0.0, np.nan, 0.1], [0.01, 0.02, np.nan])})
    (line,) = _by_gid(fig.axes[0].lines, "line:")
    np.testing.assert_array_equal(line.get_xdata(), [0.05, 0.5, 1.0])
    assert np.isnan(line.get_ydata()[0]) and line.get_ydata()[1] == 0.1
    _png_ok(fig)


def test_diffroar_curves_options_and_panels():
    fig = plots.diffroar_curves({"m": (K, [0.1] * 5)}, random_line=False, shade_negative=False)
    ax = fig.axes[0]
    assert not _by_gid(ax.lines, "reference:") and not _by_gid(ax.patches, "shade:")
    fig2 = Figure(figsize=(6, 2.5), layout="constrained")
    axes = fig2.subplots(1, 2)
    for a, title in zip(axes, ["MLP", "ResNet"], strict=True):
        out = plots.diffroar_curves({"m": (K, [0.1] * 5, [0.01] * 5)}, title, ax=a)
        assert out is fig2
    assert [len(_by_gid(a.lines, "line:")) for a in fig2.axes] == [1, 1]
    assert [a.get_title() for a in fig2.axes] == ["MLP", "ResNet"]


@pytest.mark.parametrize(
    ("curves", "extra", "match"),
    [
        ({"a": (K, [0.1] * 4)}, None, r"'a'.*lengths 5, 4"),
        ({"a": (K, [0.1] * 5, [0.1] * 3)}, None, r"lengths 5, 5, 3"),
        ({}, None, "at least one"),
        ({"a": (K, [0.1] * 5)}, {"b": (K, [0.0] * 5)}, r"extra.*'b'.*Valid: a"),
        ({"a": ([[0.1]], [0.1])}, None, "1 dimension"),
    ],
)
def test_diffroar_curves_bad_input(curves, extra, match):
    with pytest.raises(ParameterError, match=match):
        plots.diffroar_curves(curves, extra=extra)


def test_diffroar_curves_bad_types():
    with pytest.raises(ParameterTypeError, match="must map each label"):
        plots.diffroar_curves({"a": 0.3})
    with pytest.raises(ParameterTypeError, match="numeric"):
        plots.diffroar_curves({"a": (K, ["x"] * 5)})
    with pytest.raises(ParameterError, match=r"'legend'.*Got 'top'"):
        plots.diffroar_curves({"a": (K, [0.1] * 5)}, legend="top")


# ------------------------------------------------------------------ accuracy_curves / bars
def test_accuracy_curves_shared_colour_styles_and_references():
    series = {
        "top-k": (K, [0.9, 0.92, 0.95, 0.97, 0.98], [0.01] * 5),
        "bottom-k": (K, [0.5, 0.6, 0.8, 0.9, 0.98]),
        "robust": ([0.0, 0.1, 0.2], [1.0, 0.5, 0.0]),
    }
    fig = plots.accuracy_curves(
        series,
        "k",
        colors={"top-k": 0, "bottom-k": 0},
        linestyles={"bottom-k": "--"},
        hlines={"chance": 0.1},
    )
    ax = fig.axes[0]
    top, bottom, robust = _by_gid(ax.lines, "line:")
    assert top.get_color() == bottom.get_color() != robust.get_color()
    assert bottom.get_linestyle() == "--" and top.get_linestyle() == "-"
    assert len(_by_gid(ax.collections, "band:")) == 1
    (chance,) = _by_gid(ax.lines, "reference:chance")
    assert chance.get_ydata()[0] == 0.1
    assert ax.get_xlabel() == "k" and ax.get_ylabel() == "accuracy"
    with pytest.raises(ParameterError, match=r"linestyles.*'top'.*Did you mean 'top-k'"):
        plots.accuracy_curves(series, "k", linestyles={"top": ":"})
    _png_ok(fig)


def test_bar_with_errors_heights_errors_and_nan():
    series = {"standard": ([0.45, 0.40, np.nan], [0.02, 0.03, 0.0]), "robust": [0.1, 0.12, 0.2]}
    fig = plots.bar_with_errors(
        ["5%", "10%", "20%"], series, "k", "null-block share", hlines={"chance": 0.5}
    )
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [c.get_label() for c in bars] == ["standard", "robust"]
    assert [len(c.patches) for c in bars] == [3, 3]
    np.testing.assert_allclose([p.get_height() for p in bars[0].patches], [0.45, 0.40, 0.0])
    np.testing.assert_allclose([p.get_height() for p in bars[1].patches], [0.1, 0.12, 0.2])
    assert bars[0].errorbar is not None and bars[1].errorbar is None
    assert [t.get_text() for t in ax.texts] == ["n/a"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5%", "10%", "20%"]
    _png_ok(fig)
    with pytest.raises(ParameterError, match=r"'robust'.*3 groups. Got lengths 2"):
        plots.bar_with_errors(["a", "b", "c"], {"robust": [0.1, 0.2]}, "k", "y")
    with pytest.raises(ParameterError, match="non-empty list"):
        plots.bar_with_errors([], {"robust": [0.1]}, "k", "y")


# ------------------------------------------------------------------ image grids
def test_block_attribution_grid_fig1_layout_and_normalisation():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 56, 28, generator=gen)
    maps = {
        "standard MLP": torch.randn(4, 1, 56, 28, generator=gen),
        "robust MLP": torch.randn(4, 56, 28, generator=gen),
    }
    fig = plots.block_attribution_grid(images, maps, col_labels=["a", "b", "c", "d"])
    assert len(fig.axes) == 3 * 4
    for ax in fig.axes:
        (boundary,) = _by_gid(ax.lines, "boundary")
        assert boundary.get_ydata()[0] == 27.5 and boundary.get_color() == "red"
        assert boundary.get_linestyle() == ":"
    by_gid = {ax.get_gid(): ax for ax in fig.axes}
    np.testing.assert_allclose(
        by_gid["image:2"].images[0].get_array(), images[2, 0].numpy(), rtol=1e-6
    )
    shown = by_gid["map:standard MLP:1"].images[0]
    expected = maps["standard MLP"][1, 0].abs()
    np.testing.assert_allclose(shown.get_array(), (expected / expected.max()).numpy(), rtol=1e-6)
    assert shown.get_clim() == (0.0, 1.0) and shown.get_cmap().name.startswith("gray")
    assert by_gid["image:0"].get_title() == "a"
    assert fig.axes[0].get_ylabel() == "image"
    _png_ok(fig)


def test_attribution_grid_signed_rows_channels_and_nan():
    images = np.random.default_rng(1).random((2, 3, 8, 8))
    signed = np.random.default_rng(2).normal(size=(2, 3, 8, 8))
    magnitude = np.abs(signed)
    magnitude[1] = np.nan  # a failed attribution: drawn grey, never crashes
    fig = plots.attribution_grid(images, {"grad": signed, "|grad|": magnitude})
    assert len(fig.axes) == 3 * 2
    by_gid = {ax.get_gid(): ax for ax in fig.axes}
    s = by_gid["map:grad:0"].images[0]
    total = signed[0].sum(axis=0)
    np.testing.assert_allclose(s.get_array(), total / np.abs(total).max())
    assert s.get_clim() == (-1.0, 1.0) and s.get_cmap().name.startswith("bwr")
    m = by_gid["map:|grad|:0"].images[0]
    assert m.get_clim() == (0.0, 1.0) and np.nanmax(m.get_array()) == pytest.approx(1.0)
    assert np.isnan(np.asarray(by_gid["map:|grad|:1"].images[0].get_array().filled(np.nan))).all()
    _png_ok(fig)
    with pytest.raises(ParameterError, match=r"match the images' \(N, H, W\) = \(2, 8, 8\).*'bad'"):
        plots.attribution_grid(images, {"bad": np.zeros((2, 1, 8, 9))})
    with pytest.raises(ParameterError, match="1 or 3 channels"):
        plots.attribution_grid(np.zeros((2, 2, 8, 8)), {"g": np.zeros((2, 8, 8))})


def test_image_grid_axes_labels_and_rgb():
    fig = plots.image_grid(torch.rand(10, 1, 12, 12), labels=list(range(10)), ncols=4)
    assert len(fig.axes) == 10
    assert [ax.get_title() for ax in fig.axes] == [str(i) for i in range(10)]
    rgb = plots.image_grid(np.random.default_rng(0).normal(size=(3, 3, 5, 5)), ncols=8)
    assert len(rgb.axes) == 3 and rgb.axes[0].images[0].get_array().shape == (5, 5, 3)
    arr = rgb.axes[0].images[0].get_array()
    assert arr.min() >= 0.0 and arr.max() <= 1.0
    with pytest.raises(ParameterError, match=r"one label per image: 10. Got 3"):
        plots.image_grid(torch.rand(10, 12, 12), labels=[1, 2, 3])
    with pytest.raises(ParameterError, match="'ncols'"):
        plots.image_grid(torch.rand(2, 12, 12), ncols=0)


def test_coordinate_heatmaps_fig5_layout_and_row_normalisation():
    x = np.zeros((10, 10))
    x[np.arange(10), np.arange(10) % 5] = np.r_[np.ones(5), -np.ones(5)]
    grads = {
        "linear": np.tile(np.r_[np.ones(5), np.zeros(5)], (10, 1)) * np.arange(1, 11)[:, None],
        "robust MLP": -2.0 * np.abs(x),
    }
    grads["robust MLP"][3] = 0.0  # an all-zero row stays zero (no NaN from 0/0)
    fig = plots.coordinate_heatmaps(x, grads, n_relevant=5)
    heat = [ax for ax in fig.axes if ax.images]
    assert len(heat) == 3 and len(fig.axes) == 4  # + one shared colorbar
    for ax in heat:
        (div,) = _by_gid(ax.lines, "divider")
        assert div.get_xdata()[0] == 4.5
    assert heat[0].images[0].get_clim() == (-1.0, 1.0)
    np.testing.assert_allclose(
        heat[1].images[0].get_array(), np.tile(np.r_[np.ones(5), np.zeros(5)], (10, 1))
    )
    robust = np.asarray(heat[2].images[0].get_array())
    np.testing.assert_allclose(np.delete(robust, 3, axis=0), np.delete(np.abs(x), 3, axis=0))
    assert (robust[3] == 0).all()
    assert len(plots.coordinate_heatmaps(x, grads, grad_range=(0.8, 1.0)).axes) == 5
    with pytest.raises(ParameterError, match="shape of x"):
        plots.coordinate_heatmaps(x, {"m": np.zeros((10, 9))})
    with pytest.raises(ParameterError, match=r"'n_relevant'.*\[1, 9\]. Got 10"):
        plots.coordinate_heatmaps(x, grads, n_relevant=10)


# ------------------------------------------------------------------ metric_heatmap
def test_metric_heatmap_cells_nan_and_direction():
    vals = np.array([[0.5, np.nan, 0.25], [0.0, 1.0, 0.75]])
    fig = plots.metric_heatmap(
        vals, ["grad", "ig"], ["std", "robust", "resnet"], "DiffROAR", fmt="{:.2f}"
    )
    ax = fig.axes[0]
    texts = {t.get_gid(): t.get_text() for t in ax.texts}
    assert len(texts) == 6
    assert (
        texts["cell:0:0"] == "0.50" and texts["cell:0:1"] == "n/a" and texts["cell:1:1"] == "1.00"
    )
    assert len(fig.axes) == 2  # heatmap + colorbar
    good = plots.metric_heatmap(vals, ["a", "b"], ["x", "y", "z"]).axes[0].images[0]
    bad = (
        plots.metric_heatmap(vals, ["a", "b"], ["x", "y", "z"], higher_is_better=False)
        .axes[0]
        .images[0]
    )
    # the best cell gets the same colour whichever way the metric points
    assert good.to_rgba(1.0) == bad.to_rgba(0.0)
    _png_ok(fig)
    with pytest.raises(ParameterError, match=r"'col_labels'.*3 labels. Got 2"):
        plots.metric_heatmap(vals, ["a", "b"], ["x", "y"])
    with pytest.raises(ParameterError, match="2 dimension"):
        plots.metric_heatmap([1.0, 2.0], ["a"], ["x", "y"])
    with pytest.raises(ParameterError, match="colormap"):
        plots.metric_heatmap(vals, ["a", "b"], ["x", "y", "z"], cmap="no-such-map")


# ------------------------------------------------------------------ output and purity
def test_rendering_is_deterministic_and_rcparams_are_restored(tmp_path):
    before = dict(matplotlib.rcParams)
    make = lambda: plots.diffroar_curves({"a": (K, [0.1, 0.05, 0.0, -0.01, 0.0], [0.01] * 5)})  # noqa: E731
    assert plots.figure_bytes(make(), "png", dpi=50) == plots.figure_bytes(make(), "png", dpi=50)
    assert plots.figure_bytes(make(), "pdf") == plots.figure_bytes(make(), "pdf")
    assert dict(matplotlib.rcParams) == before
    paths = plots.save_figure(make(), tmp_path / "fig" / "curve.png", dpi=50)
    assert [p.name for p in paths] == ["curve.png", "curve.pdf"]
    assert paths[0].read_bytes().startswith(PNG) and paths[1].read_bytes().startswith(b"%PDF")
    with pytest.raises(ParameterError, match=r"'fmt'.*'png', 'pdf', 'svg'. Got 'jpg'"):
        plots.figure_bytes(make(), "jpg")


def test_import_has_no_side_effects():
    code = (
        "import sys, matplotlib; raw = lambda: dict.__getitem__(matplotlib.rcParams, 'backend'); "
        "b = raw(); import gradaudit.report, gradaudit.report.html; "
        "print('matplotlib.pyplot' in sys.modules, raw() == b)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_attribution_grid_transposed_puts_one_row_per_image():
    import numpy as np

    from gradaudit.report import plots

    imgs = np.zeros((3, 1, 8, 4))
    maps = {"a": np.ones((3, 1, 8, 4)), "b": -np.ones((3, 1, 8, 4))}
    fig = plots.attribution_grid(imgs, maps, transpose=True)
    axes = np.array(fig.axes).reshape(3, 3)
    assert [ax.get_gid() for ax in axes[:, 0]] == ["image:0", "image:1", "image:2"]
    assert [ax.get_gid() for ax in axes[1]] == ["image:1", "map:a:1", "map:b:1"]
    assert [ax.get_title() for ax in axes[0]] == ["image", "a", "b"]
