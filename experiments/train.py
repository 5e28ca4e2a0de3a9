"""Train one model, test its best checkpoint, write a run directory.

    python -m experiments.train data=synth model=mid_two_way trainer=cpu [seed=1] [key=value ...]

The run directory (``paths.output_dir/runs/<name>``) holds ``config.yaml``, ``metrics.csv``,
``checkpoints/`` (best by ``val/acc_clip`` and ``last.ckpt``), ``figures/`` and
``summary.json``. ``train.resume=auto`` (or ``resume=auto``) continues a killed run from its
last checkpoint. The last stdout line is the JSON summary.
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from experiments.config import log, main_guard, print_summary
from experiments.runs import run_dir_for

SUMMARY_KEYS = ("val/acc_clip", "test/acc_clip", "test/acc_segment", "test/f1_macro")


def build_loggers(cfg, run_dir: Path, run_id: str):
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    loggers = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    w = cfg.logger.wandb
    if w.enabled:
        import os

        os.environ.setdefault("WANDB_MODE", str(w.mode))
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(
            project=w.project, entity=w.entity, group=w.group, tags=list(w.tags),
            job_type=w.job_type, name=run_dir.name, id=run_id, save_dir=str(run_dir),
            resume="allow", config=OmegaConf.to_container(cfg, resolve=True)))
    return loggers


def build_callbacks(cfg, run_dir: Path) -> list:
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    t = cfg.train
    cbs = [
        ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), monitor=t.monitor, mode="max",
                        filename="best-epoch{epoch:03d}-acc{val/acc_clip:.4f}",
                        auto_insert_metric_name=False, save_last=True, save_top_k=1),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    if int(t.early_stopping_patience) > 0:
        cbs.append(EarlyStopping(monitor=t.monitor, mode="max",
                                 patience=int(t.early_stopping_patience)))
    from lightning_modules.callbacks import callbacks_from_config

    cbs.extend(callbacks_from_config(cfg, run_dir))
    return cbs


def build_trainer(cfg, run_dir: Path, run_id: str, loggers=None, callbacks=None) -> pl.Trainer:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)  # DDP on CPU: Lightning uses gloo
    return pl.Trainer(
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir, run_id) if loggers is None else loggers,
        callbacks=build_callbacks(cfg, run_dir) if callbacks is None else callbacks,
        enable_progress_bar=True, **kwargs)


def train(cfg) -> dict:
    from datamodules.datamodule import GenreDataModule
    from experiments.runs import config_hash, model_kwargs
    from lightning_modules import build_model

    t0 = time.perf_counter()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    run_dir, resuming = run_dir_for(cfg)
    summary_path = run_dir / "summary.json"
    if str(cfg.train.resume) == "auto" and summary_path.is_file():
        log(f"run already complete: {run_dir} (delete it to train again)")
        return json.loads(summary_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"{run_dir.name}-{config_hash(cfg)}"[:64]
    trainer = build_trainer(cfg, run_dir, run_id)
    if trainer.is_global_zero:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    dm = GenreDataModule(cfg)
    dm.trainer = trainer
    dm.setup("fit")  # every rank: the cache lock lets one build while the others wait
    bins = {k: v[0] for k, v in dm.input_shapes().items()}
    model = build_model(str(cfg.model.mode), **model_kwargs(cfg, dm.labels, bins))
    model.set_normalization(dm.norm_stats)
    ckpt = None
    if resuming:
        ckpt = str(run_dir / "checkpoints" / "last.ckpt")
        log(f"resuming from {ckpt}")
    elif str(cfg.train.resume) not in ("never", "auto"):
        ckpt = str(cfg.train.resume)
        if not Path(ckpt).is_file():
            from datamodules.errors import UserError

            raise UserError(f"train.resume={ckpt}: no such checkpoint")
    log(f"run dir: {run_dir}")
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
        best = trainer.checkpoint_callback.best_model_path
        best_score = trainer.checkpoint_callback.best_model_score
        test = {}
        if cfg.train.test:
            res = trainer.test(model, datamodule=dm, ckpt_path=best or None, verbose=False)
            test = {k: float(v) for k, v in (res[0] if res else {}).items()}
    summary = {
        "val/acc_clip": None if best_score is None else float(best_score),
        **{k: test.get(k) for k in SUMMARY_KEYS[1:]},
        "test/loss": test.get("test/loss"),
        "checkpoint": best,
        "run_dir": str(run_dir),
        "seconds": round(time.perf_counter() - t0, 1),
        "epochs": int(trainer.current_epoch),
        "mode": str(cfg.model.mode), "backbone": str(cfg.backbone.name),
        "tap": int(cfg.model.tap), "seed": int(cfg.seed), "dataset": str(cfg.data.name),
    }
    for cb in trainer.callbacks:  # e.g. ablation accuracies and deletion AUCs
        summary.update(getattr(cb, "results", None) or {})
    if trainer.is_global_zero:
        write_reports(model, dm, run_dir)
        summary_path.write_text(json.dumps(summary, indent=2))
    for lg in trainer.loggers:
        if hasattr(lg, "experiment") and lg.__class__.__name__ == "WandbLogger":
            lg.experiment.summary.update({k: v for k, v in summary.items() if v is not None})
            lg.experiment.finish()
    return summary


def write_reports(model, dm, run_dir: Path) -> None:
    """Confusion matrix PNG of the test split (from the last test epoch)."""
    from experiments.reports import save_confusion_png

    cm = getattr(model, "last_confusion", {}).get("test")
    if cm is not None:
        save_confusion_png(cm, dm.labels, run_dir / "figures" / "confusion_test.png",
                           title=f"{run_dir.name}: test (clip level)")


def main(cfg) -> int:
    print_summary(train(cfg))
    return 0


if __name__ == "__main__":
    # `resume=auto` is accepted as a short form of `train.resume=auto`.
    argv = [("train." + a) if a.startswith("resume=") else a for a in sys.argv[1:]]
    sys.exit(main_guard(main, argv=argv))
