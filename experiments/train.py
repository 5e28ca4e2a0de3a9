"""Train one model, test its best checkpoint, write a run directory.

    python -m experiments.train data=synth model=mid_two_way trainer=cpu [seed=1] [key=value ...]

The run directory (``paths.output_dir/runs/<name>``) holds ``config.yaml``, ``metrics.csv``,
``checkpoints/`` (best by ``val/acc_clip`` and ``last.ckpt``), ``figures/``,
``predictions_test.csv`` (per-clip test predictions) and ``summary.json`` (scores,
protocol, parameters and MFLOPs per segment). ``train.resume=auto`` (or ``resume=auto``)
continues a killed run from its last checkpoint. The last stdout line is the JSON summary.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from datamodules.publish import atomic_write_text
from experiments.builders import build_model, build_trainer, trainer_kwargs
from experiments.config import main_guard, print_summary
from experiments.run_dirs import config_hash, exclusive_run, run_dir_for
from experiments.speed import describe, resolve_channels_last

log = logging.getLogger("experiments.train")  # the same name when run as __main__
SUMMARY_KEYS = ("val/acc_clip", "test/acc_clip", "test/acc_segment", "test/f1_macro")


def train(cfg) -> dict:
    """Fit, test the best checkpoint once, write the run directory; returns the summary.
    With ``train.resume=auto`` one process at a time trains a run directory: a second
    process with the same config (e.g. a sweep trial that differs only in a parameter its
    mode ignores) waits, then returns the finished run's summary."""
    run_dir, _ = run_dir_for(cfg)
    with exclusive_run(cfg, run_dir):
        return _train(cfg)


def _train(cfg) -> dict:
    from datamodules.datamodule import GenreDataModule
    from datamodules.errors import UserError
    from datamodules.splits import protocol, protocol_label
    from lightning_modules.callbacks import SummaryCallback

    t0 = time.perf_counter()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    run_dir, resuming = run_dir_for(cfg)
    summary_path = run_dir / "summary.json"
    if str(cfg.train.resume) == "auto" and summary_path.is_file():
        log.info(f"run already complete: {run_dir} (delete it to train again)")
        return json.loads(summary_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"{run_dir.name}-{config_hash(cfg)}"[:64]
    dm = GenreDataModule(cfg)
    model = build_model(cfg, dm)  # labels and input bins: no feature cache needed yet
    trainer = build_trainer(cfg, run_dir, run_id)
    precision = trainer_kwargs(cfg)["precision"]
    channels_last = resolve_channels_last(cfg.train.channels_last, precision,
                                          cfg.trainer.accelerator)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    log.info(describe(precision, channels_last, cfg.trainer.accelerator))
    if trainer.is_global_zero:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    ckpt = None
    if resuming:
        ckpt = str(run_dir / "checkpoints" / "last.ckpt")
        log.info(f"resuming from {ckpt}")
    elif str(cfg.train.resume) not in ("never", "auto"):
        ckpt = str(cfg.train.resume)
        if not Path(ckpt).is_file():
            raise UserError(f"train.resume={ckpt}: no such checkpoint")
    log.info(f"run dir: {run_dir}")
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        best_score = trainer.checkpoint_callback.best_model_score \
            if trainer.checkpoint_callback else None
        test = {}
        if cfg.train.test:
            res = trainer.test(model, datamodule=dm, ckpt_path=best or None, verbose=False)
            test = {k: float(v) for k, v in (res[0] if res else {}).items()}
    proto = protocol(dm.index, cfg.data)
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
        "channels": list(model.hparams.backbone_kwargs.get("channels", [])),
        **model_capacity(cfg, model),
        "protocol": proto, "protocol_label": protocol_label(proto),
    }
    if summary["test/acc_clip"] is not None:
        log.info(f"test clip accuracy {summary['test/acc_clip']:.4f} "
                 f"({summary['protocol_label']}; best checkpoint chosen on validation)")
    for cb in trainer.callbacks:  # e.g. ablation accuracies and deletion AUCs
        if isinstance(cb, SummaryCallback):
            summary.update(cb.summary)
    if trainer.is_global_zero:
        preds = write_reports(model, dm, run_dir)
        if preds is not None:
            summary["predictions_csv"] = str(preds)
        # resume=auto reads summary.json as "complete": it is absent or whole, never half.
        atomic_write_text(summary_path, json.dumps(summary, indent=2))
    for lg in trainer.loggers:
        if lg.__class__.__name__ == "WandbLogger":
            lg.experiment.summary.update({k: v for k, v in summary.items() if v is not None})
            lg.experiment.finish()
    return summary


def model_capacity(cfg, model) -> dict:
    """``params`` and ``mflops`` (forward FLOPs of one segment, millions) of ``model``."""
    from datamodules.segments import segment_geometry
    from lightning_modules.capacity import capacity

    frames, _ = segment_geometry(cfg.data.segment_seconds, cfg.data.segment_overlap,
                                 cfg.data.sample_rate, cfg.features.hop_length)
    return dict(capacity(model, frames))


def write_reports(model, dm, run_dir: Path) -> Path | None:
    """Confusion matrix PNG of the test split (from the test epoch) and its per-clip
    predictions (``predictions_test.csv``: what paired tests between runs read); returns
    the predictions' path, or ``None`` without a test epoch."""
    from experiments.reports import save_confusion_png, write_predictions

    res = model.clip_results.get("test")
    if res is None:
        return None
    save_confusion_png(res.confusion, dm.labels, run_dir / "figures" / "confusion_test.png",
                       title=f"{run_dir.name}: test (clip level)")
    return write_predictions(run_dir / "predictions_test.csv", dm.clips("test"), res.probs,
                             dm.labels)


def main(cfg) -> int:
    print_summary(train(cfg))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``python -m experiments.train`` with ``argv`` (default: the command line);
    ``resume=auto`` is accepted as a short form of ``train.resume=auto``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    argv = [("train." + a) if a.startswith("resume=") else a for a in argv]
    return main_guard(main, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
