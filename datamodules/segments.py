"""Fixed-length windows over cached clip features, cut after the split."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


def segment_starts(frames: int, seg: int, hop: int, valid_frames: int | None = None) -> np.ndarray:
    """Start frames of windows of ``seg`` frames every ``hop`` frames over ``frames``.

    Windows that would be mostly zero padding (centre past ``valid_frames``) are dropped;
    every clip keeps at least one window. A clip shorter than ``seg`` gives one window at 0
    (the caller pads).
    """
    if frames <= seg:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, frames - seg + 1, hop, dtype=np.int64)
    if valid_frames is not None and valid_frames < frames:
        keep = starts + seg // 2 <= valid_frames
        starts = starts[keep] if keep.any() else starts[:1]
    return starts


def frames_for(seconds: float, sample_rate: int, hop_length: int) -> int:
    return max(1, int(round(seconds * sample_rate / hop_length)))


def segment_geometry(segment_seconds: float, overlap: float, sample_rate: int,
                     hop_length: int) -> tuple[int, int]:
    """(window length, window hop) in feature frames for ``segment_seconds`` windows that
    overlap by the fraction ``overlap``; the same for training, evaluation and inference."""
    seg = frames_for(float(segment_seconds), int(sample_rate), int(hop_length))
    return seg, max(1, int(round(seg * (1.0 - float(overlap)))))


class SegmentDataset(Dataset):
    """Segments of cached clips. Item ``i`` -> {"mel": [1, F, seg], "chroma": [1, 12, seg],
    "label": long, "clip": long (position of the clip in this split's clip list)}.

    ``arrays`` are [N, F, T] (memory-mapped); ``rows`` are the array rows of this split's
    clips; ``valid_frames`` per clip (frames that are not zero padding). With
    ``random_crops=k`` each clip gives ``k`` windows at random starts, drawn anew on every
    fetch from torch's RNG (seeded per DataLoader worker), instead of the fixed grid.
    """

    def __init__(self, arrays: dict[str, np.ndarray], rows: np.ndarray, labels: np.ndarray,
                 seg_frames: int, hop_frames: int, valid_frames: np.ndarray | None = None,
                 random_crops: int | None = None):
        self.arrays = arrays
        self.names = list(arrays)
        self.seg = seg_frames
        total = next(iter(arrays.values())).shape[-1]
        valid = np.full(len(rows), total) if valid_frames is None else np.asarray(valid_frames)
        self.max_start = np.maximum(0, np.minimum(valid, total) - seg_frames).astype(np.int64)
        self.random_crops = int(random_crops or 0)
        clip_pos, starts = [], []
        for pos, row in enumerate(rows):
            if self.random_crops:
                s = np.zeros(self.random_crops, dtype=np.int64)
            else:
                s = segment_starts(total, seg_frames, hop_frames, int(valid[pos]))
            clip_pos.append(np.full(len(s), pos, dtype=np.int64))
            starts.append(s)
        self.clip_pos = np.concatenate(clip_pos) if clip_pos else np.zeros(0, np.int64)
        self.starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.total = total

    def __len__(self) -> int:
        return len(self.starts)

    def segments_per_clip(self) -> np.ndarray:
        return np.bincount(self.clip_pos, minlength=len(self.rows))

    def _window(self, name: str, row: int, start: int) -> np.ndarray:
        x = self.arrays[name][row, :, start:start + self.seg]
        if x.shape[-1] < self.seg:  # clip shorter than one segment
            x = np.pad(x, ((0, 0), (0, self.seg - x.shape[-1])))
        return x

    def __getitem__(self, i: int) -> dict:
        return {k: v[0] for k, v in self.batch([i]).items()}

    def __getitems__(self, idx):
        """Batched fetch, the hook DataLoader uses: see :meth:`batch`."""
        return self.batch(idx)

    def batch(self, idx) -> dict:
        """Segments ``idx`` as one batch: {"mel": [B, 1, F, seg], "chroma": [B, 1, 12, seg],
        "label": [B], "clip": [B]} (one stacked copy per feature)."""
        idx = np.asarray(idx, dtype=np.int64)
        pos = self.clip_pos[idx]
        rows, starts = self.rows[pos], self.starts[idx]
        if self.random_crops:
            u = torch.rand(len(idx), dtype=torch.float64).numpy()
            starts = np.floor(u * (self.max_start[pos] + 1)).astype(np.int64)
        out = {}
        for name in self.names:
            x = np.stack([self._window(name, r, s) for r, s in zip(rows, starts)])
            out[name] = torch.from_numpy(x.astype(np.float32, copy=False)).unsqueeze(1)
        out["label"] = torch.from_numpy(self.labels[pos])
        out["clip"] = torch.from_numpy(pos)
        return out


def collate_batched(batch):
    """:meth:`SegmentDataset.batch` already returns a collated dict."""
    return batch
