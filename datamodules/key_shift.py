"""Key (pitch) shift on feature batches, the same shift on both inputs.

A shift by ``k`` semitones multiplies every frequency by ``2 ** (k / 12)``:

- chroma [B, 1, 12, T]: a circular roll of the pitch-class rows by ``k`` (exact: the
  chroma filterbank folds octaves);
- log-Mel [B, 1, n_mels, T]: each band ``i`` (centre ``f_i``) takes the value the
  unshifted spectrogram has at ``f_i / 2 ** (k / 12)``, linearly interpolated between the
  two neighbouring band centres on the Mel axis (the ``[n_mels, n_mels]`` matrix
  :func:`mel_shift_matrix`); below the lowest band the lowest band's value is kept, above
  the highest the highest's. This moves partials and the spectral envelope together, like
  resampling; the per-band smoothing it adds is below one band.

Training batches only, after the transfer to the device (``data.key_shift``): each clip's
shift is drawn uniformly from ``-max_semitones .. max_semitones`` (integers), with
probability ``p``; the label is unchanged (a genre does not depend on the key).
"""
from __future__ import annotations

import functools

import numpy as np
import torch


def mel_centres(n_mels: int, f_min: float, f_max: float, mel_scale: str = "slaney") -> np.ndarray:
    """Centre frequencies (Hz) of the ``n_mels`` triangular bands of
    ``torchaudio.functional.melscale_fbanks`` (equally spaced on the Mel scale)."""
    import librosa

    return librosa.mel_frequencies(n_mels + 2, fmin=f_min, fmax=f_max,
                                   htk=mel_scale == "htk")[1:-1]


@functools.lru_cache(maxsize=64)
def mel_shift_matrix(semitones: int, n_mels: int, f_min: float, f_max: float,
                     mel_scale: str = "slaney") -> torch.Tensor:
    """[n_mels, n_mels] float32: ``shifted = M @ mel`` (rows: target bands)."""
    import librosa

    centres = mel_centres(n_mels, f_min, f_max, mel_scale)
    mel_of = functools.partial(librosa.hz_to_mel, htk=mel_scale == "htk")
    grid = mel_of(centres)
    source = mel_of(centres / 2.0 ** (semitones / 12.0))
    pos = np.interp(source, grid, np.arange(n_mels))  # clamped at both ends
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_mels - 1)
    w = pos - lo
    m = np.zeros((n_mels, n_mels), dtype=np.float32)
    rows = np.arange(n_mels)
    np.add.at(m, (rows, lo), 1.0 - w)
    np.add.at(m, (rows, hi), w)
    return torch.from_numpy(m)


def shift_batch(batch: dict, shifts: torch.Tensor, params) -> dict:
    """``batch`` with clip ``b`` shifted by ``shifts[b]`` semitones (ints): chroma rolled,
    Mel resampled along frequency (``params``: the cache's
    :class:`~datamodules.features.FeatureParams`). Other entries pass through."""
    out = {k: (v.clone() if k in ("mel", "chroma") else v) for k, v in batch.items()}
    shifts = shifts.to("cpu").long()
    for k in torch.unique(shifts).tolist():
        if k == 0:
            continue
        idx = (shifts == k).nonzero().flatten().to(next(iter(out.values())).device)
        if "chroma" in batch:
            out["chroma"][idx] = torch.roll(batch["chroma"][idx], int(k), dims=2)
        if "mel" in batch:
            x = batch["mel"]
            m = mel_shift_matrix(int(k), x.shape[2], float(params.f_min), float(params.fmax),
                                 str(params.mel_scale)).to(x.device, x.dtype)
            out["mel"][idx] = torch.einsum("fg,bcgt->bcft", m, x[idx])
    return out


def random_shifts(batch_size: int, max_semitones: int, p: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-clip shifts: 0 with probability ``1 - p``, else uniform in ``±max_semitones``
    without 0."""
    m = int(max_semitones)
    if m < 1 or p <= 0:
        return torch.zeros(batch_size, dtype=torch.long)
    k = torch.randint(1, m + 1, (batch_size,), generator=generator)
    sign = torch.where(torch.rand(batch_size, generator=generator) < 0.5, -1, 1)
    on = torch.rand(batch_size, generator=generator) < float(p)
    return torch.where(on, k * sign, torch.zeros_like(k))
