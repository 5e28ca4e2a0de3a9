"""Input perturbations for ablations, on [B, 1, F, T] feature maps in raw (un-normalised)
units: replace an input by its band means, blur it (removes texture), shuffle its patches
(removes layout, keeps texture), rank cells for deletion."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F


def band_mean(model, branch: str) -> torch.Tensor:
    """The model's per-band training mean of ``branch``: [1, 1, F, 1] (raw units)."""
    return getattr(model, f"{branch}_mean")


def zero_input(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """[B, 1, F, T] -> every cell set to its band's mean (0 after normalisation)."""
    return mean.to(x).expand_as(x).clone()


def gaussian_smooth(x: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of [B, 1, F, T] with ``sigma`` cells (one value, or
    (frequency, time)); kernel radius 3 sigma, edges replicated. ``sigma`` 0: unchanged."""
    sf, st = (float(sigma), float(sigma)) if np.isscalar(sigma) else map(float, sigma)
    out = x
    for axis, s in ((2, sf), (3, st)):
        if s <= 0:
            continue
        r = max(1, int(math.ceil(3 * s)))
        k = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (k / s) ** 2)
        k = (k / k.sum()).view(1, 1, -1, 1) if axis == 2 else (k / k.sum()).view(1, 1, 1, -1)
        pad = (0, 0, r, r) if axis == 2 else (r, r, 0, 0)
        out = F.conv2d(F.pad(out, pad, mode="replicate"), k)
    return out


def shuffle_patches(x: torch.Tensor, patch: Sequence[int],
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Permute the positions of ``patch`` = (bands, frames) tiles of [B, 1, F, T], one
    random permutation per example (never the identity when there are >= 2 tiles). The
    multiset of values is unchanged; cells beyond the last whole tile stay in place."""
    pf, pt = int(patch[0]), int(patch[1])
    f, t = x.shape[2:]
    n = (f // pf) * (t // pt)
    if n < 2:
        raise ValueError(f"shuffle_patches: patch {pf}x{pt} leaves fewer than 2 tiles in a "
                         f"{f}x{t} input; choose callbacks.ablation.patch smaller than the input")
    perms = []
    for _ in range(x.shape[0]):
        p = torch.randperm(n, generator=generator)
        if torch.equal(p, torch.arange(n)):
            p = torch.roll(p, 1)
        perms.append(p)
    return permute_tiles(x, patch, torch.stack(perms))


def permute_tiles(x: torch.Tensor, patch: Sequence[int], perms: torch.Tensor) -> torch.Tensor:
    """[B, 1, F, T] with its ``patch`` = (bands, frames) tiles (numbered row by row) moved:
    tile ``perms[b, i]`` goes to place ``i`` of example ``b`` ([B, n_tiles] long). Cells
    beyond the last whole tile stay in place."""
    pf, pt = int(patch[0]), int(patch[1])
    b, c, f, t = x.shape
    nf, nt = f // pf, t // pt
    n = nf * nt
    region = x[..., :nf * pf, :nt * pt].reshape(b, c, nf, pf, nt, pt)
    tiles = region.permute(0, 1, 2, 4, 3, 5).reshape(b, c, n, pf, pt)
    idx = perms.to(x.device).view(b, 1, n, 1, 1).expand_as(tiles)
    back = torch.gather(tiles, 2, idx).reshape(b, c, nf, nt, pf, pt).permute(0, 1, 2, 4, 3, 5)
    out = x.clone()
    out[..., :nf * pf, :nt * pt] = back.reshape(b, c, nf * pf, nt * pt)
    return out


def deletion_ranks(scores: torch.Tensor | None, shape: Sequence[int],
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Deletion order of the cells of each example: [B, F*T] ranks (0 = deleted first).
    ``scores`` [B, F, T] (higher first; ties in random order) or ``None`` (random order)."""
    b = int(shape[0])
    cells = int(np.prod(shape[1:]))
    tie = torch.rand(b, cells, generator=generator)
    order = torch.argsort(tie, dim=1)  # random order ...
    if scores is not None:
        s = scores.reshape(b, cells).float().cpu()
        # ... then a stable sort by score keeps that random order among equal scores.
        by_score = torch.sort(-torch.gather(s, 1, order), dim=1, stable=True).indices
        order = torch.gather(order, 1, by_score)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(cells).expand(b, cells).contiguous())
    return ranks
