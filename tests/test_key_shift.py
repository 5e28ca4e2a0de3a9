"""The key shift: rolled chroma and resampled Mel agree with the features of shifted audio."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.features import FeatureExtractor, FeatureParams
from datamodules.key_shift import mel_shift_matrix, random_shifts, shift_batch

SR = 22050


def _tone(f0, seconds=2.0):
    t = np.arange(int(SR * seconds)) / SR
    return sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6)).astype(np.float32)


@pytest.mark.parametrize("k", (-2, 3))
def test_shifted_features_match_the_features_of_the_shifted_tone(k):
    params = FeatureParams.from_dict({"names": ["mel", "chroma"]})
    fx = FeatureExtractor(params)
    base, true = fx(_tone(330.0)[None]), fx(_tone(330.0 * 2 ** (k / 12))[None])
    batch = {n: base[n][:, None] for n in ("mel", "chroma")} | {"label": torch.tensor([4])}
    out = shift_batch(batch, torch.tensor([k]), params)
    mel_err = (out["mel"][0, 0] - true["mel"][0]).abs().mean()
    assert mel_err < 0.25 * (base["mel"][0] - true["mel"][0]).abs().mean()
    # The roll is exact up to the chroma filterbank's octave weighting.
    chroma_err = (out["chroma"][0, 0] - true["chroma"][0]).abs().mean()
    assert chroma_err < 0.1 * (base["chroma"][0] - true["chroma"][0]).abs().mean()
    assert torch.equal(out["label"], batch["label"])
    # The input batch is not modified.
    assert torch.equal(batch["chroma"][0, 0], base["chroma"][0])


def test_each_clip_gets_its_own_shift_and_zero_is_the_identity():
    params = FeatureParams.from_dict({"names": ["mel", "chroma"], "n_mels": 32})
    g = torch.Generator().manual_seed(0)
    batch = {"mel": torch.randn(3, 1, 32, 5, generator=g),
             "chroma": torch.rand(3, 1, 12, 5, generator=g)}
    out = shift_batch(batch, torch.tensor([0, 1, -1]), params)
    assert torch.equal(out["mel"][0], batch["mel"][0])
    assert torch.equal(out["chroma"][1], torch.roll(batch["chroma"][1], 1, dims=1))
    assert torch.equal(out["chroma"][2], torch.roll(batch["chroma"][2], -1, dims=1))
    m = mel_shift_matrix(1, 32, 0.0, SR / 2)
    assert torch.allclose(m.sum(dim=1), torch.ones(32))  # convex weights per band
    assert torch.allclose(out["mel"][1, 0], m @ batch["mel"][1, 0])


def test_random_shifts_are_within_the_range_and_follow_p():
    g = torch.Generator().manual_seed(0)
    s = random_shifts(4000, 3, 0.5, generator=g)
    assert set(s.tolist()) == {-3, -2, -1, 0, 1, 2, 3}
    assert abs((s == 0).float().mean().item() - 0.5) < 0.03
    assert not random_shifts(50, 0, 1.0).any() and not random_shifts(50, 2, 0.0).any()
