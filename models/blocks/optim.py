"""The default training recipe of every method, built from a paper spec's training table: the
optimizer (with gradient clipping by norm), the learning-rate schedule, and the exponential moving
average of the weights that is evaluated when the spec asks for one.

A method that needs another recipe overrides ``LatentVariableModel.configure_optimizer`` or
``evaluation_model`` (``models/base.py``); the keys a spec may set are ``specs.TRAINING_DEFAULTS``.
"""

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class UncorrectedAdamax(torch.optim.Adamax):
    """Adamax as Kingma et al.'s IAF code writes it (openai/iaf, tf_utils/adamax.py): the first moment
    is not bias-corrected, so step t moves by (1 − β1^t) of torch's Adamax step, starting at a tenth
    of it. torch's first step is lr · sign(g) on every weight at once; the code's grows to it over
    some 20 steps. Done by scaling the learning rate of torch's update by (1 − β1^t)."""

    @torch.no_grad()
    def step(self, closure=None):
        scheduled = [group["lr"] for group in self.param_groups]
        for group in self.param_groups:
            # counted in the group, which a checkpoint keeps, not read from a (GPU) step tensor
            group["steps_taken"] = group.get("steps_taken", 0) + 1
            group["lr"] = group["lr"] * (1 - group["betas"][0] ** group["steps_taken"])
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, scheduled):
                group["lr"] = lr


OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "adamax_uncorrected": UncorrectedAdamax}


def _iwae_stages(training: dict, epoch: int) -> float:
    """Burda et al.'s schedule: 3^i epochs at lr·10^(−i/7), stage i = 0..7 (3,280 epochs in all)."""
    stage = 0
    while (3 ** (stage + 1) - 1) // 2 <= epoch and stage < 7:
        stage += 1
    return 10 ** (-stage / 7)


LR_SCHEDULES = {
    "constant": lambda training, epoch: 1.0,
    "iwae": _iwae_stages,
    "exponential": lambda training, epoch: training["lr_decay"] ** epoch,  # lr · lr_decay^epoch
}


def learning_rate(training: dict, epoch: int) -> float:
    """The learning rate of (0-based) ``epoch`` under the spec's ``lr_schedule``."""
    return training["learning_rate"] * LR_SCHEDULES[training["lr_schedule"]](training, epoch)


def build_optimizer(parameters, training: dict) -> torch.optim.Optimizer:
    """``optimizer`` (adam | adamax | adamax_uncorrected) with ``learning_rate``, ``adam_betas``, ``adam_eps`` and
    ``weight_decay``; with ``clip_grad_norm`` > 0 the gradients' total norm is clipped to it before
    every step (a step pre-hook, so an unclipped run pays nothing)."""
    parameters = [p for p in parameters if p.requires_grad]
    optimizer = OPTIMIZERS[training["optimizer"]](
        parameters,
        lr=training["learning_rate"],
        betas=tuple(training["adam_betas"]),
        eps=training["adam_eps"],
        weight_decay=training["weight_decay"],
    )
    if training["clip_grad_norm"] > 0:

        def clip(*_) -> None:
            torch.nn.utils.clip_grad_norm_(parameters, training["clip_grad_norm"], foreach=True)

        optimizer.register_step_pre_hook(clip)
    return optimizer


def _average_floats_copy_counts(decay: float):
    """torch's exponential average for floating-point tensors; an integer buffer (a step counter, the
    number of mixture components in use) is a count, not a weight: the average takes the model's
    current value (torch's would truncate decay · n + (1 − decay) · m towards zero, so a count going
    from 1 to 2 stays 1 in the averaged model, and a constant 3 becomes 2 at decay 0.9995)."""
    average = get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], steps) -> None:
        if averaged[0].is_floating_point() or averaged[0].is_complex():  # a group shares one dtype
            average(averaged, current, steps)
        else:
            for kept, now in zip(averaged, current, strict=True):
                kept.copy_(now)

    return update


def exponential_moving_average(model: torch.nn.Module, optimizer: torch.optim.Optimizer, decay: float):
    """A copy of ``model`` whose weights (buffers too) are the exponential moving average of its
    weights, from the initial ones, updated after every optimizer step (Polyak averaging: the
    evaluated weights of Chen et al. 2017 and Ma et al. 2019)."""
    averaged = AveragedModel(model, multi_avg_fn=_average_floats_copy_counts(decay), use_buffers=True)
    # The average starts at the initial weights (its first update copies them): every later update is
    # then the same exponential step, in an uninterrupted run and in one resumed from a checkpoint.
    averaged.update_parameters(model)
    optimizer.register_step_post_hook(lambda *_: averaged.update_parameters(model))
    return averaged.module
