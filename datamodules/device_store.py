"""A split's cached features held in one device's memory, batches cut there by index.

``DeviceStore`` copies a :class:`~datamodules.segments.SegmentDataset`'s clips once (in the
cache's dtype, float16 by default) to a device, CPU memory included, and yields batches
shaped like the DataLoader's (``{"mel": [B, 1, F, seg], "chroma": ..., "label", "clip"}``,
float32) without worker processes: each window is an index into a strided view of the
clips, random crops are drawn on the device, and SpecAugment and mixup, which run on the
batch after transfer, stay there too. Fixed-grid batches are bit-identical to
``SegmentDataset.batch`` of the same segments.

Under DDP each rank takes every ``world``-th segment of the (shuffled) order; training
shards are cut to equal length so every rank runs the same number of steps, evaluation
shards are not padded (every segment is scored exactly once).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .errors import UserError
from .segments import SegmentDataset

STORE_CHOICES = ("auto", "device", "loader")
# The share of free device memory (GPU) or available RAM (CPU) the stores may take.
DEVICE_MEMORY_SHARE = {"cuda": 0.5, "cpu": 0.25}


def dataset_bytes(ds: SegmentDataset) -> int:
    """Bytes a :class:`DeviceStore` of ``ds`` holds (its clips, in the cache's dtype)."""
    total = max(int(ds.total), int(ds.seg))
    return sum(len(ds.rows) * int(arr.shape[1]) * total * np.dtype(arr.dtype).itemsize
               for arr in ds.arrays.values())


def free_memory(device: torch.device) -> int:
    """Free bytes on ``device``: CUDA's free memory, or the RAM the OS can still give."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass
class StoreDecision:
    """Whether the splits go to a device store, and the one-line reason."""

    use: bool
    reason: str


def decide_store(choice: str, need: int, device: torch.device,
                 free: int | None = None) -> StoreDecision:
    """``data.store``: ``device`` (always; an error naming the sizes when ``need`` bytes do
    not fit), ``loader`` (never) or ``auto`` (when ``need`` is within
    ``DEVICE_MEMORY_SHARE`` of what is free)."""
    if choice not in STORE_CHOICES:
        raise UserError(f"data.store={choice!r}: expected one of {', '.join(STORE_CHOICES)}")
    if choice == "loader":
        return StoreDecision(False, "data.store=loader: DataLoader over the memory-mapped cache")
    free = free_memory(device) if free is None else int(free)
    share = DEVICE_MEMORY_SHARE.get(device.type, 0.25)
    gib = 2 ** 30
    sizes = (f"{need / gib:.2f} GiB of features, {free / gib:.1f} GiB free on {device}, "
             f"budget {share:.0%} = {share * free / gib:.1f} GiB")
    if need <= share * free:
        return StoreDecision(True, f"feature store on {device}: {sizes}")
    if choice == "device":
        raise UserError(f"data.store=device: the splits do not fit ({sizes}); use "
                        f"data.store=loader (DataLoader over the memory-mapped cache)")
    return StoreDecision(False, f"features stay in the memory-mapped cache, read by the "
                                f"DataLoader ({sizes}; data.store=device to force)")


class DeviceStore:
    """Iterable of batches over ``ds``'s segments, resident on ``device``.

    Args:
        ds: the split's segments (its arrays are read once, then not used by the store).
        batch_size, shuffle, drop_last: as for a DataLoader.
        seed: order and random crops of epoch ``e`` come from a generator seeded with
            ``(seed, e)``, so a run is reproducible and every epoch differs.
        rank, world: this process's shard under DDP.
        epoch_of: where the epoch number comes from (e.g. the trainer's current epoch, so a
            resumed run continues the sequence); by default a counter of iterations.
    """

    def __init__(self, ds: SegmentDataset, device: torch.device | str = "cpu",
                 batch_size: int = 64, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, rank: int = 0, world: int = 1,
                 epoch_of: Callable[[], int] | None = None):
        self.device = torch.device(device)
        self.seg = int(ds.seg)
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed, self.rank, self.world = int(seed), int(rank), int(world)
        self.epoch = 0
        self.epoch_of = epoch_of
        self.names = list(ds.names)
        order = np.asarray(ds.rows, dtype=np.int64)
        sort = np.argsort(order, kind="stable")  # memory maps read fastest in row order
        # Every feature's bands stacked in one [clips, bands, frames] tensor (one gather per
        # batch); each feature is a band range of it.
        dtypes = {np.dtype(a.dtype) for a in ds.arrays.values()}
        if len(dtypes) != 1:
            raise ValueError(f"DeviceStore: the cached features have several dtypes {dtypes}")
        bands = [int(ds.arrays[n].shape[1]) for n in self.names]
        x = np.zeros((len(order), sum(bands), max(ds.total, self.seg)), dtype=dtypes.pop())
        self.bands: dict[str, slice] = {}
        f0 = 0
        for name, f in zip(self.names, bands):
            # clips shorter than one segment keep zero padding, as SegmentDataset.batch()
            x[sort, f0:f0 + f, :ds.total] = ds.arrays[name][order[sort]]
            self.bands[name] = slice(f0, f0 + f)
            f0 += f
        self.clips = torch.from_numpy(x).to(self.device)
        # A [clips, bands, windows, seg] view (no copy): window s of clip c is [c, :, s].
        self.windows = self.clips.unfold(2, self.seg, 1)
        self.clip_pos = torch.from_numpy(ds.clip_pos).to(self.device)
        self.starts = torch.from_numpy(ds.starts).to(self.device)
        self.max_start = torch.from_numpy(ds.max_start).to(self.device)
        self.labels = torch.as_tensor(np.array(ds.labels), device=self.device)
        self.random_crops = bool(ds.random_crops)
        self.num_segments = len(ds)

    @property
    def nbytes(self) -> int:
        return self.clips.numel() * self.clips.element_size()

    def _shard(self) -> int:
        """Segments this rank sees per epoch."""
        if self.world == 1:
            return self.num_segments
        if self.shuffle:  # training: equal shards, so every rank steps the same number
            return self.num_segments // self.world
        return len(range(self.rank, self.num_segments, self.world))

    def __len__(self) -> int:
        n = self._shard()
        if self.drop_last and n > self.batch_size:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return g

    def _windows(self, idx: torch.Tensor, generator: torch.Generator | None):
        """(clip positions, start frames) of segments ``idx``; random crops drawn anew."""
        pos = self.clip_pos[idx]
        if not self.random_crops:
            return pos, self.starts[idx]
        u = torch.rand(len(idx), generator=generator, device=self.device, dtype=torch.float64)
        return pos, torch.floor(u * (self.max_start[pos] + 1)).long()

    def _cut(self, pos: torch.Tensor, starts: torch.Tensor, labels: torch.Tensor) -> dict:
        x = self.windows[pos, :, starts].to(torch.float32).unsqueeze(1)
        out = {n: x[:, :, f] for n, f in self.bands.items()}
        out["label"] = labels
        out["clip"] = pos
        return out

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """Segments ``idx`` (a long tensor on the store's device) as one batch."""
        pos, starts = self._windows(idx, generator)
        return self._cut(pos, starts, self.labels[pos])

    def __iter__(self):
        if self.epoch_of is not None:
            self.epoch = int(self.epoch_of())
        g = self._generator()
        if self.shuffle:
            order = torch.randperm(self.num_segments, generator=g, device=self.device)
        else:
            order = torch.arange(self.num_segments, device=self.device)
        if self.world > 1:
            order = order[self.rank::self.world][:self._shard()]
        n = len(order)
        stop = n - n % self.batch_size if (self.drop_last and n > self.batch_size) else n
        # The epoch's windows in one go; each batch is then two slices and one cut.
        pos, starts = self._windows(order[:stop], g)
        labels = self.labels[pos]
        for i in range(0, stop, self.batch_size):
            j = i + self.batch_size
            yield self._cut(pos[i:j], starts[i:j], labels[i:j])
        self.epoch += 1
