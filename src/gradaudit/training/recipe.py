"""The training recipe: every knob of :func:`gradaudit.training.fit` in one frozen config."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .regularizers import check_regularizer

__all__ = ["Recipe"]


class Recipe(BaseModel):
    """How to train one model. Frozen, validated, JSON-serialisable.

    The same recipe drives standard, adversarial and regularized training, and the
    retraining of DiffROAR/ROAR/KAR (which ignores ``attack`` and ``regularizer``: retrains
    are standard training, DESIGN decision 4).

    Attributes:
        epochs: Passes over the training split.
        batch_size: Images per optimisation step.
        optimizer: "sgd" (momentum, optional Nesterov) or "adam".
        lr: Base (or, for onecycle, peak) learning rate.
        momentum: SGD momentum (Adam's beta1 stays 0.9).
        nesterov: Nesterov momentum (SGD only).
        weight_decay: L2 weight decay.
        schedule: "constant"; "onecycle" (per step: cosine warm-up over the first 30% of
            steps from lr/25 to lr, then cosine decay to lr/2.5e5, as PyTorch's
            ``OneCycleLR`` without momentum cycling); "multistep" (×gamma at each epoch in
            ``milestones``); "step" (×gamma every ``step_every`` epochs); "cosine" (per
            step, to 0). See ``training.schedule``.
        milestones: Epochs (strictly increasing, ≥ 1) at which "multistep" multiplies the
            rate by ``gamma``; needs ``schedule="multistep"``.
        step_every: Period in epochs of the "step" schedule.
        gamma: Factor of the "multistep" and "step" schedules.
        augment: "none", "flip", or "crop-flip" (4-px padded random crop + horizontal flip).
        val_fraction: Share of the training set held out (seeded) to monitor training.
            Nothing is ever selected on the test set.
        seed: Seeds shuffling, the validation split, augmentation, attack starts and
            regularizer noise. (Initialisation is seeded by ``models.build(seed=...)``.)
        attack: None (standard training), "linf" or "l2" PGD adversarial training.
        eps: Attack radius, in the units of the model's input.
        attack_steps: PGD steps during training.
        attack_step_size: PGD step; None means 2.5·eps/attack_steps.
        attack_random_start: Start PGD at a random point of the eps-ball.
        regularizer: None, "gradnorm", "score-matching" or "anti-score-matching".
        reg_weight: λ, the weight of the regularizer in the loss.
        reg_options: Options of the regularizer (see ``training.regularizers``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "onecycle", "multistep", "step", "cosine"] = "constant"
    milestones: tuple[int, ...] = ()
    step_every: int = Field(50, ge=1)
    gamma: float = Field(0.1, gt=0)
    augment: Literal["none", "flip", "crop-flip"] = "none"
    val_fraction: float = Field(0.0, ge=0, lt=1)
    seed: int = Field(0, ge=0)
    attack: Literal["linf", "l2"] | None = None
    eps: float = Field(0.0, ge=0)
    attack_steps: int = Field(10, ge=1)
    attack_step_size: float | None = Field(None, gt=0)
    attack_random_start: bool = True
    regularizer: Literal["gradnorm", "score-matching", "anti-score-matching"] | None = None
    reg_weight: float = Field(0.0, ge=0)
    reg_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.attack is not None and self.eps <= 0:
            raise ValueError(f"attack={self.attack!r} needs eps > 0 (got eps={self.eps})")
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError("nesterov=True needs optimizer='sgd'")
        if self.milestones and self.schedule != "multistep":
            raise ValueError(f"milestones={self.milestones} need schedule='multistep' (got {self.schedule!r})")
        if self.schedule == "multistep" and not self.milestones:
            raise ValueError("schedule='multistep' needs milestones, e.g. milestones=(50, 75)")
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:], strict=False)) or any(
            m < 1 for m in self.milestones
        ):
            raise ValueError(f"milestones must be strictly increasing epochs >= 1. Got {self.milestones}")
        check_regularizer(self.regularizer, self.reg_weight, dict(self.reg_options))
        return self

    @property
    def step_size(self) -> float:
        """The PGD training step: ``attack_step_size`` or 2.5·eps/steps."""
        if self.attack_step_size is not None:
            return self.attack_step_size
        return 2.5 * self.eps / self.attack_steps

    def standard(self) -> Recipe:
        """This recipe without adversarial training or regularizer (used for retraining)."""
        return self.model_copy(update={"attack": None, "eps": 0.0, "regularizer": None,
                                       "reg_weight": 0.0, "reg_options": {}})
