"""``GenreDataModule``: cached Mel + chroma tensors -> segment batches for Lightning.

Lightning drives it: ``prepare_data`` indexes the dataset and builds the feature cache
(once per node, or once overall with ``cache.per_node=false`` on a shared file system;
other ranks wait), ``setup`` opens the memory maps, cuts fixed-length segments *after* the
split, and computes per-band normalisation statistics from the training split only.
What a model needs from the data goes through one interface: :meth:`data_facts`
(labels, input bins, normalisation statistics, clips per split).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .device_store import DeviceStore, dataset_bytes, decide_store
from .errors import UserError
from .features import FeatureParams
from .index import SPLITS
from .segments import SegmentDataset, collate_batched, segment_geometry

log = logging.getLogger(__name__)
_STAGE_SPLITS = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",),
                 "predict": ("test",)}


@dataclass
class DataFacts:
    """What a model takes from its data: class names, frequency bins per input, per-band
    training statistics ``{name: (mean [F], std [F])}`` (after ``setup("fit")``) and the
    number of clips of each split set up so far (``{"valid": n, "test": n}``)."""

    labels: list[str]
    input_bins: dict[str, int]
    norm_stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    num_clips: dict[str, int] = field(default_factory=dict)


class GenreDataModule(pl.LightningDataModule):
    """Batches are dicts ``{"mel": [B,1,F,T], "chroma": [B,1,12,T], "label": [B],
    "clip": [B]}`` where ``clip`` is the position of the segment's clip in its split's
    clip table (:meth:`clips`), used for clip-level voting."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.prepare_data_per_node = bool(cfg.cache.per_node)
        self.seed = int(cfg.seed)
        self.index = None
        self.cache = None
        self.datasets: dict[str, SegmentDataset] = {}
        self._clips: dict[str, object] = {}
        self.norm_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.batch_size = int(cfg.data.batch_size)
        self.stores: dict[str, DeviceStore] = {}
        self.store_decision = None
        self._feature_params = None  # for the key shift, built on first use

    # -- building -------------------------------------------------------------------
    def _index(self):
        """The clip index (files, labels, split), built once; no features needed."""
        if self.index is None:
            from datamodules.indexers import build_index

            self.index = build_index(self.cfg.data)
        return self.index

    @property
    def labels(self) -> list[str]:
        return list(self._index().labels)

    def input_bins(self) -> dict[str, int]:
        """Frequency bins per used feature, from the feature parameters (no cache needed)."""
        from .features import FeatureExtractor
        from .prepare import feature_params

        dims = FeatureExtractor(feature_params(self.cfg)).dims()
        return {n: int(dims[n]) for n in self.cfg.features.names}

    def data_facts(self) -> DataFacts:
        return DataFacts(self.labels, self.input_bins(), dict(self.norm_stats),
                         {s: len(t) for s, t in self._clips.items() if s != "train"})

    def prepare_data(self):
        from .prepare import prepare

        prepare(self.cfg, index=self._index())

    def setup(self, stage: str | None = None):
        if self.cache is None:
            from .prepare import prepare

            self.cache = prepare(self.cfg, progress=False, index=self._index()).cache
            self._per_device_batch()
        for split in _STAGE_SPLITS.get(stage or "fit", SPLITS):
            if split not in self.datasets:
                self.datasets[split] = self._make_split(split)
        if "train" in self.datasets and not self.norm_stats:
            self.norm_stats = self._train_stats()
        self._device_stores()

    def _per_device_batch(self):
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise UserError(f"data.batch_size={self.batch_size} is not divisible by the "
                            f"number of devices ({world}); choose a multiple of {world}")
        self.batch_size //= world

    def _make_split(self, split: str) -> SegmentDataset:
        c = self.cfg
        cached = self.cache.index.reset_index(drop=True)
        cached["row"] = np.arange(len(cached))
        # The split comes from the current index (protocol/fold), not from the cache.
        table = self.index.table[["clip_id", "split"]].merge(
            cached.drop(columns=["split"], errors="ignore"), on="clip_id", how="inner")
        table = table[table["split"] == split].sort_values("clip_id").reset_index(drop=True)
        if table.empty:
            raise UserError(f"the {split} split of {self.index.dataset} is empty "
                            f"(data.split={c.data.split}); see `python -m experiments.prepare "
                            f"data={c.choices.data} data.root={c.data.root}`")
        self._clips[split] = table
        sr, hop = int(c.data.sample_rate), int(c.features.hop_length)
        seg, hop_frames = segment_geometry(c.data.segment_seconds, c.data.segment_overlap,
                                           sr, hop)
        total = next(iter(self.cache.arrays.values())).shape[-1]
        padded = table.get("padded_seconds", 0.0)
        valid = total - np.floor(np.asarray(padded, dtype=float) * sr / hop).astype(int)
        arrays = {k: v for k, v in self.cache.arrays.items() if k in c.features.names}
        crops = c.data.train_crops_per_clip if split == "train" else None
        return SegmentDataset(arrays, table["row"].to_numpy(), table["label"].to_numpy(),
                              seg, hop_frames, valid, random_crops=crops)

    def _train_stats(self, chunk: int = 64) -> dict:
        """Per-band mean/std over the training clips' frames, accumulated in float64."""
        ds = self.datasets["train"]
        stats = {}
        for name, arr in ds.arrays.items():
            total, total_sq, n = np.zeros(arr.shape[1]), np.zeros(arr.shape[1]), 0
            for i in range(0, len(ds.rows), chunk):
                x = np.asarray(arr[np.sort(ds.rows[i:i + chunk])], dtype=np.float64)
                total += x.sum(axis=(0, 2))
                total_sq += (x * x).sum(axis=(0, 2))
                n += x.shape[0] * x.shape[2]
            mean = total / n
            std = np.sqrt(np.maximum(total_sq / n - mean ** 2, 1e-12))
            stats[name] = (mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32))
        return stats

    # -- facts for models and reports -------------------------------------------------
    def clips(self, split: str):
        """This split's clip table (clip_id, genre, label, path, ...) in ``clip`` order."""
        return self._clips[split]

    def num_clips(self, split: str) -> int:
        return len(self._clips[split])

    # -- loaders --------------------------------------------------------------------
    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None \
            else torch.device("cpu")

    def _device_stores(self) -> None:
        """``data.store``: the splits set up so far go to device memory (once each), or stay
        with the DataLoader; the decision covers every split and is logged once."""
        if self.store_decision is None:
            # Every split's clips, so that a later stage (test) still fits.
            ds = next(iter(self.datasets.values()))
            clips = int(self.index.table["split"].isin(SPLITS).sum())
            need = dataset_bytes(ds) // max(1, len(ds.rows)) * clips
            self.store_decision = decide_store(str(self.cfg.data.store), need,
                                               self._device())
            log.info(self.store_decision.reason)
        if not self.store_decision.use:
            return
        rank, world = (self.trainer.global_rank, self.trainer.world_size) \
            if self.trainer is not None else (0, 1)
        for split, ds in self.datasets.items():
            if split not in self.stores:
                train = split == "train"
                self.stores[split] = DeviceStore(
                    ds, self._device(), self.batch_size, shuffle=train,
                    drop_last=train and len(ds) > self.batch_size, seed=self.seed,
                    rank=rank, world=world,
                    epoch_of=None if self.trainer is None else self._current_epoch)

    def _current_epoch(self) -> int:  # a resumed run continues its crop/order sequence
        return self.trainer.current_epoch

    def _loader(self, split: str, train: bool):
        if split in self.stores:
            return self.stores[split]
        workers = int(self.cfg.data.num_workers)
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=train,
                          drop_last=train and len(self.datasets[split]) > self.batch_size,
                          num_workers=workers, persistent_workers=workers > 0,
                          collate_fn=collate_batched, generator=gen,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("valid", False)

    def test_dataloader(self):
        return self._loader("test", False)

    # -- augmentation ---------------------------------------------------------------
    def on_after_batch_transfer(self, batch, dataloader_idx):
        training = self.trainer is not None and self.trainer.training
        ks = self.cfg.data.get("key_shift") or {}
        if training and ks.get("enabled"):
            from .key_shift import random_shifts, shift_batch
            from .prepare import feature_params

            if self._feature_params is None:
                self._feature_params = FeatureParams.from_dict(feature_params(self.cfg))
            n = next(iter(batch.values())).shape[0]
            batch = shift_batch(batch, random_shifts(n, ks.get("max_semitones", 2),
                                                     ks.get("p", 0.5)), self._feature_params)
        sa = self.cfg.data.spec_augment
        if sa.enabled and training:
            batch = spec_augment(batch, self.norm_stats, sa, self.cfg.features.names)
        return batch


def spec_augment(batch: dict, stats: dict, sa, names) -> dict:
    """SpecAugment-style masks: the same time masks on every input (they stay aligned),
    frequency masks per input; masked cells take the training mean of their band."""
    ref = batch[names[0]]
    b, _, _, t = ref.shape
    dev = ref.device
    time_mask = torch.zeros(b, t, dtype=torch.bool, device=dev)
    for _ in range(int(sa.time_masks)):
        w = (torch.rand(b, device=dev) * sa.time_width * t).long()
        s = (torch.rand(b, device=dev) * (t - w).clamp(min=1)).long()
        ar = torch.arange(t, device=dev)
        time_mask |= (ar >= s[:, None]) & (ar < (s + w)[:, None])
    out = dict(batch)
    for name in names:
        x = batch[name].clone()
        f = x.shape[2]
        mean = torch.as_tensor(stats[name][0], device=dev, dtype=x.dtype).view(1, 1, f, 1)
        fill = mean.expand_as(x)
        mask = time_mask[:, None, None, :].expand_as(x).clone()
        for _ in range(int(sa.freq_masks)):
            w = (torch.rand(b, device=dev) * sa.freq_width * f).long()
            s = (torch.rand(b, device=dev) * (f - w).clamp(min=1)).long()
            ar = torch.arange(f, device=dev)
            fm = (ar >= s[:, None]) & (ar < (s + w)[:, None])
            mask |= fm[:, None, :, None].expand_as(x)
        out[name] = torch.where(mask, fill, x)
    return out
