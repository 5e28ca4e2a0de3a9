"""Batched feature extraction: one STFT per batch of clips, every feature from its power.

``FeatureExtractor(params)(waves[B, N])`` frames the batch once (librosa's framing:
``center=True`` pads ``n_fft // 2`` zeros on both sides, as librosa >= 0.10 does by default
for ``melspectrogram`` and ``chroma_stft`` (``pad_mode="constant"``); the window is
``librosa.filters.get_window(window, win_length, fftbins=True)`` zero-padded to ``n_fft``),
computes the power spectrogram ``|rfft(frame * window)|**2`` as ``[B, n_fft//2+1, T]`` and
hands it to each requested feature of the registry :data:`FEATURES`.

On CPU the STFT runs in chunks of 512 frames (``unfold`` + ``torch.fft.rfft`` +
``re**2+im**2`` into a reused power buffer) so that frames and spectra stay in cache:
measured several times faster than a whole-batch ``torch.stft`` or ``unfold`` + ``rfft``
on this machine (``python -m benchmarks.features`` prints the comparison); CPU threads
split each batch by clips (see :class:`FeatureExtractor`). On CUDA the whole batch is
transformed at once. Precision: float32 throughout; librosa windows in float64, so the two
differ by float32 FFT rounding (<= ~0.01 dB on Mel bins ~100 dB below a frame's peak).

Adding a feature is one function::

    @register_feature("my_feature")
    def my_feature(power: Tensor, params: FeatureParams) -> Tensor:  # [B, F, T] -> [B, F', T]
        ...

Bump :data:`EXTRACTOR_VERSION` whenever the numbers a feature produces change: it is part
of the feature cache key.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

# Bump whenever any feature's output for the same parameters changes (cache key).
EXTRACTOR_VERSION = 1
# Chroma rows in order (librosa's chroma filterbank starts at C).
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# CPU STFT chunk (frames per rfft call): keeps frames + spectrum (~8 MiB) in L2/L3.
_CPU_CHUNK_FRAMES = 512


@dataclass(frozen=True)
class FeatureParams:
    """Feature extraction parameters (defaults follow DESIGN.md and librosa).

    ``device`` and ``batch_size`` only decide where and how many clips per STFT; they do
    not change outputs and are left out of :meth:`key_dict` (the cache key).
    """

    names: tuple[str, ...] = ("mel", "chroma")
    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    win_length: int | None = None  # None = n_fft
    window: str = "hann"
    center: bool = True
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None  # None = sample_rate / 2
    mel_scale: str = "slaney"  # "slaney" (librosa's default) or "htk" (torchaudio's)
    mel_norm: str | None = "slaney"  # "slaney" (librosa's default) or None (torchaudio's)
    top_db: float | None = None
    n_chroma: int = 12
    n_mfcc: int = 20
    device: str = "cpu"
    batch_size: int = 16
    _runtime_keys = ("device", "batch_size")

    def __post_init__(self):
        names = self.names
        if isinstance(names, str):
            names = (names,)
        object.__setattr__(self, "names", tuple(str(n) for n in names))
        unknown = [n for n in self.names if n not in FEATURES]
        if unknown or not self.names:
            raise ValueError(f"unknown feature name(s) {unknown or '[] (empty)'}; "
                             f"registered features: {sorted(FEATURES)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"feature names repeat: {list(self.names)}")
        for k in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_chroma", "n_mfcc",
                  "batch_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or int(v) != v or v <= 0:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
            object.__setattr__(self, k, int(v))
        if self.win_length is not None:
            object.__setattr__(self, "win_length", int(self.win_length))
            if not 0 < self.win_length <= self.n_fft:
                raise ValueError(f"win_length={self.win_length} must be in (0, n_fft={self.n_fft}]")
        object.__setattr__(self, "f_min", float(self.f_min))
        if self.f_max is not None:
            object.__setattr__(self, "f_max", float(self.f_max))
        if not 0 <= self.f_min < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, "
                             f"f_max={self.fmax}, sample_rate={self.sample_rate}")
        if self.mel_scale not in ("slaney", "htk"):
            raise ValueError(f"mel_scale must be 'slaney' or 'htk', got {self.mel_scale!r}")
        if isinstance(self.mel_norm, str) and self.mel_norm.lower() == "none":
            object.__setattr__(self, "mel_norm", None)
        if self.mel_norm not in (None, "slaney"):
            raise ValueError(f"mel_norm must be 'slaney' or None, got {self.mel_norm!r}")
        if self.top_db is not None:
            object.__setattr__(self, "top_db", float(self.top_db))
            if self.top_db < 0:
                raise ValueError(f"top_db must be >= 0 or None, got {self.top_db}")
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc={self.n_mfcc} must be <= n_mels={self.n_mels}")
        object.__setattr__(self, "center", bool(self.center))
        object.__setattr__(self, "device", str(self.device))

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, params: Mapping | FeatureParams | None = None, **overrides) -> FeatureParams:
        """Build from a mapping (plain dict or omegaconf); unknown keys raise ``ValueError``."""
        if isinstance(params, FeatureParams):
            return dataclasses.replace(params, **overrides) if overrides else params
        d = dict(params or {})
        d.update(overrides)
        valid = cls.fields()
        unknown = sorted(k for k in d if k not in valid)
        if unknown:
            raise ValueError(f"unknown feature parameter(s) {unknown}; valid: {valid}")
        if "names" in d and not isinstance(d["names"], str):
            d["names"] = tuple(d["names"])
        return cls(**d)

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def fmax(self) -> float:
        return float(self.sample_rate) / 2 if self.f_max is None else self.f_max

    @property
    def win(self) -> int:
        return self.n_fft if self.win_length is None else self.win_length

    def key_dict(self) -> dict:
        """The parameters that change outputs (for the cache hash), JSON-ready."""
        d = dataclasses.asdict(self)
        for k in self._runtime_keys:
            d.pop(k)
        d["names"] = list(self.names)
        return d

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["names"] = list(self.names)
        return d

    def num_frames(self, num_samples: int) -> int:
        if self.center:
            return 1 + num_samples // self.hop_length
        if num_samples < self.n_fft:
            raise ValueError(f"{num_samples} samples < n_fft={self.n_fft} with center=False")
        return 1 + (num_samples - self.n_fft) // self.hop_length


# --------------------------------------------------------------------------- registry


@dataclass
class Feature:
    name: str
    fn: Callable[[torch.Tensor, FeatureParams], torch.Tensor]
    dim: Callable[[FeatureParams], int] | None = None  # None: found by a tiny probe run
    doc: str = field(default="")


FEATURES: dict[str, Feature] = {}


def register_feature(name: str, fn: Callable | None = None, *, dim: Callable | None = None,
                     overwrite: bool = False):
    """Register ``fn(power [B, F, T] float32, params) -> [B, F', T]`` as feature ``name``.

    Usable as ``@register_feature("name")`` or ``register_feature("name", fn)``. ``dim``
    (optional) gives F' from the params without computing anything.
    """

    def deco(f):
        if name in FEATURES and not overwrite:
            raise ValueError(f"feature {name!r} is already registered")
        FEATURES[name] = Feature(name, f, dim, (f.__doc__ or "").strip())
        return f

    return deco(fn) if fn is not None else deco


def unregister_feature(name: str) -> None:
    FEATURES.pop(name, None)


# Filterbanks are cached per (parameters, device): params is frozen, hence hashable.
@functools.lru_cache(maxsize=32)
def mel_filterbank(params: FeatureParams, device: str) -> torch.Tensor:
    """[n_mels, n_freqs] from ``torchaudio.functional.melscale_fbanks``."""
    fb = AF.melscale_fbanks(n_freqs=params.n_freqs, f_min=params.f_min, f_max=params.fmax,
                            n_mels=params.n_mels, sample_rate=params.sample_rate,
                            norm=params.mel_norm, mel_scale=params.mel_scale)
    return fb.T.contiguous().to(device)


@functools.lru_cache(maxsize=32)
def chroma_filterbank(params: FeatureParams, device: str) -> torch.Tensor:
    """[n_chroma, n_freqs]: ``librosa.filters.chroma(sr, n_fft, n_chroma, tuning=0.0)``."""
    import librosa

    fb = librosa.filters.chroma(sr=params.sample_rate, n_fft=params.n_fft,
                                n_chroma=params.n_chroma, tuning=0.0)
    return torch.from_numpy(np.ascontiguousarray(fb, dtype=np.float32)).to(device)


@functools.lru_cache(maxsize=32)
def dct_matrix(params: FeatureParams, device: str) -> torch.Tensor:
    """[n_mfcc, n_mels]: orthonormal DCT-II, as ``scipy.fft.dct(type=2, norm="ortho")``."""
    return AF.create_dct(params.n_mfcc, params.n_mels, "ortho").T.contiguous().to(device)


@functools.lru_cache(maxsize=32)
def stft_window(params: FeatureParams, device: str) -> torch.Tensor:
    """librosa's window: ``get_window(window, win_length, fftbins=True)`` centred in n_fft."""
    import librosa

    w = librosa.filters.get_window(params.window, params.win, fftbins=True)
    w = librosa.util.pad_center(w, size=params.n_fft)
    return torch.from_numpy(np.asarray(w, dtype=np.float32)).to(device)


def power_to_db(S: torch.Tensor, amin: float = 1e-10, top_db: float | None = None) -> torch.Tensor:
    """``10*log10(max(S, amin))`` with ref 1.0; ``top_db`` clips each clip (dim 0) at its
    max - top_db, like ``librosa.power_to_db(S, ref=1.0, amin=amin, top_db=top_db)``."""
    db = 10.0 * torch.log10(torch.clamp(S, min=amin))
    if top_db is not None:
        peak = db.amax(dim=tuple(range(1, db.ndim)), keepdim=True)
        db = torch.maximum(db, peak - top_db)
    return db


def _matmul_fb(fb: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    # fb [M, F] @ power [B, F, T] -> [B, M, T]; power is usually a transposed view of a
    # [B, T, F] buffer, which BLAS takes without a copy.
    return torch.matmul(fb, power)


@register_feature("mel", dim=lambda p: p.n_mels)
def log_mel(power: torch.Tensor, params: FeatureParams) -> torch.Tensor:
    """log-Mel spectrogram in dB, [B, n_mels, T].

    Filterbank: ``torchaudio.functional.melscale_fbanks`` with ``mel_scale`` and ``norm``
    from the params; the defaults (``mel_scale="slaney"``, ``mel_norm="slaney"``) match
    librosa's defaults (torchaudio's own defaults are HTK, no norm). dB:
    ``10*log10(max(S, 1e-10))`` (ref 1.0), then ``top_db`` clipping when set. Matches
    ``librosa.power_to_db(librosa.feature.melspectrogram(..., power=2), ref=1.0,
    amin=1e-10, top_db=top_db)``.
    """
    mel = _matmul_fb(mel_filterbank(params, str(power.device)), power)
    return power_to_db(mel, amin=1e-10, top_db=params.top_db)


@register_feature("chroma", dim=lambda p: p.n_chroma)
def chroma(power: torch.Tensor, params: FeatureParams) -> torch.Tensor:
    """Chromagram, [B, n_chroma, T], like ``librosa.feature.chroma_stft(tuning=0)``.

    librosa's chroma filterbank (tuning 0.0) on the power spectrogram, then each frame
    divided by its max (norm=inf); frames whose max is below the float32 ``tiny``
    threshold are left unnormalised (librosa's ``util.normalize`` default).
    """
    raw = _matmul_fb(chroma_filterbank(params, str(power.device)), power)
    length = raw.abs().amax(dim=1, keepdim=True)
    tiny = torch.finfo(raw.dtype).tiny
    length = torch.where(length < tiny, torch.ones_like(length), length)
    return raw / length


@register_feature("mfcc", dim=lambda p: p.n_mfcc)
def mfcc(power: torch.Tensor, params: FeatureParams) -> torch.Tensor:
    """MFCC, [B, n_mfcc, T]: orthonormal DCT-II of the log-Mel (the ``mel`` feature, with
    its ``top_db``), like ``librosa.feature.mfcc(S=log_mel)``. Note ``librosa.feature.mfcc
    (y=...)`` itself uses ``power_to_db``'s default ``top_db=80``: set ``top_db=80`` for that.
    """
    return torch.matmul(dct_matrix(params, str(power.device)), log_mel(power, params))


# --------------------------------------------------------------------------- STFT


def frame_signal(waves: torch.Tensor, params: FeatureParams) -> torch.Tensor:
    """[B, N] -> [B, T, n_fft] view (after librosa's constant padding when ``center``)."""
    if params.center:
        pad = params.n_fft // 2
        waves = F.pad(waves, (pad, pad), mode="constant")
    elif waves.shape[-1] < params.n_fft:
        raise ValueError(f"{waves.shape[-1]} samples < n_fft={params.n_fft} with center=False")
    return waves.unfold(-1, params.n_fft, params.hop_length)


def power_spectrogram(waves: torch.Tensor, params: FeatureParams,
                      out: torch.Tensor | None = None,
                      chunked: bool | None = None) -> torch.Tensor:
    """Power spectrogram ``|STFT|**2`` of ``waves`` [B, N] float32 -> [B, n_fft//2+1, T].

    The result is a transposed view of a contiguous [B, T, F] tensor (``out`` when given,
    reused between batches to avoid page faults on fresh memory). ``chunked`` (default: on
    CPU) transforms 512 frames at a time; otherwise the whole batch at once (CUDA).
    """
    device = waves.device
    window = stft_window(params, str(device))
    frames = frame_signal(waves, params)  # [B, T, n_fft] (strided view)
    B, T, _ = frames.shape
    Fq = params.n_freqs
    if out is None or out.shape != (B, T, Fq) or out.device != device:
        out = torch.empty(B, T, Fq, dtype=torch.float32, device=device)
    if chunked is None:
        chunked = device.type == "cpu"
    if not chunked:
        spec = torch.view_as_real(torch.fft.rfft(frames * window, dim=-1))
        torch.mul(spec[..., 0], spec[..., 0], out=out)
        out.addcmul_(spec[..., 1], spec[..., 1])
        return out.transpose(1, 2)
    C = _CPU_CHUNK_FRAMES
    fr = torch.empty(min(C, T), params.n_fft, dtype=torch.float32, device=device)
    sp = torch.empty(min(C, T), Fq, dtype=torch.complex64, device=device)
    for b in range(B):
        for s in range(0, T, C):
            e = min(T, s + C)
            n = e - s
            torch.mul(frames[b, s:e], window, out=fr[:n])
            torch.fft.rfft(fr[:n], dim=-1, out=sp[:n])
            r = torch.view_as_real(sp[:n])
            o = out[b, s:e]
            torch.mul(r[..., 0], r[..., 0], out=o)
            o.addcmul_(r[..., 1], r[..., 1])
    return out.transpose(1, 2)


# --------------------------------------------------------------------------- extractor


@contextlib.contextmanager
def _torch_threads(n: int):
    prev = torch.get_num_threads()
    if prev == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class FeatureExtractor:
    """Computes ``params.names`` features from one power spectrogram per batch of clips.

    ``extractor(waves)`` takes float32 waves [B, N] (tensor or numpy; a 1-D wave is
    treated as B=1) and returns ``{name: float32 tensor [B, F, T]}`` on ``params.device``,
    processing ``params.batch_size`` clips per STFT.

    CPU parallelism: with ``torch.get_num_threads() == k > 1`` each batch is split into k
    groups of clips computed by k Python threads, torch set to 1 intra-op thread for the
    duration of the call (restored after). Same total thread count, but no OpenMP barrier
    per small op: on a busy machine intra-op threading of the chunked STFT collapsed (up to
    9x slower than one thread, measured), clip-level threads do not.
    """

    def __init__(self, params: Mapping | FeatureParams | None = None):
        self.params = FeatureParams.from_dict(params)
        self.device = torch.device(self.params.device)
        self._bufs: dict[int, torch.Tensor] = {}
        self._dims: dict[str, int] = {}
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self):  # picklable: no buffers, no threads
        state = dict(self.__dict__)
        state.update(_bufs={}, _pool=None)
        return state

    @property
    def names(self) -> list[str]:
        return list(self.params.names)

    def dims(self) -> dict[str, int]:
        """Feature dimension F per name (declared, or probed once on a short silence)."""
        missing = [n for n in self.names if n not in self._dims]
        for n in missing:
            feat = FEATURES[n]
            if feat.dim is not None:
                self._dims[n] = int(feat.dim(self.params))
        missing = [n for n in self.names if n not in self._dims]
        if missing:
            probe = torch.zeros(1, self.params.n_fft, device=self.device)
            with torch.no_grad():
                power = power_spectrogram(probe, self.params)
                for n in missing:
                    self._dims[n] = int(FEATURES[n].fn(power, self.params).shape[1])
        return {n: self._dims[n] for n in self.names}

    def warmup(self) -> None:
        """Build the filterbanks now (the first chroma filterbank imports librosa's numba
        stack: 1-3 s); the cache builder overlaps this with the first decodes."""
        with torch.no_grad():
            self._features(torch.zeros(1, self.params.n_fft, device=self.device), slot=-1)
        self._bufs.pop(-1, None)

    def shapes(self, num_samples: int) -> dict[str, tuple[int, int]]:
        """``{name: (F, T)}`` for clips of ``num_samples`` samples."""
        T = self.params.num_frames(int(num_samples))
        return {n: (d, T) for n, d in self.dims().items()}

    def __call__(self, waves) -> dict[str, torch.Tensor]:
        if isinstance(waves, np.ndarray):
            waves = torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32))
        if waves.ndim == 1:
            waves = waves.unsqueeze(0)
        if waves.ndim != 2:
            raise ValueError(f"waves must be [B, samples], got shape {tuple(waves.shape)}")
        waves = waves.to(device=self.device, dtype=torch.float32)
        bs = self.params.batch_size
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in self.names}
        with torch.no_grad():
            for start in range(0, waves.shape[0], bs):
                for n, y in self._batch(waves[start:start + bs]).items():
                    parts[n].append(y)
        return {n: v[0] if len(v) == 1 else torch.cat(v) for n, v in parts.items()}

    def _batch(self, chunk: torch.Tensor) -> dict[str, torch.Tensor]:
        k = min(torch.get_num_threads(), chunk.shape[0]) if self.device.type == "cpu" else 1
        if k <= 1:
            return self._features(chunk, 0)
        groups = torch.tensor_split(chunk, k)
        if self._pool is None or self._pool._max_workers < k:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(max_workers=k, thread_name_prefix="features")
        with _torch_threads(1):
            outs = list(self._pool.map(self._features, groups, range(k)))
        return {n: torch.cat([o[n] for o in outs]) for n in self.names}

    def _features(self, chunk: torch.Tensor, slot: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            power = power_spectrogram(chunk, self.params, out=self._buffer(chunk, slot))
            out = {}
            for n in self.names:
                y = FEATURES[n].fn(power, self.params)
                if y.untyped_storage().data_ptr() == power.untyped_storage().data_ptr():
                    y = y.clone()  # the power buffer is reused by the next batch
                out[n] = y.to(torch.float32).contiguous()
            return out

    def _buffer(self, chunk: torch.Tensor, slot: int = 0) -> torch.Tensor:
        """A reused [b, T, F] power buffer per thread (fresh large tensors cost page faults)."""
        b, T = chunk.shape[0], self.params.num_frames(chunk.shape[1])
        buf = self._bufs.get(slot)
        if buf is None or buf.shape[0] < b or buf.shape[1] != T or buf.device != chunk.device:
            buf = self._bufs[slot] = torch.empty(b, T, self.params.n_freqs, device=chunk.device)
        return buf[:b]

    def __repr__(self) -> str:
        return f"FeatureExtractor({self.params.to_dict()}, version={EXTRACTOR_VERSION})"
