"""Evaluate a checkpoint on a split of its dataset.

    python -m experiments.evaluate checkpoint=PATH [split=test|valid] [out=DIR] [key=value ...]

Prints clip/segment accuracy, macro F1 and a per-class precision/recall/F1 table (stderr),
writes ``confusion_<split>.png``, ``report_<split>.json`` and per-clip predictions
(``predictions_<split>.csv``) to ``out`` (default: the run's ``figures/``). The last stdout
line is the JSON summary.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from datamodules.errors import UserError
from experiments.builders import build_eval_trainer
from experiments.checkpoints import checkpoint_composer, load_checkpoint_model
from experiments.config import log, main_guard, print_summary
from experiments.reports import per_class_report, save_confusion_png, write_predictions

DEFAULTS = {"split": "test", "out": None}
_STAGE = {"test": "test", "valid": "val"}


def evaluate(cfg) -> dict:
    from datamodules.datamodule import GenreDataModule
    from datamodules.splits import protocol, protocol_label
    from lightning_modules.base import DataMismatchError

    split = str(cfg.split)
    if split not in _STAGE:
        raise UserError(f"split={split!r}: choose test or valid")
    model = load_checkpoint_model(cfg)
    dm = GenreDataModule(cfg)
    trainer = build_eval_trainer(cfg)
    with contextlib.redirect_stdout(sys.stderr):
        run = trainer.test if split == "test" else trainer.validate
        try:
            res = run(model, datamodule=dm, verbose=False)[0]
        except DataMismatchError as e:  # labels or input bins differ from the model's
            raise UserError(str(e)) from None
    stage = _STAGE[split]
    results = model.clip_results[stage]
    cm = results.confusion
    labels = dm.labels
    report = per_class_report(cm, labels)
    run_dir = Path(cfg.checkpoint).parent.parent
    out = Path(cfg.out) if cfg.out else run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    png = save_confusion_png(cm, labels, out / f"confusion_{split}.png",
                             title=f"{run_dir.name}: {split} (clip level)")
    clips = dm.clips(split)
    write_predictions(out / f"predictions_{split}.csv", clips, results.probs, labels)
    metrics = {k.replace(f"{stage}/", f"{split}/"): float(v) for k, v in res.items()}
    proto = protocol(dm.index, cfg.data)
    summary = {**metrics, "split": split, "clips": int(len(clips)), "protocol": proto,
               "protocol_label": protocol_label(proto),
               "per_class": report, "confusion_png": str(png),
               "predictions_csv": str(out / f"predictions_{split}.csv"),
               "checkpoint": str(cfg.checkpoint)}
    (out / f"report_{split}.json").write_text(json.dumps(summary, indent=2))
    log(f"{split}: clip acc {metrics.get(f'{split}/acc_clip', float('nan')):.4f}, segment acc "
        f"{metrics.get(f'{split}/acc_segment', float('nan')):.4f}, macro F1 "
        f"{metrics.get(f'{split}/f1_macro', float('nan')):.4f} over {len(clips)} clips "
        f"({protocol_label(proto)})")
    log(f"{'genre':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for r in report:
        log(f"{r['genre']:<14}{r['precision']:>10.3f}{r['recall']:>10.3f}{r['f1']:>10.3f}"
            f"{r['support']:>9d}")
    return summary


def main(cfg) -> int:
    print_summary(evaluate(cfg))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``python -m experiments.evaluate`` with ``argv`` (default: the command line)."""
    return main_guard(main, argv=argv, composer=checkpoint_composer(DEFAULTS))


if __name__ == "__main__":
    sys.exit(cli())
