"""Accuracy floors on real MNIST: standard and l-inf adversarially trained 2-layer MLPs.

Floors (foundation issue): a 2-layer MLP reaches ≥ 97% test accuracy within 3 epochs;
l-inf PGD at eps = 0.1 drives it below 20%; an l-inf-PGD-trained MLP keeps ≥ 60% there.
The attacks are 40-step PGD with random start (``robust_accuracy``'s evaluation default)
on the first 1000 test images.
"""

from __future__ import annotations

import pytest

from gradaudit import models, training

pytestmark = pytest.mark.slow

# Adam + one-cycle converges within 3 epochs (measured: 97.9% test accuracy).
STANDARD = training.Recipe(epochs=3, batch_size=128, optimizer="adam", lr=2e-3, schedule="onecycle")
# PGD training on a 10k subset, eps_train slightly above the evaluation radius, 5 steps of
# 2.5·eps/5 (measured: ~92% clean, ~70% robust at eps = 0.1).
ROBUST = training.Recipe(epochs=4, batch_size=128, optimizer="adam", lr=2e-3, schedule="onecycle",
                         attack="linf", eps=0.12, attack_steps=5)
N_ADV_TRAIN = 10_000
N_EVAL = 1000


@pytest.fixture(scope="module")
def standard_mlp(mnist_train):
    net = models.build("mlp", mnist_train.input_shape, 10, seed=0)
    training.fit(net, mnist_train, STANDARD, quiet=True)
    return net


@pytest.fixture(scope="module")
def robust_mlp(mnist_train):
    net = models.build("mlp", mnist_train.input_shape, 10, seed=0)
    training.fit(net, mnist_train.subset(slice(0, N_ADV_TRAIN)), ROBUST, quiet=True)
    return net


def test_standard_mlp_reaches_97_percent_in_3_epochs(standard_mlp, mnist_test) -> None:
    acc = training.accuracy(standard_mlp, mnist_test.x, mnist_test.y)
    print(f"standard MLP, 3 epochs: test accuracy {acc:.4f}")
    assert acc >= 0.97


def test_pgd_breaks_the_standard_mlp(standard_mlp, mnist_test) -> None:
    x, y = mnist_test.x[:N_EVAL], mnist_test.y[:N_EVAL]
    acc = training.robust_accuracy(standard_mlp, x, y, norm="linf", eps=[0.1])[0.1]
    print(f"standard MLP: l-inf PGD-40 robust accuracy at eps=0.1: {acc:.4f}")
    assert acc < 0.20


def test_adversarially_trained_mlp_stays_robust(robust_mlp, standard_mlp, mnist_test) -> None:
    x, y = mnist_test.x[:N_EVAL], mnist_test.y[:N_EVAL]
    accs = training.robust_accuracy(robust_mlp, x, y, norm="linf", eps=[0.0, 0.1])
    print(f"l-inf PGD-trained MLP: clean {accs[0.0]:.4f}, robust at eps=0.1 {accs[0.1]:.4f}")
    assert accs[0.1] >= 0.60
    assert accs[0.0] >= 0.85
