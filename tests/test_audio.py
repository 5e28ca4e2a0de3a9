import numpy as np
import pytest
import soundfile as sf

from datamodules.audio import AudioDecodeError, load_audio, probe_audio
from tests.conftest import tone, write_clip


def test_decodes_resamples_and_pads(tmp_path):
    p = write_clip(tmp_path / "a.wav", seconds=4.0, sr=44100)
    d = load_audio(p, sample_rate=22050, clip_seconds=5.0, min_seconds=1.0)
    assert d.wave.dtype == np.float32 and d.wave.shape == (5 * 22050,)
    assert d.source_rate == 44100 and d.channels == 1
    assert d.padded_seconds == pytest.approx(1.0, abs=1e-3)
    assert np.all(d.wave[-22050 + 10:] == 0)


def test_crops_long_clip_and_records_no_padding(tmp_path):
    p = write_clip(tmp_path / "a.wav", seconds=4.0)
    d = load_audio(p, sample_rate=22050, clip_seconds=3.0)
    assert d.wave.shape == (3 * 22050,) and d.padded_seconds == 0.0


def test_resample_preserves_pitch(tmp_path):
    sr = 48000
    t = np.arange(2 * sr) / sr
    sf.write(str(tmp_path / "s.flac"), 0.5 * np.sin(2 * np.pi * 1000 * t), sr)
    d = load_audio(tmp_path / "s.flac", sample_rate=16000, clip_seconds=None, min_seconds=0.5)
    spec = np.abs(np.fft.rfft(d.wave))
    peak_hz = np.argmax(spec) * 16000 / len(d.wave)
    assert abs(peak_hz - 1000) < 2 and len(d.wave) == 32000


def test_stereo_is_downmixed(tmp_path):
    x = tone(2.0)
    stereo = np.stack([x, -x * 0.0 + x * 0.5], axis=1)
    sf.write(str(tmp_path / "st.wav"), stereo, 22050)
    d = load_audio(tmp_path / "st.wav", clip_seconds=None, min_seconds=1.0)
    assert d.channels == 2
    np.testing.assert_allclose(d.wave, x * 0.75, atol=2e-4)


def test_au_files_decode(tmp_path):
    p = write_clip(tmp_path / "blues.00000.au", seconds=2.0, fmt="AU")
    d = load_audio(p, clip_seconds=2.0, min_seconds=1.0)
    assert d.wave.shape == (44100,) and np.abs(d.wave).max() > 0.1


@pytest.mark.parametrize("kind,reason", [
    ("empty", "empty file (0 bytes)"),
    ("text", "not a readable audio file"),
    ("truncated", "truncated"),
    ("silent", "silent"),
    ("short", "too short"),
    ("missing", "missing"),
])
def test_bad_files_raise_one_error_naming_file_and_reason(tmp_path, kind, reason):
    p = tmp_path / f"{kind}.wav"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not audio\n" * 20)
    elif kind == "truncated":
        write_clip(p, seconds=3.0)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "silent":
        sf.write(str(p), np.zeros(22050 * 2, dtype=np.float32), 22050)
    elif kind == "short":
        write_clip(p, seconds=0.5)
    with pytest.raises(AudioDecodeError) as e:
        load_audio(p, clip_seconds=3.0, min_seconds=1.0)
    assert e.value.path == str(p)
    assert reason in e.value.reason
    assert str(p) in str(e.value)


def test_probe_is_header_only_but_catches_truncation(tmp_path):
    p = write_clip(tmp_path / "t.wav", seconds=3.0)
    info = probe_audio(p)
    assert info.samplerate == 22050
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(AudioDecodeError, match="truncated"):
        probe_audio(p)


def test_real_mp3_stereo_44k_resampled(shared_data):
    mp3s = sorted((shared_data / "real-mp3").glob("*.mp3"))
    assert len(mp3s) == 8
    for p in mp3s[:3]:
        info = sf.info(str(p))
        assert info.samplerate == 44100 and info.channels == 2
        d = load_audio(p, sample_rate=22050, clip_seconds=30.0)
        assert d.wave.shape == (30 * 22050,)
        assert d.source_rate == 44100 and d.channels == 2
        assert 29.0 < d.source_seconds < 31.5
        assert np.abs(d.wave).max() > 0.05
        # Energy above the new Nyquist was removed, not aliased: the resampled clip's
        # spectrum matches the original's below 11 kHz.
        raw, sr = sf.read(str(p), dtype="float32", always_2d=True)
        raw = raw.mean(axis=1)[: 22050 * 2 * 5]
        ours = d.wave[: 22050 * 5]
        band = lambda x, r: np.abs(np.fft.rfft(x))[: int(len(x) * 4000 / r)].sum() / len(x)  # noqa
        assert band(ours, 22050) == pytest.approx(band(raw, 44100), rel=0.05)
