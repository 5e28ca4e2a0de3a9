"""Objects a run is made of, built from the config: model, callbacks, loggers, trainer.

Callbacks and loggers are config data: each entry of ``cfg.callbacks`` / ``cfg.logger`` is
``{enabled, _target_, **kwargs}``. :func:`instantiate` imports ``_target_`` (a dotted
``module.Class``) and calls it with the keyword arguments; path arguments (``dirpath``,
``out_dir``, ``run_dir``, ``save_dir``) that are relative are taken inside the run
directory. An entry with ``enabled: false`` is left out. Defaults live in
``configs/default.yaml`` only.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from datamodules.errors import UserError

_RUN_PATH_KEYS = ("dirpath", "out_dir", "run_dir", "save_dir")


def locate(target: str):
    """``"package.module.Name"`` -> the object, or a clear error naming the target."""
    module, _, name = str(target).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"_target_ {target!r} cannot be imported ({e}); give a dotted path "
                        f"such as pytorch_lightning.callbacks.ModelCheckpoint") from None


def entry_kwargs(node: DictConfig | dict, run_dir: Path | None = None) -> dict[str, Any]:
    """The keyword arguments of a config entry (without ``enabled``/``_target_``), with
    relative run paths joined onto ``run_dir``."""
    kw = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    kw = {k: v for k, v in kw.items() if k not in ("enabled", "_target_")}
    if run_dir is not None:
        for k in _RUN_PATH_KEYS:
            if k in kw and kw[k] is not None and not Path(str(kw[k])).is_absolute():
                kw[k] = str(Path(run_dir) / str(kw[k]))
    return kw


def instantiate(node: DictConfig | dict, run_dir: Path | None = None, where: str = "",
                **runtime):
    """Build ``node['_target_'](**kwargs, **runtime)``; ``runtime`` adds what only exists
    at run time (a run id, the resolved config) and wins over the config."""
    if "_target_" not in node:
        raise UserError(f"config entry {where or node!r} has no _target_ (the class to build)")
    try:
        return locate(node["_target_"])(**{**entry_kwargs(node, run_dir), **runtime})
    except TypeError as e:
        raise UserError(f"config entry {where}: {node['_target_']} does not accept these "
                        f"arguments ({e})") from None


def enabled_entries(section) -> dict[str, DictConfig]:
    return {str(k): v for k, v in (section or {}).items()
            if isinstance(v, DictConfig) and bool(v.get("enabled", True))}


def build_callbacks(cfg, run_dir: Path) -> list[pl.Callback]:
    """Every enabled entry of ``cfg.callbacks``, in file order."""
    return [instantiate(node, run_dir, where=f"callbacks.{name}")
            for name, node in enabled_entries(cfg.callbacks).items()]


def build_loggers(cfg, run_dir: Path, run_id: str) -> list:
    """Every enabled entry of ``cfg.logger``. W&B runs get this run's name and id, the
    resolved config (once: the model does not log its hyperparameters), and ``mode`` as
    the default of ``WANDB_MODE`` (the environment variable wins)."""
    out = []
    for name, node in enabled_entries(cfg.logger).items():
        target = str(node.get("_target_", ""))
        runtime: dict[str, Any] = {}
        if target.endswith("WandbLogger"):
            node = OmegaConf.to_container(node, resolve=True)
            mode = node.pop("mode", None)
            if mode:
                os.environ.setdefault("WANDB_MODE", str(mode))
            os.environ.setdefault("WANDB_SILENT", "true")
            runtime = {"name": run_dir.name, "id": run_id, "resume": "allow",
                       "config": OmegaConf.to_container(cfg, resolve=True)}
        out.append(instantiate(node, run_dir, where=f"logger.{name}", **runtime))
    return out


def trainer_kwargs(cfg) -> dict:
    """``cfg.trainer`` as keyword arguments, ``precision: auto`` resolved for this machine
    (``experiments.speed``)."""
    from experiments.speed import resolve_precision

    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs["precision"] = resolve_precision(kwargs.get("precision", "32-true"),
                                            kwargs.get("accelerator"))
    return kwargs


def build_trainer(cfg, run_dir: Path, run_id: str, loggers=None, callbacks=None) -> pl.Trainer:
    """``pl.Trainer(**cfg.trainer)`` with this run's loggers and callbacks."""
    kwargs = trainer_kwargs(cfg)  # DDP on CPU: Lightning uses gloo
    # A progress bar for a person at a terminal; a log file (sweep trials, cluster jobs)
    # gets the epoch lines and the summary without redrawn bars.
    kwargs.setdefault("enable_progress_bar", sys.stderr.isatty())
    return pl.Trainer(
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir, run_id) if loggers is None else loggers,
        callbacks=build_callbacks(cfg, run_dir) if callbacks is None else callbacks,
        **kwargs)


def build_eval_trainer(cfg) -> pl.Trainer:
    """A trainer for scoring a checkpoint on a whole split: ``cfg.trainer``'s accelerator,
    precision and determinism on one device, no logger, no checkpoints, no callbacks."""
    kwargs = trainer_kwargs(cfg)
    for k in ("max_epochs", "min_epochs", "max_steps", "gradient_clip_val",
              "accumulate_grad_batches", "limit_train_batches", "limit_val_batches",
              "limit_test_batches", "num_sanity_val_steps", "log_every_n_steps",
              "check_val_every_n_epoch"):
        kwargs.pop(k, None)  # training-only, or would score part of the split
    kwargs.update(devices=1, num_nodes=1, strategy="auto", logger=False,
                  enable_checkpointing=False, enable_model_summary=False)
    kwargs.setdefault("enable_progress_bar", True)
    return pl.Trainer(**kwargs)


# Backbone config keys read here, not passed to the backbone builder.
_WIDTH_KEYS = ("name", "width", "match_params")


def backbone_kwargs(cfg, mode: str, labels: list[str], input_bins: dict[str, int]) -> dict:
    """The backbone builder's options with ``channels`` scaled by ``backbone.width``, or by
    the width that matches ``backbone.match_params``'s parameter count (same tap, backbone
    and data; within 5 %) when that names a mode."""
    from lightning_modules import build_model
    from lightning_modules.capacity import count_params, match_width, scale_channels

    bb = OmegaConf.to_container(cfg.backbone, resolve=True)
    kw = {k: v for k, v in bb.items() if k not in _WIDTH_KEYS}
    width = float(bb.get("width") or 1.0)
    base = list(kw["channels"])
    kw["channels"] = scale_channels(base, width)
    reference = bb.get("match_params")
    if not reference or str(reference) == mode:
        return kw
    common = dict(labels=list(labels), backbone=str(cfg.backbone.name),
                  tap=int(cfg.model.tap), inputs=dict(input_bins))
    counts: dict[tuple, int] = {}

    def params_at(w: float) -> int:
        ch = tuple(scale_channels(base, w))
        if ch not in counts:
            counts[ch] = count_params(build_model(mode, **common,
                                                  backbone_kwargs={**kw, "channels": list(ch)}))
        return counts[ch]

    try:
        target = count_params(build_model(str(reference), **common, backbone_kwargs=kw))
        w, _ = match_width(params_at, target)
    except ValueError as e:
        raise UserError(f"backbone.match_params={reference}: cannot match {mode} to it "
                        f"({e}); choose another backbone.channels or leave it null") from None
    return {**kw, "channels": scale_channels(base, w)}


def model_kwargs(cfg, labels: list[str], input_bins: dict[str, int]) -> dict:
    """Model constructor arguments from the config (everything a checkpoint must rebuild)."""
    m = cfg.model
    bb = backbone_kwargs(cfg, str(m.mode), labels, input_bins)
    return dict(
        labels=list(labels), backbone=str(cfg.backbone.name), backbone_kwargs=bb,
        tap=int(m.tap), inputs=dict(input_bins), head_dropout=float(m.head_dropout),
        lr=float(m.lr), weight_decay=float(m.weight_decay), scheduler=str(m.scheduler),
        warmup_epochs=float(m.warmup_epochs), label_smoothing=float(m.label_smoothing),
        mixup_alpha=float(m.mixup_alpha), join=str(m.get("join", "concat")),
        extra={
            "dataset": str(cfg.data.name),
            "features": OmegaConf.to_container(cfg.features, resolve=True),
            "audio": {k: cfg.data[k] for k in ("sample_rate", "clip_seconds", "min_seconds",
                                               "silence_db", "segment_seconds", "segment_overlap")},
            "config": OmegaConf.to_container(cfg, resolve=True),
        },
    )


def build_model(cfg, datamodule):
    """The mode class of ``cfg.model.mode`` for ``datamodule``'s labels and input bins."""
    from lightning_modules import build_model as build

    return build(str(cfg.model.mode),
                 **model_kwargs(cfg, datamodule.labels, datamodule.input_bins()))
