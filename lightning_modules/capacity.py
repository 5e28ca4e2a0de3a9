"""Model capacity: parameter counts, FLOPs per segment, and widths that match a parameter count.

Comparisons between interaction modes are confounded by size (a mid mode at a deep tap has
more parameters than late fusion; a single branch has half of it). :func:`match_width` finds
the channel multiplier that brings a model within a tolerance of a reference's parameter
count, so a comparison can be made at equal capacity (``backbone.match_params``).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Trainable parameters (normalisation buffers are not parameters)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def segment_inputs(model, frames: int) -> dict[str, torch.Tensor]:
    """One all-zero segment per branch input: ``{name: [1, 1, bins, frames]}`` (CNNs) or
    ``[1, bins]`` (vector backbones)."""
    from lightning_modules.backbones import backbone_input_kind

    vector = backbone_input_kind(model.hparams.backbone) == "vector"
    return {n: torch.zeros((1, model.inputs[n]) if vector else (1, 1, model.inputs[n], frames))
            for n in model.branch_names}


def segment_mflops(model, frames: int) -> float:
    """Forward FLOPs of one segment of ``frames`` feature frames, in millions, as counted by
    ``torch.utils.flop_counter`` (convolutions and matrix products; a multiply-add is two
    FLOPs; normalisation, activations and pooling are not counted). Eval mode, no grad;
    the model's train/eval state is restored."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    dev = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(**{k: v.to(dev) for k, v in segment_inputs(model, frames).items()})
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e6


def scale_channels(channels: Sequence[int], width: float, minimum: int = 3) -> list[int]:
    """``channels`` multiplied by ``width``, rounded, at least ``minimum`` each."""
    if not width > 0:
        raise ValueError(f"backbone.width must be > 0, got {width}")
    return [max(int(minimum), int(round(int(c) * float(width)))) for c in channels]


def match_width(params_at: Callable[[float], int], target: int, tolerance: float = 0.05,
                lo: float = 0.125, hi: float = 8.0, steps: int = 40) -> tuple[float, int]:
    """The width (channel multiplier) whose parameter count is closest to ``target``.

    ``params_at(width)`` counts the parameters of the model built at ``width``; it must grow
    with the width. Bisection on the width, then the closer of the two bracketing counts.
    Returns ``(width, params)``; raises ``ValueError`` when the closest count is more than
    ``tolerance`` (relative) away from ``target`` (channel rounding too coarse).
    """
    target = int(target)
    if params_at(lo) > target or params_at(hi) < target:
        raise ValueError(f"no width in [{lo}, {hi}] reaches {target} parameters")
    a, b = lo, hi
    for _ in range(steps):
        mid = (a + b) / 2
        if params_at(mid) < target:
            a = mid
        else:
            b = mid
    best = min((a, b), key=lambda w: abs(params_at(w) - target))
    n = params_at(best)
    if abs(n - target) > tolerance * target:
        raise ValueError(f"the closest width ({best:.3f}) gives {n} parameters, more than "
                         f"{tolerance:.0%} from {target}")
    return round(best, 4), n


def capacity(model, frames: int) -> Mapping[str, float]:
    """``{"params": int, "mflops": float}`` of ``model`` for segments of ``frames`` frames."""
    return {"params": count_params(model), "mflops": round(segment_mflops(model, frames), 3)}
