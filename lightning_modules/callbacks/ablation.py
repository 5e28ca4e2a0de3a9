"""The ablation callback: at the end of fitting, :func:`~lightning_modules.ablations.run_ablation`
on the best checkpoint, written as CSV + figure and logged to W&B."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from lightning_modules.ablations import CSV_COLUMNS, run_ablation, write_csv
from lightning_modules.callbacks.common import (
    SummaryCallback,
    best_weights_copy,
    split_dataset,
    wandb_loggers,
)

log = logging.getLogger(__name__)


class AblationCallback(SummaryCallback):
    """At the end of fitting (rank 0): :func:`run_ablation` on ``split`` (default ``test``:
    the checkpoint was chosen on validation; every clip unless ``max_segments``) with the best
    checkpoint's weights (the first ``ModelCheckpoint``'s ``best_model_path``; else the
    current weights), on a deep copy of the model. Writes ``<run_dir>/ablation.csv`` and
    ``<run_dir>/figures/ablation.png``, logs a ``wandb.Table`` and the figure to every
    ``WandbLogger``, and fills ``self.summary`` (flat ``ablation/...`` floats)."""

    def __init__(self, run_dir, split: str = "test", smoothing_sigma: float = 2.0,
                 patch: Sequence[int] = (16, 16), max_segments: int | None = None,
                 batch_size: int = 64, seed: int = 0):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.split = str(split)
        self.smoothing_sigma = float(smoothing_sigma)
        self.patch = tuple(int(p) for p in patch)
        self.max_segments = None if max_segments is None else int(max_segments)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.csv_path = self.run_dir / "ablation.csv"
        self.figure_path = self.run_dir / "figures" / "ablation.png"

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        _, ds = split_dataset(trainer, self.split, "AblationCallback")
        model, weights = best_weights_copy(trainer, pl_module)
        cap = "every clip" if self.max_segments is None else \
            f"whole clips up to {self.max_segments} segments"
        log.info(f"ablation: {self.split} split, {weights} weights, {cap}")
        res = run_ablation(model, ds, self.smoothing_sigma, self.patch, self.max_segments,
                           self.batch_size, self.seed, weights)
        del model
        self.summary = dict(res.results)
        write_csv(res.rows, self.csv_path)
        from lightning_modules.callbacks.plots import save_ablation_figure

        title = (f"{self.run_dir.name}: {self.split} split, {res.rows[0]['clips']} clips, "
                 f"{weights} weights")
        save_ablation_figure(self.figure_path, res.accuracies, chance=1.0 / res.num_classes,
                             title=title, intervals=res.intervals)
        for lg in wandb_loggers(trainer):
            data = [[r[c] for c in CSV_COLUMNS] for r in res.rows]
            lg.log_table("ablation/table", columns=list(CSV_COLUMNS), data=data)
            lg.log_image("ablation/figure", [str(self.figure_path)], caption=[title])
            lg.log_metrics(self.summary)
        log.info(f"ablation ({self.split} split, {res.rows[0]['clips']} clips, clip level; "
                 "95 % bootstrap CI over clips): " + ", ".join(
                     f"{k} {v:.3f} [{res.intervals[k][0]:.3f}, {res.intervals[k][1]:.3f}]"
                     for k, v in res.accuracies.items()))
