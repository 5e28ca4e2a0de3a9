"""Batched feature extraction against librosa, shapes, batching, registry, parameters.

Tolerances (float32 STFT here; librosa windows in float64, so its FFT is float64 rounded
to complex64): log-Mel max abs error < 0.05 dB over bins above -100 dB and < 0.002 dB over
bins above -60 dB (measured 0.0103 / 0.0006 dB on blues.00000); chroma max abs error
< 1e-3 (measured ~1e-6); MFCC max abs error < 0.02 (on values up to ~300).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.features import (
    EXTRACTOR_VERSION,
    FEATURES,
    FeatureExtractor,
    FeatureParams,
    register_feature,
    unregister_feature,
)

librosa = pytest.importorskip("librosa")

SHARED = Path(__file__).resolve().parents[2] / "shared"
GTZAN_CLIP = SHARED / "data" / "gtzan-mini-dev" / "genres" / "blues" / "blues.00000.wav"

MEL_TOL_100 = 0.05  # dB, bins above -100 dB
MEL_TOL_60 = 0.002  # dB, bins above -60 dB
CHROMA_TOL = 1e-3
MFCC_TOL = 0.02


def chirp_noise(seconds=6.0, sr=22050, seed=0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    f0, f1 = 80.0, 9000.0
    k = (f1 / f0) ** (1 / seconds)
    phase = 2 * np.pi * f0 * (k**t - 1) / np.log(k)  # exponential chirp
    rng = np.random.default_rng(seed)
    y = 0.5 * np.sin(phase) + 0.05 * rng.standard_normal(len(t))
    y[: sr // 2] *= np.linspace(0, 1, sr // 2)  # a fade-in: quiet frames too
    return y.astype(np.float32)


def librosa_reference(y: np.ndarray, sr: int, n_fft=2048, hop=512, n_mels=128):
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop,
                                         n_mels=n_mels, power=2)
    mel_db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr, n_fft=n_fft, hop_length=hop, tuning=0)
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=20)
    return mel_db, chroma, mfcc


def assert_matches_librosa(y: np.ndarray, sr: int):
    ex = FeatureExtractor({"names": ["mel", "chroma", "mfcc"], "sample_rate": sr})
    out = ex(torch.from_numpy(y)[None])
    mel_ref, chroma_ref, mfcc_ref = librosa_reference(y, sr)
    mel, chroma, mfcc = (out[k][0].numpy() for k in ("mel", "chroma", "mfcc"))
    assert mel.shape == mel_ref.shape and chroma.shape == chroma_ref.shape
    assert mfcc.shape == mfcc_ref.shape
    err = np.abs(mel - mel_ref)
    above100, above60 = mel_ref > -100, mel_ref > -60
    assert above60.any()
    assert err[above100].max() < MEL_TOL_100, err[above100].max()
    assert err[above60].max() < MEL_TOL_60, err[above60].max()
    assert np.abs(chroma - chroma_ref).max() < CHROMA_TOL
    assert np.abs(mfcc - mfcc_ref).max() < MFCC_TOL
    return out


@pytest.mark.skipif(not GTZAN_CLIP.is_file(),
                    reason=f"real GTZAN clip not available ({GTZAN_CLIP}; ../shared absent)")
def test_matches_librosa_on_real_gtzan_clip():
    import soundfile as sf

    y, sr = sf.read(str(GTZAN_CLIP), dtype="float32")
    assert sr == 22050
    assert_matches_librosa(y, sr)


def test_matches_librosa_on_chirp_and_noise():
    assert_matches_librosa(chirp_noise(), 22050)


def test_top_db_and_htk_no_norm_options():
    y = chirp_noise(seconds=3.0)
    ex = FeatureExtractor({"names": ["mel"], "top_db": 80.0, "mel_scale": "htk",
                           "mel_norm": None, "f_min": 50.0, "f_max": 8000.0, "n_mels": 64})
    mel = ex(y)["mel"][0].numpy()
    ref = librosa.power_to_db(
        librosa.feature.melspectrogram(y=y, sr=22050, n_mels=64, fmin=50.0, fmax=8000.0,
                                       htk=True, norm=None, power=2),
        ref=1.0, amin=1e-10, top_db=80.0)
    assert mel.shape == ref.shape == (64, 1 + len(y) // 512)
    assert np.abs(mel - ref).max() < MEL_TOL_100


def test_shapes_and_dtype():
    ex = FeatureExtractor({"names": ["mel", "chroma", "mfcc"]})
    n = 22050 * 2 + 123
    out = ex(torch.zeros(3, n).uniform_(-0.5, 0.5))
    shapes = ex.shapes(n)
    assert list(out) == ex.names == ["mel", "chroma", "mfcc"]
    assert shapes == {"mel": (128, 1 + n // 512), "chroma": (12, 1 + n // 512),
                      "mfcc": (20, 1 + n // 512)}
    for k, v in out.items():
        assert v.dtype == torch.float32 and tuple(v.shape) == (3, *shapes[k])
        assert torch.isfinite(v).all()
    nc = FeatureExtractor({"center": False})
    assert nc.shapes(n)["mel"] == (128, 1 + (n - 2048) // 512)
    assert tuple(nc(torch.rand(1, n))["mel"].shape) == (1, 128, 1 + (n - 2048) // 512)


def test_silence_is_finite():
    out = FeatureExtractor({"names": ["mel", "chroma", "mfcc"]})(torch.zeros(2, 8192))
    assert torch.allclose(out["mel"], torch.full_like(out["mel"], -100.0))
    assert (out["chroma"] == 0).all()  # tiny frames are left unnormalised, as librosa does
    assert torch.isfinite(out["mfcc"]).all()


def test_batch_equals_per_clip():
    rng = np.random.default_rng(1)
    waves = (rng.standard_normal((5, 3 * 22050)) * 0.1).astype(np.float32)
    waves[2] = chirp_noise(seconds=3.0)
    # batch_size 2: batches of 2, 2, 1 exercise the buffer reuse and the short last batch
    ex = FeatureExtractor({"names": ["mel", "chroma"], "batch_size": 2})
    batch = ex(torch.from_numpy(waves))
    single = FeatureExtractor({"names": ["mel", "chroma"], "batch_size": 16})
    for i in range(len(waves)):
        one = single(waves[i])
        for k in batch:
            torch.testing.assert_close(batch[k][i], one[k][0], rtol=1e-5, atol=1e-4)


def test_registry_extension():
    calls = []

    def band_energy(power, params):
        """Total power per frame, in dB: [B, 1, T]."""
        calls.append(params.n_fft)
        return 10 * torch.log10(power.sum(dim=1, keepdim=True).clamp_min(1e-10))

    register_feature("band_energy_test", band_energy)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_feature("band_energy_test", band_energy)
        ex = FeatureExtractor({"names": ["mel", "band_energy_test"]})
        assert ex.shapes(4096) == {"mel": (128, 9), "band_energy_test": (1, 9)}
        out = ex(torch.rand(2, 4096))
        assert tuple(out["band_energy_test"].shape) == (2, 1, 9)
        assert calls

        # a feature returning (a view of) the reused power buffer is copied out
        register_feature("power_view_test", lambda p, prm: p[:, :4])
        ex2 = FeatureExtractor({"names": ["power_view_test"], "batch_size": 1})
        w = torch.rand(2, 4096)
        both = ex2(w)["power_view_test"]
        torch.testing.assert_close(both[0], ex2(w[:1])["power_view_test"][0])
    finally:
        unregister_feature("band_energy_test")
        unregister_feature("power_view_test")
    assert "band_energy_test" not in FEATURES
    with pytest.raises(ValueError, match="registered features"):
        FeatureParams.from_dict({"names": ["band_energy_test"]})


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        FeatureParams.from_dict({"n_ftt": 1024})
    assert "n_ftt" in str(e.value) and "hop_length" in str(e.value)
    with pytest.raises(ValueError):
        FeatureExtractor({"mel_norm": "l2"})
    with pytest.raises(ValueError):
        FeatureParams.from_dict({"n_mfcc": 200, "n_mels": 64})


def test_key_dict_excludes_runtime_settings():
    a = FeatureParams.from_dict({"device": "cpu", "batch_size": 4})
    b = FeatureParams.from_dict({"batch_size": 32})
    assert a.key_dict() == b.key_dict()
    assert "device" not in a.key_dict() and "batch_size" not in a.key_dict()
    assert FeatureParams.from_dict({"n_mels": 64}).key_dict() != a.key_dict()
    assert isinstance(EXTRACTOR_VERSION, int)
    # omegaconf-like sequences and defaults
    assert FeatureParams.from_dict({"names": ["chroma"]}).names == ("chroma",)


def test_whole_batch_stft_path_equals_chunked():
    """The CUDA code path (whole batch at once), checked on CPU against the chunked one."""
    from datamodules.features import power_spectrogram

    p = FeatureParams.from_dict({})
    x = torch.from_numpy(np.stack([chirp_noise(seconds=3.0), chirp_noise(seconds=3.0, seed=3)]))
    whole = power_spectrogram(x, p, chunked=False)
    chunked = power_spectrogram(x, p, chunked=True)
    assert whole.shape == chunked.shape == (2, 1025, 1 + x.shape[1] // 512)
    torch.testing.assert_close(whole, chunked, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    y = torch.from_numpy(chirp_noise(seconds=3.0))[None].repeat(3, 1)
    cpu = FeatureExtractor({"names": ["mel", "chroma"]})(y)
    gpu = FeatureExtractor({"names": ["mel", "chroma"], "device": "cuda"})(y)
    for k in cpu:
        assert gpu[k].device.type == "cuda"
        assert (gpu[k].cpu() - cpu[k])[cpu[k] > -60 if k == "mel" else ...].abs().max() < 0.01
