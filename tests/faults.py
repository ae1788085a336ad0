"""A fault on one process: the generator raises whenever the monitor runs it outside training, from some step on."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

MESSAGE = "the generator failed outside training (a fault on this process only)"


def arm_fault(generator: nn.Module, after_steps: int) -> None:
    """Make ``generator`` raise when it runs without gradients (as the monitor runs it) after ``after_steps`` steps.

    Training calls it with gradients once a step (counted); the monitor's probes, diversity checks and pictures run
    it under ``torch.no_grad()``: from the step ``after_steps`` on, those raise on this process alone.
    """
    steps = [0]

    def hook(module: nn.Module, args: Any) -> None:
        if torch.is_grad_enabled():
            steps[0] += 1
        elif steps[0] >= after_steps:
            raise RuntimeError(MESSAGE)

    generator.register_forward_pre_hook(hook)
