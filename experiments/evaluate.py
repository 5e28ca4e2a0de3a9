"""Evaluate a checkpoint on a split of its dataset, or on your own labelled music.

    python -m experiments.evaluate checkpoint=PATH [split=test|valid] [out=DIR] [key=value ...]
    python -m experiments.evaluate checkpoint=PATH files=[/music] [out=DIR]

Prints clip/segment accuracy, macro F1 and a per-class precision/recall/F1 table (stderr),
writes ``confusion_<split>.png``, ``report_<split>.json`` and per-clip predictions
(``predictions_<split>.csv``) to ``out`` (default: the run's ``figures/``). The last stdout
line is the JSON summary.

``checkpoint=[a.ckpt,b.ckpt]`` (or a glob pattern) scores an ensemble: the members' clip
probabilities averaged (clip accuracy and macro F1; each member's accuracy is logged).

With ``files=`` (files, folders, glob patterns) each file's genre is the nearest folder in
its path named like one of the model's genres (``/music/Jazz/live/x.mp3`` is jazz); files
under no such folder are skipped and listed. The files are predicted as ``predict`` does
(batched); the report is ``confusion_files.png``, ``report_files.json`` and
``predictions_files.csv`` (macro F1 over the genres present).
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.errors import UserError
from datamodules.inputs import file_names
from experiments.builders import build_eval_trainer
from experiments.checkpoints import checkpoint_composer, load_ensemble
from experiments.config import log, main_guard, print_summary
from experiments.reports import (
    confusion_matrix,
    per_class_report,
    save_confusion_png,
    write_predictions,
)

DEFAULTS = {"split": "test", "out": None, "files": [], "workers": 2, "batch_size": 64}
_STAGE = {"test": "test", "valid": "val"}


def genre_of(path: str, labels: list[str]) -> str | None:
    """The label of a user's file: the nearest folder in its path named like one of the
    model's genres (case-insensitive), or None."""
    lower = {g.lower(): g for g in labels}
    for part in reversed(Path(path).parent.parts):
        if part.lower() in lower:
            return lower[part.lower()]
    return None


def evaluate_files(cfg) -> dict:
    """``files=``: score the model on a user's own labelled music (files, folders, globs;
    each file's genre is the nearest folder named like one of the model's genres)."""
    from datamodules.inputs import inputs_of
    from experiments.predict import predict_batches

    models = load_ensemble(cfg)
    labels = list(models[0].hparams.labels)
    inputs = inputs_of(cfg.files)
    skipped = [dict(e) for e in inputs.errors]
    todo, truth = [], {}
    for f in inputs.files:
        g = genre_of(f, labels)
        if g is None:
            skipped.append({"file": f, "error": "no folder in its path is named like a genre "
                                                f"({', '.join(labels)})"})
        else:
            todo.append(f)
            truth[f] = g
    if not todo:
        raise UserError(f"files={file_names(cfg.files)}: no audio file under a genre folder "
                        f"(folders named "
                        f"{', '.join(labels)}, e.g. /music/jazz/*.mp3)")
    results = {}
    for group in predict_batches(models, todo, int(cfg.workers), int(cfg.batch_size)):
        for r in group:
            if "error" in r:
                skipped.append(r)
            else:
                results[r["file"]] = r
    for e in skipped:
        log(f"{e['file']}: skipped: {e['error']}")
    files = [f for f in todo if f in results]
    if not files:
        raise UserError("no file could be predicted; see the errors above")
    idx = {g: i for i, g in enumerate(labels)}
    y = np.array([idx[truth[f]] for f in files])
    probs = np.array([[results[f]["probabilities"][g] for g in labels] for f in files])
    pred = probs.argmax(1)
    cm = confusion_matrix(y, pred, len(labels))
    report = per_class_report(cm, labels)
    present = [r for r in report if r["support"] > 0]
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).parent.parent / "figures"
    out.mkdir(parents=True, exist_ok=True)
    png = save_confusion_png(cm, labels, out / "confusion_files.png",
                             title=f"{len(files)} labelled files (clip level)")
    table = pd.DataFrame({"clip_id": files, "genre": [truth[f] for f in files]})
    write_predictions(out / "predictions_files.csv", table, probs, labels)
    acc = float((pred == y).mean())
    summary = {"files/acc_clip": acc,
               "files/f1_macro": float(np.mean([r["f1"] for r in present])),  # classes present
               "clips": len(files), "skipped": skipped, "per_class": report,
               "protocol_label": f"{len(files)} of the user's files, labelled by their genre "
                                 f"folder; clip level", "confusion_png": str(png),
               "predictions_csv": str(out / "predictions_files.csv"),
               "checkpoint": str(cfg.checkpoint), "checkpoints": list(cfg.checkpoints)}
    (out / "report_files.json").write_text(json.dumps(summary, indent=2))
    log(f"files: clip acc {acc:.4f}, macro F1 {summary['files/f1_macro']:.4f} over "
        f"{len(files)} files (classes present: {len(present)}); {len(skipped)} skipped")
    return summary


def ensemble_results(members: list, stage: str):
    """(metrics, ``ClipResults``) of the mean of the members' clip probabilities (the same
    split, clips in the same order)."""
    from lightning_modules.base import ClipResults

    probs = np.mean([m.probs for m in members], axis=0)
    y = members[0].labels
    seen = y >= 0
    pred = probs.argmax(1)
    n = probs.shape[1]
    cm = confusion_matrix(y[seen], pred[seen], n)
    acc = float((pred[seen] == y[seen]).mean())
    f1 = float(np.mean([r["f1"] for r in per_class_report(cm, [str(i) for i in range(n)])]))
    return ({f"{stage}/acc_clip": acc, f"{stage}/f1_macro": f1},
            ClipResults(cm, probs, y, acc, f1))


def evaluate(cfg) -> dict:
    if file_names(cfg.files):
        return evaluate_files(cfg)
    from datamodules.datamodule import GenreDataModule
    from datamodules.splits import protocol, protocol_label
    from lightning_modules.base import DataMismatchError

    split = str(cfg.split)
    if split not in _STAGE:
        raise UserError(f"split={split!r}: choose test or valid")
    models = load_ensemble(cfg)
    dm = GenreDataModule(cfg)
    stage = _STAGE[split]
    scored = []
    for model in models:
        trainer = build_eval_trainer(cfg)
        with contextlib.redirect_stdout(sys.stderr):
            run = trainer.test if split == "test" else trainer.validate
            try:
                res = run(model, datamodule=dm, verbose=False)[0]
            except DataMismatchError as e:  # labels or input bins differ from the model's
                raise UserError(str(e)) from None
        scored.append((res, model.clip_results[stage]))
    labels = dm.labels
    res, results = scored[0]
    if len(scored) > 1:  # an ensemble: the members' clip probabilities averaged
        res, results = ensemble_results([r for _, r in scored], stage)
        log(f"ensemble of {len(scored)} checkpoints; members' clip accuracy: " + ", ".join(
            f"{r.acc:.4f}" for _, r in scored))
    cm = results.confusion
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
               "checkpoint": str(cfg.checkpoint), "checkpoints": list(cfg.checkpoints)}
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
