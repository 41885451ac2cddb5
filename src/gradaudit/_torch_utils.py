"""Mode and device helpers for any ``nn.Module``, below every package that runs models, so
attribution, evaluation and training import them without importing each other."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

__all__ = ["eval_mode", "model_device", "torch_thread_pool"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode inside the block and restore each module's mode after.

    A model already in eval mode everywhere is left alone (no ``eval()`` call, nothing to
    restore): the common case of an attribution or evaluation of a trained model, where the
    module walks were a measurable share of a small model's call."""
    modules = list(model.modules())
    modes = [m.training for m in modules]
    if any(modes):
        model.eval()
    try:
        yield model
    finally:
        for m, mode in zip(modules, modes, strict=True):
            if m.training != mode:
                m.training = mode


def model_device(
    model: nn.Module,
    device: str | torch.device | None = None,
    default: str | torch.device = "cpu",
) -> torch.device:
    """``device`` if given, else the device of the model's first parameter, else ``default``
    (a model without parameters)."""
    if device is not None:
        return torch.device(device)
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device(default)


@contextlib.contextmanager
def torch_thread_pool(workers: int, torch_threads: int = 1) -> Iterator[ThreadPoolExecutor]:
    """A pool of ``workers`` Python threads whose torch ops each run on ``torch_threads``
    threads: torch's CPU ops release the GIL, so independent pieces of work run side by side.

    ``torch.set_num_threads`` in a worker sets that thread's count, but also torch's default
    for threads started later; the caller's count is set again on exit, so a thread started
    after the pool (in this library or the caller's code) does not inherit the workers'."""
    caller = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(torch_threads,)) as pool:
            yield pool
    finally:
        torch.set_num_threads(caller)
