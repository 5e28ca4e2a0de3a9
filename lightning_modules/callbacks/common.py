"""What the run callbacks share: the W&B loggers of a trainer, a split's segments, and the
base of callbacks whose figures belong in the run summary."""
from __future__ import annotations

import pytorch_lightning as pl


class SummaryCallback(pl.Callback):
    """A callback whose scalar figures belong in the run's ``summary.json``: it fills
    ``self.summary`` (``{"ablation/...": float}``); ``experiments.train`` collects it."""

    def __init__(self):
        super().__init__()
        self.summary: dict[str, float] = {}


def wandb_loggers(trainer) -> list:
    from pytorch_lightning.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def split_dataset(trainer, split: str, who: str):
    """``trainer.datamodule.datasets[split]`` (set up on demand), or a clear error."""
    dm = getattr(trainer, "datamodule", None)
    if dm is None or not hasattr(dm, "datasets"):
        raise RuntimeError(f"{who} needs trainer.datamodule with .datasets, .clips(split) and "
                           f".labels (a GenreDataModule); fit was called without one")
    if split not in dm.datasets and hasattr(dm, "setup"):
        dm.setup("test" if split == "test" else "fit")
    if split not in dm.datasets:
        raise RuntimeError(f"{who}: split {split!r} is not in the datamodule's datasets "
                           f"({sorted(dm.datasets)}); set it to one of those")
    return dm, dm.datasets[split]


def best_weights_copy(trainer, pl_module):
    """(a deep copy of ``pl_module`` in eval mode with the best checkpoint's weights, a
    label naming them): the first ``ModelCheckpoint``'s ``best_model_path``, else the
    current weights. What the test split is scored with, so figures drawn at the end of
    fitting describe the same model."""
    import copy
    from pathlib import Path

    import torch

    model = copy.deepcopy(pl_module)  # LightningModule.__getstate__ drops the trainer
    weights = "current"
    ckpt_cb = getattr(trainer, "checkpoint_callback", None)
    best = getattr(ckpt_cb, "best_model_path", "") if ckpt_cb is not None else ""
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(state)
        weights = f"best ({Path(best).name})"
    return model.eval(), weights
