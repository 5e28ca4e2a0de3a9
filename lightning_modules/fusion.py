"""Joining a donor branch's features into a receiver branch (the MLFI join).

Maps: the donor ``[B, C2, H2, W2]`` is resized to the receiver's (frequency, time) grid
``(H1, W1)``, each axis on its own — adaptive average pooling where it shrinks,
interpolation (``nearest`` or ``bilinear``) where it grows — then concatenated on channels:
``[B, C1 + C2, H1, W1]``. Vectors ``[B, C1]`` and ``[B, C2]`` are just concatenated.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

UPSAMPLE_MODES = ("nearest", "bilinear")


def resize_axis(x: torch.Tensor, axis: int, size: int, upsample: str = "nearest") -> torch.Tensor:
    """Resize axis 2 (frequency) or 3 (time) of ``x`` [B, C, H, W] to ``size``; the other
    axis is unchanged. Shrinking averages (adaptive pooling), growing interpolates."""
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"upsample={upsample!r}: expected one of {UPSAMPLE_MODES}")
    current = x.shape[axis]
    if current == size:
        return x
    target = list(x.shape[2:])
    target[axis - 2] = size
    if current > size:
        return F.adaptive_avg_pool2d(x, tuple(target))
    if upsample == "bilinear":
        return F.interpolate(x, size=tuple(target), mode="bilinear", align_corners=False)
    return F.interpolate(x, size=tuple(target), mode="nearest")


def join(receiver: torch.Tensor, donor: torch.Tensor, upsample: str = "nearest") -> torch.Tensor:
    """Concatenate ``donor`` onto ``receiver`` on channels after resizing it to the
    receiver's grid.

    receiver [B, C1, H1, W1], donor [B, C2, H2, W2] -> [B, C1 + C2, H1, W1];
    receiver [B, C1], donor [B, C2] -> [B, C1 + C2].
    """
    if receiver.dim() != donor.dim() or receiver.dim() not in (2, 4):
        raise ValueError(f"join: receiver {tuple(receiver.shape)} and donor "
                         f"{tuple(donor.shape)} must both be [B, C, F, T] maps or [B, C] vectors")
    if receiver.shape[0] != donor.shape[0]:
        raise ValueError(f"join: batch sizes differ (receiver {receiver.shape[0]}, donor "
                         f"{donor.shape[0]})")
    if receiver.dim() == 4:
        donor = resize_axis(donor, 2, receiver.shape[2], upsample)
        donor = resize_axis(donor, 3, receiver.shape[3], upsample)
    return torch.cat([receiver, donor], dim=1)


class Join(nn.Module):
    """``join`` as a module (so hooks can see the joined map): forward(receiver, donor)."""

    def __init__(self, upsample: str = "nearest"):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample={upsample!r}: expected one of {UPSAMPLE_MODES}")
        self.upsample = upsample

    def forward(self, receiver: torch.Tensor, donor: torch.Tensor) -> torch.Tensor:
        return join(receiver, donor, self.upsample)

    def extra_repr(self) -> str:
        return f"upsample={self.upsample!r}"
