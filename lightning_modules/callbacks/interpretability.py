"""The interpretability callback: at the end of fitting,
:func:`~lightning_modules.interpretability.run_interpretability` on the best checkpoint,
written as ``interpretability.csv`` + figures and logged to W&B."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

from lightning_modules.callbacks.common import (
    SummaryCallback,
    best_weights_copy,
    split_dataset,
    wandb_loggers,
)
from lightning_modules.faithfulness import FRACTIONS
from lightning_modules.texture_shape import DEFAULT_SEVERITY

log = logging.getLogger(__name__)


class InterpretabilityCallback(SummaryCallback):
    """At the end of fitting (rank 0), on a copy of the model with the best checkpoint's
    weights: faithfulness (deletion and insertion against matched baselines), the
    randomisation sanity checks (cascading; labels, trained ``label_epochs`` epochs on whole
    clips of the ``train`` split up to ``label_segments`` segments) and the texture/shape
    severity sweep, on ``split`` (whole clips up to ``max_segments`` segments; the checks on
    up to ``sanity_segments``). Writes
    ``<run_dir>/interpretability.csv``, ``figures/faithfulness.png`` and
    ``figures/texture_shape.png``, logs a ``wandb.Table``, the figures and the summary floats
    (``interpretability/...``) to every ``WandbLogger``, and fills ``self.summary``."""

    def __init__(self, run_dir, split: str = "test",
                 methods: Sequence[str] = ("gradcam", "guided_gradcam", "integrated_gradients"),
                 fractions: Sequence[float] = FRACTIONS, max_segments: int | None = 128,
                 sanity_segments: int = 32, label_epochs: int = 10,
                 label_segments: int | None = 256,
                 severity: Mapping = DEFAULT_SEVERITY, threshold: float = 0.5,
                 batch_size: int = 64, seed: int = 0):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.split = str(split)
        self.methods = tuple(str(m) for m in methods)
        self.fractions = tuple(float(f) for f in fractions)
        self.max_segments = None if max_segments is None else int(max_segments)
        self.sanity_segments = int(sanity_segments)
        self.label_epochs = int(label_epochs)
        self.label_segments = None if label_segments is None else int(label_segments)
        self.severity = {k: tuple(v) if isinstance(v, (list, tuple)) else v
                         for k, v in dict(severity).items()}
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.csv_path = self.run_dir / "interpretability.csv"
        self.figure_paths = {"faithfulness": self.run_dir / "figures" / "faithfulness.png",
                             "texture_shape": self.run_dir / "figures" / "texture_shape.png"}

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        from lightning_modules.ablations import write_csv
        from lightning_modules.callbacks.plots import save_faithfulness_figure
        from lightning_modules.interpretability import COLUMNS, run_interpretability
        from lightning_modules.texture_shape import save_severity_figure

        dm, ds = split_dataset(trainer, self.split, "InterpretabilityCallback")
        train = dm.datasets.get("train") if self.label_epochs > 0 else None
        model, weights = best_weights_copy(trainer, pl_module)
        log.info(f"interpretability: {self.split} split, {weights} weights")
        rep = run_interpretability(model, ds, train, self.methods, self.fractions,
                                   self.max_segments, self.sanity_segments, self.label_epochs,
                                   self.label_segments, self.severity, self.batch_size,
                                   self.seed, self.threshold)
        del model
        self.summary = dict(rep.results)
        write_csv(rep.rows, self.csv_path, COLUMNS)
        faith = rep.faithfulness
        title = (f"{self.run_dir.name}: {self.split} split, {faith.clips} clips, "
                 f"{weights} weights")
        save_faithfulness_figure(self.figure_paths["faithfulness"], faith.scores,
                                 faith.fractions, title=title)
        save_severity_figure(self.figure_paths["texture_shape"], rep.severity,
                             chance=1.0 / len(pl_module.hparams.labels), title=title)
        for lg in wandb_loggers(trainer):
            lg.log_table("interpretability/table", columns=list(COLUMNS),
                         data=[[r[c] for c in COLUMNS] for r in rep.rows])
            for name, path in self.figure_paths.items():
                lg.log_image(f"interpretability/{name}", [str(path)], caption=[title])
            lg.log_metrics(self.summary)
        for key, v in rep.sanity.items():
            log.info(f"sanity {key}: cascading {v['final_cascading']}, labels {v['labels']}, "
                     f"{'passes' if v['passes'] else 'fails'}")
        for v in rep.verdicts.values():
            log.info(f"texture vs shape: {v['summary']}")
