"""Audio file -> model-ready segments, with the parameters a checkpoint was trained on."""
from __future__ import annotations

import numpy as np
import torch

from .audio import load_audio
from .segments import segment_geometry, segment_starts


class FileSegmenter:
    """Decodes any file libsndfile reads (any rate, any channel count), computes the
    checkpoint's features on the whole file and cuts it into the training segment length.

    ``extra`` is the ``extra`` dict stored in the checkpoint (``audio``, ``features``).
    """

    def __init__(self, extra: dict, device: str = "cpu"):
        from .features import FeatureExtractor, FeatureParams

        self.audio = dict(extra["audio"])
        feats = {**extra["features"], "device": device}
        self.params = FeatureParams.from_dict({**feats, "sample_rate": self.audio["sample_rate"]})
        self.extractor = FeatureExtractor(self.params)
        sr, hop = int(self.audio["sample_rate"]), int(self.params.hop_length)
        self.seg, self.hop = segment_geometry(self.audio["segment_seconds"],
                                              self.audio["segment_overlap"], sr, hop)
        self.seconds_per_frame = hop / sr

    def features(self, path) -> tuple[dict[str, torch.Tensor], object]:
        """Whole-file features {name: [F, T]} and the decoded clip info."""
        d = load_audio(path, sample_rate=int(self.audio["sample_rate"]), clip_seconds=None,
                       min_seconds=0.5, silence_db=float(self.audio["silence_db"]))
        wave = d.wave
        min_len = int((self.seg - 1) * self.params.hop_length)  # centred frames: exactly seg
        if len(wave) < min_len:  # shorter than one segment: pad
            wave = np.pad(wave, (0, min_len - len(wave)))
        feats = self.extractor(torch.from_numpy(wave)[None])
        return {k: v[0].float().cpu() for k, v in feats.items()}, d

    def segments(self, feats: dict[str, torch.Tensor]
                 ) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """{name: [S, 1, F, seg]} windows and their start frames."""
        total = next(iter(feats.values())).shape[-1]
        starts = segment_starts(total, self.seg, self.hop)
        if starts[-1] + self.seg < total:  # one more window so the file's end is covered
            starts = np.append(starts, total - self.seg)
        out = {k: torch.stack([v[:, s:s + self.seg] for s in starts])[:, None]
               for k, v in feats.items()}
        return out, starts


# ------------------------------------------------------------ decoding in worker processes
_WORKER: dict = {}


def init_worker(extra: dict) -> None:
    """Pool initializer: one feature extractor per worker, one torch thread each (the
    workers are the parallelism)."""
    torch.set_num_threads(1)
    _WORKER["segmenter"] = FileSegmenter(extra, device="cpu")


def file_features(path: str, segmenter: FileSegmenter | None = None) -> dict:
    """Decode ``path`` and compute its features: ``{"file", "features": {name: [F, T]
    float32 numpy}, "seconds", "source_rate", "channels"}``, or ``{"file", "error"}`` for a
    file that cannot be used (the others go on)."""
    from .audio import AudioDecodeError

    seg = segmenter or _WORKER["segmenter"]
    try:
        feats, d = seg.features(path)
    except AudioDecodeError as e:
        return {"file": str(path), "error": e.reason}
    except (OSError, RuntimeError, ValueError) as e:  # e.g. a file that vanished mid-run
        return {"file": str(path), "error": f"{type(e).__name__}: {e}"}
    return {"file": str(path), "features": {k: v.numpy() for k, v in feats.items()},
            "seconds": round(float(d.source_seconds), 2), "source_rate": d.source_rate,
            "channels": d.channels}
