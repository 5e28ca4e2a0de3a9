"""Interpretability callbacks (Grad-CAM overlays, ablations), built from the config.

``callbacks_from_config(cfg, run_dir)`` reads ``cfg.callbacks.gradcam`` and
``cfg.callbacks.ablation`` (see ``configs/default.yaml``) and returns the enabled ones:

- :class:`GradCamCallback` -> ``<run_dir>/figures/gradcam/*.png`` (+ W&B images);
- :class:`AblationCallback` -> ``<run_dir>/ablation.csv``, ``<run_dir>/figures/ablation.png``
  (+ W&B table and image) and ``.results`` (``ablation/...`` floats for the run summary).
"""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from lightning_modules.callbacks.ablation import AblationCallback
from lightning_modules.callbacks.gradcam import GradCamCallback

__all__ = ["AblationCallback", "GradCamCallback", "callbacks_from_config"]


def callbacks_from_config(cfg, run_dir) -> list[pl.Callback]:
    """The enabled interpretability callbacks for a run writing into ``run_dir``."""
    run_dir = Path(run_dir)
    section = cfg.get("callbacks") if hasattr(cfg, "get") else None
    if not section:
        return []
    out: list[pl.Callback] = []
    g = section.get("gradcam")
    if g is not None and bool(g.get("enabled", False)):
        out.append(GradCamCallback(
            out_dir=run_dir / "figures" / "gradcam",
            clips_per_class=int(g.get("clips_per_class", 1)),
            every_n_epochs=int(g.get("every_n_epochs", 0)),
            methods=list(g.get("methods", ["gradcam", "guided_gradcam"]))))
    a = section.get("ablation")
    if a is not None and bool(a.get("enabled", False)):
        out.append(AblationCallback(
            run_dir=run_dir,
            split=str(a.get("split", "valid")),
            smoothing_sigma=float(a.get("smoothing_sigma", 2.0)),
            patch=list(a.get("patch", [16, 16])),
            deletion_fractions=list(a.get("deletion_fractions",
                                          [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7])),
            max_segments=int(a.get("max_segments", 2048)),
            batch_size=int(cfg.get("data", {}).get("batch_size", 64) or 64)))
    return out
