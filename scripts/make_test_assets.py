"""Rebuild ``tests/assets/mnist_fmnist_slice.safetensors`` from the real data.

The slice holds the first ``PER_CLASS`` test images of every class of MNIST and
Fashion-MNIST (in test-set order), as uint8 images with their labels and their row in the
test set, so tests can use real images without the data root. Its tensors are reproducible
from the published files (the safetensors header's key order may vary).

Usage:
    python scripts/make_test_assets.py [--data-root DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gradaudit import data
from gradaudit._io import save_tensors
from gradaudit.data.sources import IDX_SETS, idx_files

PER_CLASS = 30
OUT = Path(__file__).resolve().parent.parent / "tests" / "assets" / "mnist_fmnist_slice.safetensors"


def slice_tensors(name: str, root: Path | None) -> dict[str, torch.Tensor]:
    """The first PER_CLASS test images of each class: uint8 x, int64 y and test-set rows."""
    test = data.load(name, "test", root=root)
    rows = torch.cat([torch.nonzero(test.y == c).squeeze(1)[:PER_CLASS]
                      for c in range(test.num_classes)]).sort().values
    x = (test.x[rows] * 255).round().to(torch.uint8)
    return {f"{name}_x": x, f"{name}_y": test.y[rows], f"{name}_index": rows}


def build(root: Path | None, out: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    sources = {}
    for name in IDX_SETS:
        tensors.update(slice_tensors(name, root))
        sources[name] = {spec.name: spec.md5 for spec in idx_files(name, "test")}
    meta = {"per_class": PER_CLASS, "split": "test", "sources": sources,
            "script": "scripts/make_test_assets.py"}
    save_tensors(out, tensors, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=None,
                        help="data root (default: $GRADAUDIT_DATA or ./data)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    build(args.data_root, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
