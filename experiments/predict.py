"""Predict the genre of audio files with a trained checkpoint.

    python -m experiments.predict checkpoint=PATH files=[a.mp3,b.wav]

Any format libsndfile reads, any sample rate and channel count. A file's prediction is the
mean of its segments' class probabilities. A file that cannot be read gets an entry
``{"file", "error"}`` and the others are still predicted. Last stdout line:
``{"predictions": [{"file", "genre", "probabilities": {genre: p}, "segments"}, ...]}``.
"""
from __future__ import annotations

import sys

import torch

from datamodules.audio import AudioDecodeError
from datamodules.errors import UserError
from experiments.checkpoints import checkpoint_composer, load_checkpoint_model
from experiments.config import log, main_guard, print_summary

DEFAULTS = {"files": [], "device": "cpu", "batch_size": 64}


@torch.no_grad()
def predict_file(model, segmenter, path, batch_size: int = 64) -> dict:
    feats, decoded = segmenter.features(path)
    segs, _ = segmenter.segments(feats)
    n = next(iter(segs.values())).shape[0]
    p = model.segment_probs(segs, batch_size).mean(0)
    labels = list(model.hparams.labels)
    return {"file": str(path), "genre": labels[int(p.argmax())],
            "probabilities": {g: round(float(x), 5) for g, x in zip(labels, p)},
            "segments": int(n), "seconds": round(decoded.source_seconds, 2),
            "source_rate": decoded.source_rate, "channels": decoded.channels}


def predict(cfg) -> dict:
    from datamodules.inference import FileSegmenter

    files = list(cfg.files) if not isinstance(cfg.files, str) else [cfg.files]
    if not files:
        raise UserError("files=[...] is required, e.g. files=[song.mp3,other.wav]")
    model = load_checkpoint_model(cfg).to(cfg.device)
    segmenter = FileSegmenter(model.hparams.extra, device=str(cfg.device))
    out = []
    for f in files:
        try:
            r = predict_file(model, segmenter, f, int(cfg.batch_size))
            top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:3]
            log(f"{f}: {r['genre']}  (" + ", ".join(f"{g} {p:.2f}" for g, p in top) + ")")
        except AudioDecodeError as e:
            r = {"file": str(f), "error": e.reason}
            log(f"{f}: error: {e.reason}")
        out.append(r)
    return {"predictions": out, "checkpoint": str(cfg.checkpoint)}


def main(cfg) -> int:
    print_summary(predict(cfg))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``python -m experiments.predict`` with ``argv`` (default: the command line)."""
    return main_guard(main, argv=argv, composer=checkpoint_composer(DEFAULTS))


if __name__ == "__main__":
    sys.exit(cli())
