"""ResNets: the CIFAR variant (3x3 stem, no max-pool) and the ImageNet variant (7x7 stem).

CIFAR-style depths follow Srinivas & Fleuret (ICLR 2021, ``models/resnet.py`` of
idiap/rethinking-saliency) and the ``robustness`` library's ResNet50 used by Shah et al.
(NeurIPS 2021): 3x3/s1 stem with 64 channels, four stages at strides 1, 2, 2, 2, global
average pooling and one Linear layer. ``act="softplus"`` replaces every ReLU by
``Softplus(beta)`` (the reference code keeps one ReLU inside its Bottleneck; here every
activation follows ``act``). ``width`` scales the stage widths (64 = the published size;
16 is a CPU-sized ResNet).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_bool, check_int
from .layers import activation

__all__ = ["ResNet", "imagenet_resnet18", "resnet"]

DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    9: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


class Pointwise(nn.Conv2d):
    """A 1×1 convolution (any stride, no padding) that runs as a matrix product over the
    channels when its input is channels-last on a CPU.

    torch 2.13's CPU convolution crashes (segfault or abort) in the backward pass of 1×1
    convolutions of channels-last inputs with an odd batch (3, 5, 7, 9, 127 images, two
    threads; reproduced with a bare ``nn.Conv2d(8, 16, 1, 2)``). On an NHWC tensor a 1×1
    convolution is exactly ``linear`` over the last (channel) dimension of the strided view,
    which takes the BLAS path instead: same function and parameters (the state dict is that
    of ``nn.Conv2d``), float rounding apart. Other layouts and devices use the convolution.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        s = self.stride[0]
        view = x[:, :, ::s, ::s] if s > 1 else x
        return F.linear(view.permute(0, 2, 3, 1), self.weight.flatten(1)).permute(0, 3, 1, 2)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, act: str, beta: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = activation(act, beta)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = _shortcut(cin, width, stride)
        self.act2 = activation(act, beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, act: str, beta: float) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = Pointwise(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = activation(act, beta)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = activation(act, beta)
        self.conv3 = Pointwise(width, cout)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)
        self.act3 = activation(act, beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(Pointwise(cin, cout, stride), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """A ResNet with a configurable stem; see the module docstring."""

    def __init__(
        self,
        block: str,
        blocks: Sequence[int],
        in_channels: int,
        num_classes: int,
        width: int = 64,
        act: str = "relu",
        beta: float = 10.0,
        imagenet_stem: bool = False,
        stem_pool: int = 1,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        cls = BasicBlock if block == "basic" else Bottleneck
        if imagenet_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                activation(act, beta),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(width),
                activation(act, beta),
                *([nn.AvgPool2d(stem_pool)] if stem_pool > 1 else []),
            )
        stages: list[nn.Module] = []
        cin = width
        for i, n in enumerate(blocks):
            w = width * 2**i
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(cls(cin, w, stride, act, beta))
                cin = w * cls.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:  # NHWC activations: oneDNN's faster convolutions on CPU
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(out, 1))


def resnet(
    depth: int,
    input_shape: Sequence[int],
    num_classes: int,
    width: int = 64,
    act: str = "relu",
    beta: float = 10.0,
    stem_pool: int = 1,
    channels_last: bool = False,
) -> ResNet:
    """A CIFAR-style ResNet of ``depth`` in {9, 18, 34, 50}.

    ``stem_pool=2`` average-pools the stem's output by 2: a CPU-sized ResNet (about 4× fewer
    FLOPs) for inputs like BlockMNIST's 56×28. Average pooling, unlike a strided stem
    convolution, spreads input gradients evenly (no checkerboard). 1 is the published layout.
    ``channels_last=True`` runs the layers on channels-last (NHWC) activations: the same
    function and weights (the state dict is unchanged), measured 1.3-1.6× faster training of
    narrow CIFAR ResNets on a CPU (``bench/train_throughput.py``); off by default. The 1×1
    convolutions are :class:`Pointwise`: torch 2.13's CPU 1×1 convolution crashes on NHWC
    inputs with odd batches, which the matrix-product form avoids.
    """
    block, blocks = DEPTHS[depth]
    width = check_int(width, "width", f"build('resnet{depth}')", 1)
    stem_pool = check_int(stem_pool, "stem_pool", f"build('resnet{depth}')", 1, 4)
    check_bool(channels_last, "channels_last", f"build('resnet{depth}')")
    return ResNet(block, blocks, input_shape[0], num_classes, width, act, beta, stem_pool=stem_pool,
                  channels_last=channels_last)


def imagenet_resnet18(
    input_shape: Sequence[int],
    num_classes: int,
    width: int = 64,
    act: str = "relu",
    beta: float = 10.0,
) -> ResNet:
    """torchvision-layout ResNet18 (7x7/s2 stem, max-pool) for 112 px ImageNet-10 inputs."""
    width = check_int(width, "width", "build('resnet18-imagenet')", 1)
    return ResNet("basic", (2, 2, 2, 2), input_shape[0], num_classes, width, act, beta, True)
