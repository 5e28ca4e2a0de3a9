"""Predict the genre of audio files, folders and glob patterns with a trained checkpoint.

    python -m experiments.predict checkpoint=PATH files=[song.mp3,/music,'~/in/**/*.flac']
                                  [out=preds.csv] [workers=2] [batch_size=64] [top_k=3]
                                  [precision=32|bf16] [device=cpu|cuda]

``checkpoint`` may list several checkpoints (``checkpoint=[a.ckpt,b.ckpt]``) or be a glob
pattern: an ensemble whose segment probabilities are averaged (same labels and features).
``files`` mixes files, folders (every audio file under them, recursive; ``._*`` and hidden
files left out) and glob patterns. Any format libsndfile reads, any sample rate and channel
count. A file's prediction is the mean of its segments' class probabilities, computed with
the checkpoint's own feature parameters and segment length (the training code's extractor
and model). ``workers`` processes decode and compute features while the model scores
segments of several files per batch (channels-last layout; ``precision=bf16`` adds
bfloat16 autocast); a file that cannot be read gets an error and the others go on.

With ``out=preds.csv`` the rows (``file, genre, p, genre_2, p_2, ..., seconds, segments,
error``) are appended and flushed after every model batch, with a progress bar (files/s)
on stderr; running again with the same ``out`` skips the files it already holds, so an
interrupted run (even ``kill -9``) loses at most the batch in flight. The last stdout line
is a JSON summary: the counts and the CSV's path, or, without ``out``, every prediction
(``{"predictions": [{"file", "genre", "probabilities", "segments", ...}]}``).
"""
from __future__ import annotations

import csv
import itertools
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from datamodules.errors import UserError
from experiments.checkpoints import checkpoint_composer, load_ensemble
from experiments.config import log, main_guard, print_summary

DEFAULTS = {"files": [], "device": "cpu", "batch_size": 64, "out": None, "workers": 2,
            "top_k": 3, "precision": "32"}


@torch.no_grad()
def predict_file(model, segmenter, path, batch_size: int = 64) -> dict:
    """One file at a time, in this process: decode, features, segments, model."""
    feats, decoded = segmenter.features(path)
    segs, _ = segmenter.segments(feats)
    n = next(iter(segs.values())).shape[0]
    p = model.segment_probs(segs, batch_size).mean(0)
    labels = list(model.hparams.labels)
    return {"file": str(path), "genre": labels[int(p.argmax())],
            "probabilities": {g: round(float(x), 5) for g, x in zip(labels, p)},
            "segments": int(n), "seconds": round(decoded.source_seconds, 2),
            "source_rate": decoded.source_rate, "channels": decoded.channels}


def _decoded(files: list[str], extra: dict, workers: int) -> Iterator[dict]:
    """:func:`datamodules.inference.file_features` of every file, in order; in ``workers``
    processes (0: in this process)."""
    from datamodules.inference import FileSegmenter, file_features

    if workers <= 0:
        seg = FileSegmenter(extra, device="cpu")
        for f in files:
            yield file_features(f, seg)
        return
    from datamodules.worker_pool import worker_pool

    pool = worker_pool(workers, initializer=_Init(extra))
    ahead: deque = deque()  # at most 2 files per worker decoded ahead of the model
    todo = iter(files)
    try:
        for f in itertools.islice(todo, 2 * workers):
            ahead.append(pool.apply_async(file_features, (f,)))
        while ahead:
            rec = ahead.popleft().get()
            for f in itertools.islice(todo, 1):
                ahead.append(pool.apply_async(file_features, (f,)))
            yield rec
    finally:
        pool.terminate()
        pool.join()


class _Init:
    """Picklable pool initializer carrying the checkpoint's feature parameters."""

    def __init__(self, extra: dict):
        self.extra = extra

    def __call__(self):
        from datamodules.inference import init_worker

        init_worker(self.extra)


PRECISIONS = ("32", "bf16")


@torch.inference_mode()
def predict_batches(model, files: list[str], workers: int = 2, batch_size: int = 64,
                    device: str = "cpu", precision: str = "32") -> Iterator[list[dict]]:
    """Predictions of ``files`` in groups: files are gathered until they hold at least
    ``batch_size`` segments, scored together, and yielded as one list of records (the
    same records as :func:`predict_file`, or ``{"file", "error"}``). ``model`` may be a
    list of models sharing labels and features (an ensemble: their segment probabilities
    are averaged).

    The model runs in channels-last memory layout (its parameters are converted in place;
    the same arithmetic, faster convolutions); ``precision="bf16"`` also runs it under
    bfloat16 autocast (faster again on CPUs and GPUs with bf16 units; probabilities move
    by about 1e-2)."""
    from datamodules.inference import FileSegmenter

    if str(precision) not in PRECISIONS:
        raise UserError(f"precision={precision}: choose one of {', '.join(PRECISIONS)}")
    models = [m.to(memory_format=torch.channels_last)
              for m in (model if isinstance(model, (list, tuple)) else [model])]
    model = models[0]
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                              enabled=str(precision) == "bf16")

    extra = dict(model.hparams.extra)
    cutter = FileSegmenter(extra, device="cpu")  # cuts segments only; no decoding here
    labels = list(model.hparams.labels)
    pending: list[tuple[dict, dict]] = []
    errors: list[dict] = []

    def flush() -> list[dict]:
        out = list(errors)
        errors.clear()
        if pending:
            names = list(pending[0][1])
            x = {n: torch.cat([s[n] for _, s in pending]).to(device).contiguous(
                memory_format=torch.channels_last) for n in names}
            with autocast:  # an ensemble: the members' probabilities averaged
                probs = torch.stack([m.segment_probs(x, batch_size) for m in models]).mean(0)
            i = 0
            for rec, segs in pending:
                n = next(iter(segs.values())).shape[0]
                p = probs[i:i + n].mean(0)
                i += n
                out.append({"file": rec["file"], "genre": labels[int(p.argmax())],
                            "probabilities": {g: round(float(v), 5) for g, v in zip(labels, p)},
                            "segments": int(n), "seconds": rec["seconds"],
                            "source_rate": rec["source_rate"], "channels": rec["channels"]})
            pending.clear()
        return out

    held = 0
    for rec in _decoded(files, extra, workers):
        if "error" in rec:
            errors.append(rec)
        else:
            segs, _ = cutter.segments({k: torch.from_numpy(v) for k, v in
                                       rec.pop("features").items()})
            pending.append((rec, segs))
            held += next(iter(segs.values())).shape[0]
        if held >= batch_size or len(errors) >= batch_size:
            yield flush()
            held = 0
    if pending or errors:
        yield flush()


class PredictionCSV:
    """The ``out`` CSV: its header, the files it already holds, and appending rows whole
    (flushed and synced per batch). A last line cut by a kill is dropped on open."""

    def __init__(self, path: Path, labels: list[str], top_k: int):
        self.path = Path(path)
        self.k = max(1, min(int(top_k), len(labels)))
        self.columns = ["file", "genre", "p"]
        for j in range(2, self.k + 1):
            self.columns += [f"genre_{j}", f"p_{j}"]
        self.columns += ["seconds", "segments", "error"]
        self.done: set[str] = set()
        if self.path.is_file() and self.path.stat().st_size:
            self._resume()
        else:
            self._header()

    def _header(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as fh:
            csv.writer(fh).writerow(self.columns)

    def _resume(self) -> None:
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):  # a row cut by kill -9: drop it
            data = data[:data.rfind(b"\n") + 1]
            self.path.write_bytes(data)
        if not data:  # killed while writing the header
            self._header()
            return
        rows = list(csv.reader(data.decode().splitlines()))
        if not rows or rows[0] != self.columns:
            raise UserError(f"out={self.path} holds other columns ({rows[0] if rows else []}); "
                            f"expected {self.columns}: give another out= (or top_k=) or "
                            f"delete it")
        self.done = {r[0] for r in rows[1:] if r}

    def row(self, rec: dict) -> list:
        if "error" in rec:
            return [rec["file"]] + [""] * (len(self.columns) - 2) + [rec["error"]]
        top = sorted(rec["probabilities"].items(), key=lambda kv: -kv[1])[:self.k]
        cells = [rec["file"]]
        for g, p in top:
            cells += [g, f"{p:.5f}"]
        return cells + [rec["seconds"], rec["segments"], ""]

    def write(self, records: Iterable[dict]) -> None:
        with open(self.path, "a", newline="") as fh:
            w = csv.writer(fh)
            for rec in records:
                w.writerow(self.row(rec))
                self.done.add(rec["file"])
            fh.flush()
            os.fsync(fh.fileno())


def predict(cfg) -> dict:
    from tqdm import tqdm

    from datamodules.inputs import inputs_of

    inputs = inputs_of(cfg.files)
    models = [m.to(str(cfg.device)) for m in load_ensemble(cfg)]
    labels = list(models[0].hparams.labels)
    if len(models) > 1:
        log(f"ensemble of {len(models)} checkpoints (probabilities averaged)")
    sheet = PredictionCSV(Path(cfg.out), labels, int(cfg.top_k)) if cfg.out else None
    todo = [f for f in inputs.files if sheet is None or f not in sheet.done]
    skipped = len(inputs.files) - len(todo)
    log(f"{len(inputs.files)} audio files ({skipped} already in {cfg.out}, {len(todo)} to "
        f"predict)" + (f"; {inputs.ignored} non-audio files ignored" if inputs.ignored else "")
        + (f"; {len(inputs.errors)} names not found" if inputs.errors else ""))
    for e in inputs.errors:
        log(f"{e['file']}: error: {e['error']}")
    if sheet is not None:
        sheet.write([e for e in inputs.errors if e["file"] not in sheet.done])
    results: list[dict] = list(inputs.errors) if sheet is None else []
    counts = {"predicted": 0, "errors": len(inputs.errors)}
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), unit="file", file=sys.stderr, mininterval=1.0,
               disable=not todo, dynamic_ncols=True)
    with bar:
        for group in predict_batches(models, todo, int(cfg.workers), int(cfg.batch_size),
                                     str(cfg.device), str(cfg.precision)):
            if sheet is not None:
                sheet.write(group)
            else:
                results.extend(group)
            for r in group:
                if "error" in r:
                    counts["errors"] += 1
                    bar.write(f"{r['file']}: error: {r['error']}", file=sys.stderr)
                else:
                    counts["predicted"] += 1
                    if sheet is None:
                        top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:3]
                        bar.write(f"{r['file']}: {r['genre']}  (" + ", ".join(
                            f"{g} {p:.2f}" for g, p in top) + ")", file=sys.stderr)
            bar.update(len(group))
    seconds = time.perf_counter() - t0
    summary = {"files": len(inputs.files), "skipped": skipped, **counts,
               "ignored_non_audio": inputs.ignored, "seconds": round(seconds, 1),
               "files_per_s": round(len(todo) / seconds, 2) if todo and seconds > 0 else None,
               "checkpoint": str(cfg.checkpoint), "checkpoints": list(cfg.checkpoints)}
    if sheet is not None:
        summary["out"] = str(sheet.path)
    else:  # in the order the files were named
        order = {f: i for i, f in enumerate([e["file"] for e in inputs.errors] + todo)}
        summary["predictions"] = sorted(results, key=lambda r: order.get(r["file"], 0))
    return summary


def main(cfg) -> int:
    print_summary(predict(cfg))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``python -m experiments.predict`` with ``argv`` (default: the command line)."""
    return main_guard(main, argv=argv, composer=checkpoint_composer(DEFAULTS))


if __name__ == "__main__":
    sys.exit(cli())
