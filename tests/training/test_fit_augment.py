"""Augmentations: every output is a flip / padded crop of its input, draws are seeded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradaudit._validation import ParameterError
from gradaudit.training.augment import AUGMENTATIONS, augment_batch


def _images(n: int = 64, c: int = 3, h: int = 10, w: int = 12) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0))


def test_none_is_the_identity() -> None:
    x = _images()
    assert augment_batch(x, "none", torch.Generator()) is x


def test_flip_mirrors_about_half() -> None:
    x = _images(400)
    before = x.clone()
    out = augment_batch(x, "flip", torch.Generator().manual_seed(1))
    assert torch.equal(x, before)
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x, strict=True)])
    assert torch.all(flipped ^ kept)
    assert 150 < int(flipped.sum()) < 250


def test_crop_flip_outputs_are_padded_crops() -> None:
    x = _images(200)
    out = augment_batch(x, "crop-flip", torch.Generator().manual_seed(2))
    assert out.shape == x.shape and out.is_contiguous()
    padded = F.pad(x, (4, 4, 4, 4))
    h, w = x.shape[-2:]
    offsets = []
    for o, p in zip(out, padded, strict=True):
        found = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                 if torch.equal(o, (lambda c: c.flip(-1) if f else c)(p[:, dy : dy + h, dx : dx + w]))]
        assert found, "an output is no flip of a 4-px padded crop of its input"
        offsets.append(found[0])
    dys = {d[0] for d in offsets}
    dxs = {d[1] for d in offsets}
    assert dys == set(range(9)) and dxs == set(range(9))
    assert 60 < sum(d[2] for d in offsets) < 140


@pytest.mark.parametrize("kind", sorted(AUGMENTATIONS))
def test_seeded_draws_repeat(kind) -> None:
    x = _images()
    a = augment_batch(x, kind, torch.Generator().manual_seed(5))
    b = augment_batch(x, kind, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    if kind != "none":
        assert not torch.equal(a, augment_batch(x, kind, torch.Generator().manual_seed(6)))


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ParameterError, match=r"'kind' parameter of augment_batch must be one of 'none', 'flip', 'crop-flip'\. Got 'crop'\. Did you mean"):
        augment_batch(_images(), "crop", torch.Generator())
