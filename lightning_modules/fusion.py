"""Joining a donor branch's features into a receiver branch (the MLFI join).

Three joins (``model.join``), all with time kept aligned (both branches halve time at the
same stages):

- ``concat``: the donor ``[B, C2, H2, W2]`` is resized to the receiver's (frequency, time)
  grid ``(H1, W1)``, each axis on its own (adaptive average pooling where it shrinks,
  interpolation, ``nearest`` or ``bilinear``, where it grows), then concatenated on
  channels: ``[B, C1 + C2, H1, W1]``. Donor rows are treated as co-located with the
  receiver rows they are stretched over (3 chroma rows over 32 Mel rows).
- ``broadcast``: the donor is averaged over frequency, resized along time and broadcast
  along every receiver row, then concatenated: ``[B, C1 + C2, H1, W1]``. No frequency
  alignment is assumed; the same parameter count as ``concat``.
- ``film``: the frequency-averaged donor predicts a per-channel, per-frame scale and shift
  of the receiver (a (1, 3) convolution along time, ReLU, a 1x1 convolution to 2 x C1):
  ``receiver * (1 + gamma) + beta``, ``[B, C1, H1, W1]``. The receiver's next stage is not
  widened; the generator's hidden width is chosen so that the model's parameter count
  matches ``concat``'s (:func:`film_hidden`).

Vectors ``[B, C1]`` and ``[B, C2]`` (the ``mlp`` backbone) are concatenated by every join.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

UPSAMPLE_MODES = ("nearest", "bilinear")
JOINS = ("concat", "broadcast", "film")


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


def _check_pair(receiver: torch.Tensor, donor: torch.Tensor) -> None:
    if receiver.dim() != donor.dim() or receiver.dim() not in (2, 4):
        raise ValueError(f"join: receiver {tuple(receiver.shape)} and donor "
                         f"{tuple(donor.shape)} must both be [B, C, F, T] maps or [B, C] vectors")
    if receiver.shape[0] != donor.shape[0]:
        raise ValueError(f"join: batch sizes differ (receiver {receiver.shape[0]}, donor "
                         f"{donor.shape[0]})")


def join(receiver: torch.Tensor, donor: torch.Tensor, upsample: str = "nearest") -> torch.Tensor:
    """The ``concat`` join: ``donor`` resized to the receiver's grid, concatenated on channels.

    receiver [B, C1, H1, W1], donor [B, C2, H2, W2] -> [B, C1 + C2, H1, W1];
    receiver [B, C1], donor [B, C2] -> [B, C1 + C2].
    """
    _check_pair(receiver, donor)
    if receiver.dim() == 4:
        donor = resize_axis(donor, 2, receiver.shape[2], upsample)
        donor = resize_axis(donor, 3, receiver.shape[3], upsample)
    return torch.cat([receiver, donor], dim=1)


def donor_over_time(donor: torch.Tensor, frames: int, upsample: str = "nearest") -> torch.Tensor:
    """[B, C2, H2, W2] -> [B, C2, 1, frames]: averaged over frequency, resized along time."""
    return resize_axis(donor.mean(dim=2, keepdim=True), 3, int(frames), upsample)


def broadcast_join(receiver: torch.Tensor, donor: torch.Tensor,
                   upsample: str = "nearest") -> torch.Tensor:
    """The ``broadcast`` join: the frequency-averaged donor on every receiver row, concatenated.

    receiver [B, C1, H1, W1], donor [B, C2, H2, W2] -> [B, C1 + C2, H1, W1]."""
    _check_pair(receiver, donor)
    if receiver.dim() == 2:
        return torch.cat([receiver, donor], dim=1)
    d = donor_over_time(donor, receiver.shape[3], upsample)
    return torch.cat([receiver, d.expand(-1, -1, receiver.shape[2], -1)], dim=1)


def film_hidden(budget: int, receiver_channels: int, donor_channels: int) -> int:
    """Hidden width of the FiLM generator whose parameter count is closest to ``budget``
    (the parameters ``concat`` adds by widening the receiver's next stage); at least 1.

    Parameters: ``(1, 3)`` conv C2 -> h with bias, 1x1 conv h -> 2 x C1 with bias."""
    c1, c2 = int(receiver_channels), int(donor_channels)
    per_hidden = 3 * c2 + 1 + 2 * c1
    return max(1, int(round((int(budget) - 2 * c1) / per_hidden)))


class Join(nn.Module):
    """One receiver's join as a module (so hooks can see the joined map):
    ``forward(receiver, donor)``.

    ``kind``: one of :data:`JOINS`. ``film`` needs ``receiver_channels``,
    ``donor_channels`` and ``hidden`` (see :func:`film_hidden`); the other joins have no
    parameters and widen the receiver's next stage by the donor's channels.
    """

    def __init__(self, upsample: str = "nearest", kind: str = "concat",
                 receiver_channels: int | None = None, donor_channels: int | None = None,
                 hidden: int | None = None):
        super().__init__()
        if kind not in JOINS:
            raise ValueError(f"model.join={kind!r}: expected one of {', '.join(JOINS)}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample={upsample!r}: expected one of {UPSAMPLE_MODES}")
        self.kind = kind
        self.upsample = upsample
        if kind == "film":
            if not (receiver_channels and donor_channels and hidden):
                raise ValueError("the film join needs receiver_channels, donor_channels and "
                                 "hidden")
            self.generator = nn.Sequential(
                nn.Conv2d(int(donor_channels), int(hidden), (1, 3), padding=(0, 1)),
                nn.ReLU(),
                nn.Conv2d(int(hidden), 2 * int(receiver_channels), 1))
            # Starts as the identity (gamma = beta = 0): the receiver is unchanged at first.
            nn.init.zeros_(self.generator[2].weight)
            nn.init.zeros_(self.generator[2].bias)

    def forward(self, receiver: torch.Tensor, donor: torch.Tensor) -> torch.Tensor:
        if self.kind == "concat":
            return join(receiver, donor, self.upsample)
        if self.kind == "broadcast":
            return broadcast_join(receiver, donor, self.upsample)
        _check_pair(receiver, donor)
        if receiver.dim() == 2:
            raise ValueError("the film join needs [B, C, F, T] maps (a CNN backbone); use "
                             "model.join=concat with vector backbones")
        gamma, beta = self.generator(
            donor_over_time(donor, receiver.shape[3], self.upsample)).chunk(2, dim=1)
        return receiver * (1 + gamma) + beta

    def extra_repr(self) -> str:
        kind = "" if self.kind == "concat" else f", kind={self.kind!r}"
        return f"upsample={self.upsample!r}{kind}"
