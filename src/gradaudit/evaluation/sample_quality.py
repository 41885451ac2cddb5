"""Sample quality of a classifier's implicit density: activation maximization and GAN-test.

Srinivas & Fleuret read the logit f_y(x) as an unnormalised log p(x|y). Gradient ascent on it
from noise gives the model's "samples" of class y; a separately trained proxy classifier then
says whether they look like class y (GAN-test, Shmelkov et al., ECCV 2018). A model whose
implicit density is aligned with the data (score matching) should give recognisable samples,
one trained against it (anti-score matching) should not.

Source: Srinivas & Fleuret, "Rethinking the Role of Gradient-based Attribution Methods for
Model Interpretability", ICLR 2021, arXiv:2006.09128, §5.1.2 and Table 1 (seed-methods §A.6,
§A.7); Shmelkov, Schmid & Alahari, "How good is my GAN?", ECCV 2018, arXiv:1807.09499.

Reference code: idiap/rethinking-saliency ``utils/sgld.py`` (SGLD) and ``evaluations.py``
(the GAN-test loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._progress import EVAL_QUIET, progress
from .._torch_utils import eval_mode, model_device
from .._validation import (
    ParameterError,
    ParameterTypeError,
    check_float,
    check_int,
    unknown_name,
)
from ..training.metrics import accuracy

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "GAN_TEST_DEFAULTS",
    "ActivationSamples",
    "GanTestResult",
    "Saturation",
    "activation_maximization",
    "gan_test",
    "gan_test_saturation",
    "gan_test_score",
    "gan_test_targets",
    "sample_grid",
]

# The reference's GAN-test sampling settings (evaluations.py); its figures use steps=1000.
GAN_TEST_DEFAULTS: dict[str, Any] = {"steps": 500, "step_size": 0.1, "weight_decay": 1e-2}


@dataclass(frozen=True)
class ActivationSamples:
    """What :func:`activation_maximization` returns.

    Attributes:
        x: The samples, (N, C, H, W), on the CPU, inside ``config["bounds"]``.
        target: The class each sample maximises, (N,) int64, on the CPU.
        trajectory: Mean target logit over all samples before step 0, 1, ..., T
            (T + 1 values; the last one is at the returned samples).
        config: steps, step_size, weight_decay, shape, bounds, center, init_std, seed.
    """

    x: torch.Tensor
    target: torch.Tensor
    trajectory: tuple[float, ...]
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the samples themselves stay tensors)."""
        return {"n": int(self.x.shape[0]), "trajectory": list(self.trajectory), **self.config}


def _as_targets(targets: Any, caller: str) -> torch.Tensor:
    t = torch.as_tensor(targets)
    if t.dim() != 1 or t.numel() == 0 or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ParameterTypeError(
            f"The 'targets' argument of {caller} must be a non-empty 1-D sequence of class "
            f"indices. Got {t.dtype} of shape {tuple(t.shape)}."
        )
    if int(t.min()) < 0:
        raise ParameterError(f"The 'targets' argument of {caller} must be ≥ 0. Got {int(t.min())}.")
    return t.long().cpu()


def _check_bounds(bounds: Sequence[float], caller: str) -> tuple[float, float]:
    if len(bounds) != 2:
        raise ParameterError(f"The 'bounds' parameter of {caller} must be (lo, hi). Got {bounds!r}.")
    lo = check_float(bounds[0], "bounds[0]", caller)
    hi = check_float(bounds[1], "bounds[1]", caller, lo, low_open=True)
    return lo, hi


def _check_shape(shape: Sequence[int], caller: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ParameterError(f"The 'shape' parameter of {caller} must be (C, H, W). Got {tuple(shape)}.")
    return tuple(check_int(s, "shape", caller, 1) for s in shape)  # type: ignore[return-value]


def _model_dtype(model: nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None and p.dtype.is_floating_point else torch.float32


def _check_classes(model: nn.Module, shape: tuple[int, ...], target: torch.Tensor, caller: str) -> None:
    """One cheap forward to check that every target is one of the model's classes."""
    probe = torch.zeros(1, *shape, device=model_device(model), dtype=_model_dtype(model))
    with torch.no_grad(), eval_mode(model):
        classes = model(probe).shape[1]
    if int(target.max()) >= classes:
        raise ParameterError(
            f"The 'targets' argument of {caller} must hold classes in [0, {classes - 1}] "
            f"(the model has {classes} logits). Got {int(target.max())}."
        )


def _ascend(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, eta: float, wd: float,
    box: tuple[float, float, float], sums: torch.Tensor, bar: Any, task: Any,
) -> torch.Tensor:
    """T projected ascent steps on one chunk; adds Σ f_y per step into ``sums`` (T + 1,)."""
    lo, hi, center = box
    for t in range(steps + 1):
        x = x.detach().requires_grad_(True)
        fy = model(x).gather(1, y.view(-1, 1)).sum()
        sums[t] += fy.detach().to(sums.device)
        if t == steps:
            break
        (grad,) = torch.autograd.grad(fy, x)
        x = (x + eta * (grad - wd * (x - center))).clamp(lo, hi)
        bar.advance(task)
    return x.detach()


def activation_maximization(
    model: nn.Module,
    targets: Sequence[int] | torch.Tensor,
    *,
    shape: Sequence[int],
    steps: int = GAN_TEST_DEFAULTS["steps"],
    step_size: float = GAN_TEST_DEFAULTS["step_size"],
    weight_decay: float = GAN_TEST_DEFAULTS["weight_decay"],
    bounds: Sequence[float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 256,
    quiet: bool = EVAL_QUIET,
) -> ActivationSamples:
    """Class samples of the implicit density exp f_y(x): projected gradient ascent on f_y.

    Formula: x₀ = clamp(N(c, s²)), x_{t+1} = clamp(x_t + η·(∇ₓ Σ_b f_{y_b}(x_t) − wd·(x_t − c)),
    lo, hi), with c = (lo + hi)/2 and s = 0.2·(hi − lo) (0.5 and 0.2 on [0, 1]).

    Source: Srinivas & Fleuret, ICLR 2021, §5.1.2 ("gradient ascent on log p(x|y) = f_y(x)").

    Reference code: idiap/rethinking-saliency ``utils/sgld.py`` (class ``SGLD``).

    Deviations:
        * No Langevin noise is added, as in the reference despite its name "SGLD": this is
          deterministic, mode-seeking projected gradient ascent on the raw target logit.
        * Shapes, class count and input box are parameters (the reference hard-codes
          3×32×32, 100 classes and [0, 1]); the centre and initial spread scale with the box.
        * The initial noise is drawn for all samples at once from a seeded generator, so the
          samples do not depend on ``batch_size``; the model runs in eval mode (restored
          after) and its parameters' ``.grad`` are not touched.

    Args:
        model: Maps (N, C, H, W) inputs to (N, K) logits.
        targets: (N,) class per sample.
        shape: (C, H, W) of one input.
        steps: T, ascent steps (the reference: 500 for GAN-test, 1000 for figures).
        step_size: η.
        weight_decay: wd, the pull toward the box centre.
        bounds: (lo, hi), the input box.
        seed: Seeds the initial noise.
        batch_size: Samples per chunk (memory budget).
        quiet: No progress bar.

    Returns:
        :class:`ActivationSamples` (samples, targets, mean target-logit trajectory, config).

    Raises:
        ParameterError: bad step count, step size, decay, shape, bounds, seed, batch size or
            targets outside the model's classes.
    """
    caller = "activation_maximization()"
    y = _as_targets(targets, caller)
    shape = _check_shape(shape, caller)
    check_int(steps, "steps", caller, 0)
    check_float(step_size, "step_size", caller, 0.0, low_open=True)
    check_float(weight_decay, "weight_decay", caller, 0.0)
    lo, hi = _check_bounds(bounds, caller)
    check_int(seed, "seed", caller, 0)
    check_int(batch_size, "batch_size", caller, 1)
    _check_classes(model, shape, y, caller)

    center, spread = (lo + hi) / 2, 0.2 * (hi - lo)
    gen = torch.Generator().manual_seed(seed)
    x0 = (center + spread * torch.randn(len(y), *shape, generator=gen, dtype=torch.float64)).clamp(lo, hi)
    device = model_device(model)
    sums = torch.zeros(steps + 1, dtype=torch.float64)
    chunks = []
    with eval_mode(model), torch.enable_grad(), progress(quiet) as bar:
        task = bar.add_task("activation maximization", total=steps * ((len(y) - 1) // batch_size + 1))
        for i in range(0, len(y), batch_size):
            xb = x0[i : i + batch_size].to(device=device, dtype=_model_dtype(model))
            yb = y[i : i + batch_size].to(device)
            chunks.append(_ascend(model, xb, yb, steps, step_size, weight_decay,
                                  (lo, hi, center), sums, bar, task).cpu())
    config = {"steps": steps, "step_size": step_size, "weight_decay": weight_decay,
              "shape": list(shape), "bounds": [lo, hi], "center": center, "init_std": spread,
              "seed": seed}
    return ActivationSamples(torch.cat(chunks), y, tuple((sums / len(y)).tolist()), config)


def gan_test(
    proxy: nn.Module,
    samples: torch.Tensor,
    targets: Sequence[int] | torch.Tensor,
    *,
    batch_size: int = 1000,
) -> float:
    """GAN-test: the share of samples a separately trained proxy classifies as their target.

    Formula: (1/N)·Σ_i [argmax_c proxy(x_i)_c = y_i].

    Source: Shmelkov et al., ECCV 2018 (GAN-test); Srinivas & Fleuret, ICLR 2021, Table 1.

    Reference code: idiap/rethinking-saliency ``evaluations.py`` (sample-quality branch).

    Deviations: the score is computed once over all N samples (the reference divides its
    running count again for every batch after the threshold, so only its first printed score
    is valid); N is exactly the number of samples given (the reference rounds up to whole
    batches of 256).

    Args:
        proxy: A classifier trained separately from the model that made the samples.
        samples: (N, C, H, W), in the proxy's input space.
        targets: (N,) the class each sample was generated for.
        batch_size: Rows per forward.

    Returns:
        Accuracy in [0, 1] (higher is better).

    Raises:
        ParameterError: shapes that do not match.
    """
    caller = "gan_test()"
    y = _as_targets(targets, caller)
    if samples.dim() != 4 or samples.shape[0] != len(y):
        raise ParameterError(
            f"The 'samples' argument of {caller} must have shape ({len(y)}, C, H, W) to match "
            f"targets. Got {tuple(samples.shape)}."
        )
    check_int(batch_size, "batch_size", caller, 1)
    return accuracy(proxy, samples, y, batch_size=batch_size, device=model_device(proxy))


def gan_test_targets(
    n: int,
    *,
    labels: Sequence[int] | torch.Tensor | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """The N target classes of a GAN-test.

    With ``labels`` (e.g. the test set's, in order), the first ``n`` of them, as the
    reference does, but exactly ``n``. Without, ``n`` classes drawn uniformly (seeded) from
    all ``num_classes`` classes.

    Deviations: the reference's fallback ``randint(0, 99)`` never draws the last class (its
    upper end is exclusive); here every class can be drawn.

    Raises:
        ParameterError: both or neither of labels/num_classes, or n > len(labels).
    """
    caller = "gan_test_targets()"
    check_int(n, "n", caller, 1)
    if (labels is None) == (num_classes is None):
        raise ParameterError(f"{caller} needs exactly one of 'labels' or 'num_classes'.")
    if labels is not None:
        lab = _as_targets(labels, caller)
        check_int(n, "n", caller, 1, len(lab))
        return lab[:n].clone()
    check_int(num_classes, "num_classes", caller, 1)
    check_int(seed, "seed", caller, 0)
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes, (n,), generator=gen)  # type: ignore[arg-type]


@dataclass(frozen=True)
class GanTestResult:
    """What :func:`gan_test_score` returns.

    Attributes:
        accuracy: GAN-test accuracy (higher is better).
        per_class: Accuracy per target class present.
        samples: The activation-maximization samples that were scored.
        target_probability: Mean proxy softmax probability of the target class, a graded
            score that still separates models when the accuracy sits at 100%.
    """

    accuracy: float
    per_class: dict[int, float]
    samples: ActivationSamples
    higher_is_better: bool = True
    target_probability: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "target_probability": self.target_probability,
                "per_class": {str(k): v for k, v in self.per_class.items()},
                "higher_is_better": self.higher_is_better, "sampling": self.samples.to_dict()}


def gan_test_score(
    model: nn.Module,
    proxy: nn.Module,
    targets: Sequence[int] | torch.Tensor,
    *,
    shape: Sequence[int],
    bounds: Sequence[float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 256,
    quiet: bool = EVAL_QUIET,
    **sampling: Any,
) -> GanTestResult:
    """Sample ``model`` by :func:`activation_maximization` for ``targets``; score with ``proxy``.

    ``sampling`` overrides ``GAN_TEST_DEFAULTS`` (steps, step_size, weight_decay).
    """
    unknown = set(sampling) - set(GAN_TEST_DEFAULTS)
    if unknown:
        raise ParameterError(unknown_name("option", sorted(unknown)[0], GAN_TEST_DEFAULTS,
                                          caller="gan_test_score()"))
    samples = activation_maximization(model, targets, shape=shape, bounds=bounds, seed=seed,
                                      batch_size=batch_size, quiet=quiet,
                                      **{**GAN_TEST_DEFAULTS, **sampling})
    prob = _target_probability(proxy, samples.x, samples.target, batch_size)
    hit = (prob.argmax(1) == samples.target).float()
    per_class = {int(c): hit[samples.target == c].mean().item() for c in samples.target.unique()}
    p_target = prob.gather(1, samples.target.view(-1, 1)).mean().item()
    return GanTestResult(hit.mean().item(), per_class, samples, target_probability=p_target)


def _target_probability(proxy: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The proxy's softmax probabilities (N, K) of ``x``, in eval mode, on the CPU."""
    device = model_device(proxy)
    with torch.no_grad(), eval_mode(proxy):
        out = [proxy(x[i : i + batch_size].to(device=device, dtype=_model_dtype(proxy))).float().softmax(1).cpu()
               for i in range(0, len(x), batch_size)]
    return torch.cat(out)


@dataclass(frozen=True)
class Saturation:
    """What :func:`gan_test_saturation` returns.

    Attributes:
        saturated: True when the scores cannot tell the models apart.
        reason: One sentence saying why (or why not), with the numbers.
        at_ceiling: The models whose score is at or above ``ceiling``.
        spread: Highest minus lowest score.
        thresholds: ceiling, min_at_ceiling, min_spread as used.
    """

    saturated: bool
    reason: str
    at_ceiling: tuple[str, ...]
    spread: float
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"saturated": self.saturated, "reason": self.reason, "at_ceiling": list(self.at_ceiling),
                "spread": self.spread, **self.thresholds}


def gan_test_saturation(
    scores: dict[str, float],
    *,
    ceiling: float = 0.99,
    min_at_ceiling: int = 2,
    min_spread: float = 0.05,
) -> Saturation:
    """Whether GAN-test scores of several models are saturated, i.e. tell the models apart.

    Saturated when at least ``min_at_ceiling`` models score ≥ ``ceiling`` (the proxy labels
    nearly every sample as its target: the samples fool it rather than resemble the class),
    or when the highest and lowest score differ by less than ``min_spread``.

    Why: activation maximization is gradient ascent on a logit; run long enough its samples
    are adversarial examples that transfer to a non-robust proxy, so every model reaches
    100% and the comparison says nothing (seen on Fashion-MNIST: 100/100/95.5/100%).

    Raises:
        ParameterError: fewer than two scores, a score outside [0, 1], or bad thresholds.
    """
    caller = "gan_test_saturation()"
    if len(scores) < 2:
        raise ParameterError(f"{caller} compares models: pass at least two scores. Got {len(scores)}.")
    for name, v in scores.items():
        check_float(v, f"scores[{name!r}]", caller, 0.0, 1.0)
    check_float(ceiling, "ceiling", caller, 0.0, 1.0)
    check_int(min_at_ceiling, "min_at_ceiling", caller, 1)
    check_float(min_spread, "min_spread", caller, 0.0)
    top = tuple(k for k, v in scores.items() if v >= ceiling)
    spread = max(scores.values()) - min(scores.values())
    listed = ", ".join(f"{k} {v:.1%}" for k, v in scores.items())
    thresholds = {"ceiling": ceiling, "min_at_ceiling": min_at_ceiling, "min_spread": min_spread}
    if len(top) >= min_at_ceiling:
        reason = (f"{len(top)} of {len(scores)} models score ≥ {ceiling:.0%} ({listed}): the proxy labels "
                  "nearly every sample as its target, so the score does not tell the models apart.")
        return Saturation(True, reason, top, spread, thresholds)
    if spread < min_spread:
        reason = (f"the scores differ by {spread:.1%} < {min_spread:.0%} ({listed}): the score does not tell "
                  "the models apart.")
        return Saturation(True, reason, top, spread, thresholds)
    reason = (f"not saturated: {len(top)} of {len(scores)} models at ≥ {ceiling:.0%} and a spread of "
              f"{spread:.1%} ≥ {min_spread:.0%} ({listed}).")
    return Saturation(False, reason, top, spread, thresholds)


def sample_grid(
    samples: ActivationSamples | torch.Tensor,
    *,
    labels: Sequence[str] | None = None,
    ncols: int = 10,
    bounds: Sequence[float] | None = None,
    title: str | None = None,
) -> Figure:
    """A matplotlib Figure of the samples in a grid, one title per image (its class).

    ``labels`` defaults to the targets of :class:`ActivationSamples`; ``bounds`` to the
    sampling box (else [0, 1]). Drawn on a bare Figure (no pyplot state).
    """
    from matplotlib.figure import Figure

    caller = "sample_grid()"
    x = samples.x if isinstance(samples, ActivationSamples) else samples
    if labels is None and isinstance(samples, ActivationSamples):
        labels = [str(int(t)) for t in samples.target]
    if bounds is None:
        bounds = samples.config["bounds"] if isinstance(samples, ActivationSamples) else (0.0, 1.0)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ParameterError(f"The 'samples' of {caller} must be (N, 1|3, H, W). Got {tuple(x.shape)}.")
    if labels is not None and len(labels) != len(x):
        raise ParameterError(f"{caller} needs one label per sample: {len(x)}. Got {len(labels)}.")
    check_int(ncols, "ncols", caller, 1)
    ncols = min(ncols, len(x))
    nrows = -(-len(x) // ncols)
    lo, hi = _check_bounds(bounds, caller)
    fig = Figure(figsize=(ncols, nrows + (0.3 if title else 0.0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    imgs = ((x.detach().cpu().float() - lo) / (hi - lo)).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    for j, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if j < len(imgs):
            ax.imshow(imgs[j].squeeze(-1) if imgs.shape[-1] == 1 else imgs[j], cmap="gray",
                      vmin=0.0, vmax=1.0)
            if labels is not None:
                ax.set_title(str(labels[j]), fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
