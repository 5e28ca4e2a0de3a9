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
