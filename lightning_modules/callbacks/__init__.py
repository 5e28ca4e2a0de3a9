"""Run callbacks: Grad-CAM overlays and ablations. Built from ``cfg.callbacks`` by
``experiments.builders.build_callbacks`` (each entry names its class in ``_target_``).

- :class:`GradCamCallback` -> ``<run_dir>/figures/gradcam/*.png`` (+ W&B images);
- :class:`AblationCallback` -> ``<run_dir>/ablation.csv``, ``<run_dir>/figures/ablation.png``
  (+ W&B table and image) and ``.summary`` (``ablation/...`` floats for the run summary);
- :class:`InterpretabilityCallback` -> ``<run_dir>/interpretability.csv``,
  ``figures/faithfulness.png``, ``figures/texture_shape.png`` (+ W&B) and ``.summary``
  (``interpretability/...`` floats).
"""
from lightning_modules.callbacks.ablation import AblationCallback
from lightning_modules.callbacks.common import SummaryCallback
from lightning_modules.callbacks.gradcam import GradCamCallback
from lightning_modules.callbacks.interpretability import InterpretabilityCallback

__all__ = ["AblationCallback", "GradCamCallback", "InterpretabilityCallback", "SummaryCallback"]
