"""ImageNet-10 (mixed_10) from a tiny ImageNet tree written in tmp_path."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gradaudit import DataError, ParameterError, data
from gradaudit.data.imagenet import preprocess
from gradaudit.data.wordnet import GROUPS, Hierarchy, read_hierarchy, superclass_members


def test_imagenet10_selection_labels_and_shapes(imagenet_tree: Callable) -> None:
    tree = imagenet_tree(per_class=3, boat_classes=2)
    s = data.load("imagenet10", "train", root=tree["root"])
    expected = tree["expected"]  # per superclass, the first 2 wnids in sorted order
    assert s.meta["wnids"] == [w for group in expected for w in group]
    assert "n70000001" not in s.meta["wnids"]  # second-listed parent is not kept
    assert s.x.shape == (10 * 2 * 3, 3, 112, 112) and s.x.dtype == torch.float32
    assert s.y.tolist() == [label for label in range(10) for _ in range(6)]
    assert s.meta["classes"] == [name for _, name in GROUPS["mixed_10"]]
    index = {w: i for i, w in enumerate(tree["classes"])}
    want = [index[w] for group in expected for w in group for _ in range(3)]
    assert s.per_image["imagenet_class"].tolist() == want
    assert s.x.min() >= 0.0 and s.x.max() <= 1.0 and s.bounds == (0.0, 1.0)
    # Pixels: the files in sorted order, Resize(128) + CenterCrop(112), /255.
    first = tree["root"] / "imagenet" / "train" / expected[0][0] / f"{expected[0][0]}_0.JPEG"
    with Image.open(first) as im:
        assert torch.equal(s.x[0], torch.from_numpy(preprocess(im)).float() / 255)


def test_imagenet10_val_split_and_cap(imagenet_tree: Callable) -> None:
    tree = imagenet_tree(per_class=3)
    val = data.load("imagenet10", "test", root=tree["root"], max_per_class=1)
    assert val.meta["split"] == "test" and len(val) == 20
    assert val.y.tolist() == [label for label in range(10) for _ in range(2)]
    full = data.load("imagenet10", "test", root=tree["root"])
    assert torch.equal(val.x, full.x[::3])  # the first file of each class
    with pytest.raises(ParameterError, match="'max_per_class'"):
        data.load("imagenet10", "test", root=tree["root"], max_per_class=0)


def test_preprocess_crops_the_centre_exactly() -> None:
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (128, 256, 3), dtype=np.uint8)  # short side already 128
    out = preprocess(Image.fromarray(wide))
    assert np.array_equal(out, wide[8:120, 72:184].transpose(2, 0, 1))
    tall = rng.integers(0, 256, (301, 128, 3), dtype=np.uint8)
    out = preprocess(Image.fromarray(tall))
    top = round((301 - 112) / 2)
    assert np.array_equal(out, tall[top:top + 112, 8:120].transpose(2, 0, 1))


def test_preprocess_resizes_the_short_side() -> None:
    flat = np.full((50, 70, 3), (10, 200, 33), dtype=np.uint8)
    out = preprocess(Image.fromarray(flat))
    assert out.shape == (3, 112, 112)
    assert (out == np.array([10, 200, 33], np.uint8)[:, None, None]).all()
    # A vertical ramp 0..255 over 64 rows, upsampled ×2: the crop keeps rows 8..119 of 128.
    ramp = np.repeat(np.linspace(0, 255, 64).round().astype(np.uint8)[:, None], 64, 1)
    out = preprocess(Image.fromarray(np.stack([ramp] * 3, -1)))
    column = out[0, :, 56].astype(int)
    assert (np.diff(column) >= 0).all() and column[0] > 0 and column[-1] < 255
    grey = Image.fromarray(ramp)  # greyscale files become RGB
    assert preprocess(grey).shape == (3, 112, 112)


def test_missing_tree_and_hierarchy(tmp_path: Path, imagenet_tree: Callable) -> None:
    with pytest.raises(DataError) as err:
        data.load("imagenet10", "train", root=tmp_path / "nothing")
    msg = str(err.value)
    assert "train" in msg and "words.txt" in msg and "wordnet.is_a.txt" in msg
    assert "image-net.org" in msg and str(tmp_path / "nothing" / "imagenet") in msg
    tree = imagenet_tree(per_class=1)
    (tree["root"] / "imagenet" / "words.txt").unlink()
    with pytest.raises(DataError, match=r"words\.txt") as err:
        data.load("imagenet10", "train", root=tree["root"])
    assert "wordnet.is_a.txt" not in str(err.value).split("not found")[0]


def test_missing_val_class_folder(imagenet_tree: Callable) -> None:
    tree = imagenet_tree(per_class=1)
    gone = tree["root"] / "imagenet" / "val" / tree["expected"][4][1]
    shutil.rmtree(gone)
    with pytest.raises(DataError, match="class folder") as err:
        data.load("imagenet10", "test", root=tree["root"])
    assert str(gone) in str(err.value)


def test_corrupt_image_names_the_file(imagenet_tree: Callable, formats: SimpleNamespace) -> None:
    tree = imagenet_tree(per_class=2)
    bad = tree["root"] / "imagenet" / "train" / tree["expected"][2][0] / "zz_broken.JPEG"
    good = formats.write_image(bad.with_name("tmp.jpeg"), np.zeros((64, 64, 3), np.uint8))
    bad.write_bytes(good.read_bytes()[:200])
    good.unlink()
    with pytest.raises(DataError, match="not a readable image") as err:
        data.load("imagenet10", "train", root=tree["root"])
    assert str(bad) in str(err.value)


def test_superclass_members_semantics() -> None:
    h = Hierarchy(parent={"a1": "A", "a2": "A", "a3": "mid", "mid": "A", "b1": "B", "b2": "B",
                          "x": "A"},
                  names={})
    classes = ["a3", "b2", "a1", "b1", "a2", "z"]
    assert superclass_members(h, classes, ["A", "B"]) == [["a1", "a2"], ["b1", "b2"]]
    assert superclass_members(h, classes, ["A", "B"], balanced=False) == [
        ["a1", "a2", "a3"], ["b1", "b2"]]
    with pytest.raises(DataError, match="C"):
        superclass_members(h, classes, ["A", "C"])
    with pytest.raises(DataError, match="disjoint"):
        superclass_members(h, classes, ["A", "mid"], balanced=False)


def test_corrupt_hierarchy_file(tmp_path: Path) -> None:
    is_a, words = tmp_path / "wordnet.is_a.txt", tmp_path / "words.txt"
    is_a.write_text("n1 n2\nn3\n")
    words.write_text("n1\tthing\n")
    with pytest.raises(DataError, match=r"line 2") as err:
        read_hierarchy(is_a, words)
    assert str(is_a) in str(err.value)
    is_a.write_text("n1 n2\n")
    words.write_text("n1 thing without a tab\n")
    with pytest.raises(DataError, match="wnid<TAB>names") as err:
        read_hierarchy(is_a, words)
    assert str(words) in str(err.value)
