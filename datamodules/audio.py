"""Audio decoding: any file libsndfile reads -> mono float32 at a fixed rate and length.

``soundfile`` decodes WAV/AU/FLAC/OGG/MP3; ``torchaudio.functional.resample`` changes the
rate. Every way a file can be unusable raises one error type, :class:`AudioDecodeError`,
that names the file and the reason, so indexes and cache builders can skip and report it.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

AUDIO_EXTENSIONS = (".wav", ".au", ".flac", ".ogg", ".mp3")


class AudioDecodeError(ValueError):
    """A file that cannot be used as a clip. ``path`` and ``reason`` are kept for reports."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class Decoded:
    """A decoded clip: ``wave`` is float32 [samples] at ``sample_rate``."""

    wave: np.ndarray
    sample_rate: int
    source_rate: int
    channels: int
    source_seconds: float
    padded_seconds: float  # zeros appended to reach the clip length (0.0 when cropped/exact)


def _wav_truncation(path: Path) -> str | None:
    """For RIFF/WAVE files, compare the declared data chunk size with the bytes present."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return "truncated: no data chunk before the end of the file"
            cid, clen = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            pos += 8
            if cid == b"data":
                present = size - pos
                # 0xFFFFFFFF and 0 are used by streaming writers for "unknown length".
                if clen not in (0, 0xFFFFFFFF) and present < clen:
                    return (f"truncated: header declares {clen} bytes of audio, "
                            f"the file holds {present}")
                return None
            pos += clen + (clen & 1)
            f.seek(pos)


def probe_audio(path: str | os.PathLike, min_seconds: float = 1.0) -> sf._SoundFileInfo:
    """Cheap header-level check (no full decode). Raises :class:`AudioDecodeError`."""
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(path, "missing: no such file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile raises LibsndfileError/RuntimeError/TypeError
        raise AudioDecodeError(path, f"not a readable audio file ({_short(e)})") from None
    if path.suffix.lower() == ".wav":
        why = _wav_truncation(path)
        if why:
            raise AudioDecodeError(path, why)
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioDecodeError(path, "no audio frames")
    seconds = info.frames / info.samplerate
    if seconds < min_seconds:
        raise AudioDecodeError(path, f"too short: {seconds:.2f} s < data.min_seconds={min_seconds}")
    return info


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:160]


def to_mono(data: np.ndarray) -> np.ndarray:
    """[samples, channels] or [samples] -> [samples] by averaging channels."""
    return data.mean(axis=1) if data.ndim == 2 else data


def resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate:
        return wave
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), source_rate, target_rate)
    return out.numpy()


def fit_length(wave: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Crop or zero-pad to ``n`` samples; returns (wave, samples padded)."""
    if len(wave) >= n:
        return wave[:n], 0
    pad = n - len(wave)
    return np.concatenate([wave, np.zeros(pad, dtype=wave.dtype)]), pad


def load_audio(path: str | os.PathLike, sample_rate: int = 22050, clip_seconds: float | None = 30.0,
               min_seconds: float = 1.0, silence_db: float = -60.0) -> Decoded:
    """Decode ``path`` to mono float32 at ``sample_rate``, cropped/padded to ``clip_seconds``.

    ``clip_seconds=None`` keeps the full length (used by ``predict``). A clip whose peak is
    below ``silence_db`` dBFS is rejected as silent. Raises :class:`AudioDecodeError`.
    """
    path = Path(path)
    probe_audio(path, min_seconds=min_seconds)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioDecodeError(path, f"decoding failed ({_short(e)})") from None
    if data.shape[0] == 0:
        raise AudioDecodeError(path, "no audio frames")
    if not np.isfinite(data).all():
        raise AudioDecodeError(path, "decoded samples contain NaN or infinity")
    channels = data.shape[1]
    source_seconds = data.shape[0] / sr
    if source_seconds < min_seconds:
        raise AudioDecodeError(
            path, f"too short: decoded {source_seconds:.2f} s < data.min_seconds={min_seconds}")
    wave = to_mono(data)
    peak = float(np.abs(wave).max())
    if peak <= 10 ** (silence_db / 20):
        level = "-inf" if peak == 0 else f"{20 * np.log10(peak):.1f}"
        raise AudioDecodeError(path, f"silent: peak {level} dBFS <= {silence_db} dBFS")
    wave = resample(wave, sr, sample_rate).astype(np.float32, copy=False)
    padded = 0
    if clip_seconds is not None:
        wave, padded = fit_length(wave, int(round(clip_seconds * sample_rate)))
    return Decoded(wave=wave, sample_rate=sample_rate, source_rate=sr, channels=channels,
                   source_seconds=source_seconds, padded_seconds=padded / sample_rate)
