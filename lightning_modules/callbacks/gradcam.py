"""Grad-CAM / Guided Grad-CAM overlays of fixed validation clips during and after fitting."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_modules.attribution import METHODS, attribute
from lightning_modules.callbacks.common import best_weights_copy, split_dataset, wandb_loggers
from lightning_modules.callbacks.plots import FeatureAxes, save_segment_figure


@dataclass
class _Selection:
    inputs: dict[str, torch.Tensor]  # name -> [K, 1, F, T]
    clip_ids: list[str]
    labels: list[int]
    start_frame: list[int]           # segment start within its clip (frames)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))


class GradCamCallback(pl.Callback):
    """Overlays for ``clips_per_class`` validation clips per class (the first clips of each
    class in the split's clip order; for each, its middle segment), chosen once.

    Drawn every ``every_n_epochs`` epochs (after validation, with the current weights; 0:
    never during fitting) and at the end of fitting with the best checkpoint's weights
    (``final_weights`` names them), on rank 0 only, never during the sanity check. Each clip
    gives ``<out_dir>/<tag>_<clip_id>.png`` (tag ``epoch003`` or ``final``): a column per
    branch, the input then one row per method, titled with the clip id, true and predicted
    genre. Logged as ``wandb.Image`` under ``gradcam/epoch`` / ``gradcam/final``
    to every ``WandbLogger``. ``self.written`` lists the PNGs.
    """

    def __init__(self, out_dir, clips_per_class: int = 1, every_n_epochs: int = 0,
                 methods: Sequence[str] = METHODS, split: str = "valid"):
        super().__init__()
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise ValueError(f"callbacks.gradcam.methods: unknown {bad or '(none)'}; choose "
                             f"from {list(METHODS)}")
        if int(clips_per_class) < 1:
            raise ValueError(f"callbacks.gradcam.clips_per_class must be >= 1, got "
                             f"{clips_per_class}")
        self.out_dir = Path(out_dir)
        self.clips_per_class = int(clips_per_class)
        self.every_n_epochs = int(every_n_epochs)
        self.methods = tuple(str(m) for m in methods)
        self.split = str(split)
        self.written: list[Path] = []
        self.final_weights = ""
        self._selection: _Selection | None = None

    # ---------------------------------------------------------------------- selection
    def _select(self, trainer) -> _Selection:
        if self._selection is not None:
            return self._selection
        dm, ds = split_dataset(trainer, self.split, "GradCamCallback")
        table = dm.clips(self.split)
        clip_labels = np.asarray(ds.labels)
        seg_idx, clip_ids, labels, starts = [], [], [], []
        for y in sorted(set(clip_labels.tolist())):
            for pos in np.nonzero(clip_labels == y)[0][:self.clips_per_class]:
                segs = np.nonzero(ds.clip_pos == pos)[0]
                if len(segs) == 0:
                    continue
                i = int(segs[len(segs) // 2])
                seg_idx.append(i)
                clip_ids.append(str(table["clip_id"].iloc[int(pos)]))
                labels.append(int(y))
                starts.append(int(ds.starts[i]))
        if not seg_idx:
            raise RuntimeError(f"GradCamCallback: the {self.split} split has no segments")
        batch = ds.batch(np.asarray(seg_idx))
        names = [n for n in ("mel", "chroma") if n in batch]
        self._selection = _Selection({n: batch[n].clone() for n in names}, clip_ids, labels,
                                     starts)
        return self._selection

    # ------------------------------------------------------------------------- hooks
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.every_n_epochs <= 0:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self.render(trainer, pl_module, f"epoch{trainer.current_epoch:03d}", "gradcam/epoch")

    def on_fit_end(self, trainer, pl_module) -> None:
        """The final overlays use the best checkpoint's weights (the model the test split
        and the ablations score), not the last epoch's."""
        if not trainer.is_global_zero:
            return
        model, self.final_weights = best_weights_copy(trainer, pl_module)
        self.render(trainer, model, "final", "gradcam/final", note=self.final_weights)
        del model

    # ----------------------------------------------------------------------- drawing
    def render(self, trainer, pl_module, tag: str, key: str, note: str = "") -> list[Path]:
        """Compute the maps and write/log one PNG per selected clip (rank 0 only); ``note``
        (e.g. which weights) goes into the titles."""
        if not trainer.is_global_zero:
            return []
        sel = self._select(trainer)
        res = attribute(pl_module, sel.inputs, methods=self.methods)
        axes = FeatureAxes.from_model(pl_module)
        labels = list(pl_module.hparams.labels)
        paths, captions = [], []
        for i, clip_id in enumerate(sel.clip_ids):
            pred = int(res.target[i])
            p = float(res.probs[i, pred])
            title = (f"{clip_id}  |  true: {labels[sel.labels[i]]}  |  predicted: {labels[pred]}"
                     f" (p={p:.2f})  |  {tag}" + (f", {note} weights" if note else ""))
            inputs = {b: sel.inputs[b][i, 0].numpy() for b in res.maps}
            maps = {b: {m: res.maps[b][m][i].numpy() for m in self.methods} for b in res.maps}
            t0 = sel.start_frame[i] * axes.seconds_per_frame
            path = save_segment_figure(self.out_dir / f"{tag}_{_safe(clip_id)}.png", inputs,
                                       maps, axes, self.methods, title, t0=t0)
            paths.append(path)
            captions.append(title)
        self.written.extend(paths)
        for lg in wandb_loggers(trainer):
            lg.log_image(key, [str(p) for p in paths], caption=captions)
        return paths
