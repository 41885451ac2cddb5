"""Ground-truth metrics of the synthetic theory data, on hand-built attributions."""

import pytest
import torch

from gradaudit import ParameterError
from gradaudit.evaluation.theory import block_leakage, signal_rank


def test_signal_rank_counts_first_and_last():
    g = torch.tensor([[5.0, 1.0, 2.0], [0.1, 3.0, 2.0], [1.0, 2.0, -9.0], [1.0, 2.0, 3.0]])
    idx = torch.tensor([0, 0, 2, 1])
    r = signal_rank(g, idx)
    # point 0: signal first; point 1: signal last; point 2: |−9| first; point 3: middle
    assert r.top1 == pytest.approx(0.5)
    assert r.bottom1 == pytest.approx(0.25)
    assert r.aq == pytest.approx(0.25)
    assert r.n == 4


def test_block_leakage_instance_specific_vs_uniform():
    block_ids = torch.arange(4).repeat_interleave(2)  # 4 blocks of 2 coordinates
    signal = torch.tensor([0, 1])
    specific = torch.zeros(2, 8)
    specific[0, 0:2] = 1.0
    specific[1, 2:4] = 1.0
    r = block_leakage(specific, signal, block_ids, relevant=2)
    assert r.own_share == pytest.approx(1.0)
    assert r.top_block_is_own == pytest.approx(1.0)
    assert r.relevant_share == pytest.approx(1.0)
    uniform = torch.zeros(2, 8)
    uniform[:, 0:4] = 1.0
    uniform[:, 4:] = 0.5  # noise blocks get a third of the mass
    r = block_leakage(uniform, signal, block_ids, relevant=2)
    assert r.own_share == pytest.approx(0.5) == pytest.approx(r.chance)
    assert r.relevant_share == pytest.approx(4 / 6)


def test_block_leakage_rejects_mismatched_shapes():
    with pytest.raises(ParameterError, match="block_ids"):
        block_leakage(torch.ones(2, 8), torch.tensor([0, 1]), torch.arange(7), relevant=2)
    with pytest.raises(ParameterError, match="rows"):
        signal_rank(torch.ones(3, 4), torch.tensor([0, 1]))
