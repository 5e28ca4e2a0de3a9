"""Explain a checkpoint's predictions on audio files: Grad-CAM, Guided Grad-CAM and
Integrated Gradients per branch (``methods``; ``lightning_modules/attribution.py``).

    python -m experiments.explain checkpoint=PATH files=[a.mp3,/music,'*.flac'] [out=DIR]

Each file (any format libsndfile reads, any rate and channel count) is cut into the
training segment length; its genre is the mean of the segments' probabilities. Every
segment's maps are computed for that clip-level genre (Grad-CAM on each branch's attribution
layer, the chroma one at all 12 pitch-class rows, upsampled to the branch's input grid), then
stitched over the whole file (overlapping windows averaged) and normalised once per file.
One PNG per branch per file (``<out>/<stem>_<branch>.png``: the input, the Grad-CAM overlay
with the most attributed span outlined, then the signed maps). ``out`` defaults to
``<run_dir>/explain/`` (the checkpoint's run directory). ``files`` mixes files, folders
(recursive) and glob patterns. ``<out>/index.html`` shows every file: the genre
probabilities, the overlays, the most attributed span in words, and any error
(``experiments/report_html.py``).

"top" per branch: ``time_s`` is the ``top_seconds`` window (default: the segment length)
with the highest mean Grad-CAM; within it, Mel: ``freq_hz`` = the centre frequencies of
the lowest and highest band of the shortest contiguous band range holding ``top_mass``
(default half) of the attribution; chroma: ``pitch_classes`` = the fewest pitch classes,
most attributed first, holding ``top_mass`` of the positive Integrated Gradients on the
cells above IG's band-mean baseline (the notes present, not those whose absence speaks for
the class; Grad-CAM when that method is not computed). Integrated Gradients is read at the
input's 12 rows; on models trained on a known pitch-class cue it names that pitch class
(Grad-CAM does not), and on models trained on four chords it names notes of the clip's
chord only, its three largest being the triad (``tests/test_interpretability.py``).

Last stdout line: ``{"explanations": [{"file", "genre", "probabilities", "segments",
"pngs": {branch: path}, "top": {branch: {...}}}, ...], "checkpoint", "out", "report"}``; a
file that cannot be read gets ``{"file", "error"}`` and the others go on. Progress goes to
stderr.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from datamodules.audio import AudioDecodeError
from datamodules.errors import UserError
from experiments.checkpoints import checkpoint_composer, load_checkpoint_model
from experiments.config import log, main_guard, print_summary

DEFAULTS = {"files": [], "out": None, "device": "cpu", "batch_size": 16,
            "methods": ["gradcam", "guided_gradcam", "integrated_gradients"], "top_seconds": None,
            "top_mass": 0.5}


def default_out(checkpoint) -> Path:
    """``<run_dir>/explain`` for ``<run_dir>/checkpoints/x.ckpt``; else next to the file."""
    p = Path(checkpoint).resolve()
    run_dir = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return run_dir / "explain"


# ------------------------------------------------------------------------- maps -> facts
def stitch(maps: torch.Tensor, starts, total: int) -> np.ndarray:
    """Segment maps [S, F, seg] starting at frames ``starts`` -> [F, total], overlapping
    windows averaged (frames no window covers stay 0)."""
    s, f, seg = maps.shape
    acc = np.zeros((f, total), dtype=np.float64)
    count = np.zeros(total, dtype=np.float64)
    for m, st in zip(maps.numpy(), np.asarray(starts, dtype=int)):
        n = min(seg, total - st)
        acc[:, st:st + n] += m[:, :n]
        count[st:st + n] += 1
    return (acc / np.maximum(count, 1)).astype(np.float32)


def top_window(cam: np.ndarray, frames: int) -> tuple[int, int]:
    """[start, stop) frames of the ``frames``-long window with the highest mean of ``cam``
    [F, T] (the whole input when shorter)."""
    profile = cam.mean(axis=0)
    t = len(profile)
    if frames >= t:
        return 0, t
    csum = np.concatenate([[0.0], np.cumsum(profile, dtype=np.float64)])
    sums = csum[frames:] - csum[:-frames]
    start = int(np.argmax(sums))
    return start, start + frames


def top_band_range(profile: np.ndarray, mass: float = 0.5) -> tuple[int, int]:
    """Shortest contiguous range [lo, hi] (inclusive) of bands holding ``mass`` of the
    non-negative ``profile``'s total (ties: the larger share)."""
    p = np.clip(np.asarray(profile, dtype=np.float64), 0, None)
    total = p.sum()
    if total <= 0:
        return 0, len(p) - 1
    csum = np.concatenate([[0.0], np.cumsum(p)])
    best = (len(p) + 1, 0.0, 0, len(p) - 1)
    for lo in range(len(p)):
        hi = int(np.searchsorted(csum, csum[lo] + mass * total - 1e-12 * total)) - 1
        if hi >= len(p):
            break
        hi = max(hi, lo)
        key = (hi - lo + 1, -(csum[hi + 1] - csum[lo]))
        if key < (best[0], -best[1]):
            best = (hi - lo + 1, csum[hi + 1] - csum[lo], lo, hi)
    return best[2], best[3]


def top_classes(profile: np.ndarray, mass: float = 0.5) -> list[int]:
    """The fewest indices, largest first, whose values hold ``mass`` of the total."""
    p = np.clip(np.asarray(profile, dtype=np.float64), 0, None)
    order = np.argsort(-p, kind="stable")
    if p.sum() <= 0:
        return [int(order[0])]
    k = int(np.searchsorted(np.cumsum(p[order]), mass * p.sum() - 1e-12 * p.sum())) + 1
    return [int(i) for i in order[:max(1, k)]]


def pitch_evidence(ig: np.ndarray, x: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """The cells that name pitch classes: positive Integrated Gradients where the input
    ``x`` ([..., 12, T]) lies above IG's baseline (``baseline``: [12], the band means), i.e.
    energy that is there and speaks for the class. A cell below its band mean with a
    negative gradient gets positive IG too (a note that is missing speaks for the class);
    naming it would name a note that is not heard, so it counts as zero here."""
    return np.where(x > np.asarray(baseline).reshape(-1, 1), np.clip(ig, 0, None), 0.0)


def normalise_map(m: np.ndarray, signed: bool) -> np.ndarray:
    scale = float(np.abs(m).max() if signed else m.max())
    return m / scale if scale > 0 else m


# ------------------------------------------------------------------------------ per file
def explain_file(model, segmenter, path, out_dir: Path, axes, methods, batch_size: int = 16,
                 top_seconds: float | None = None, top_mass: float = 0.5,
                 png_stem: str | None = None) -> dict:
    """Prediction, stitched maps, PNGs and top spans for one file (see module docstring).
    Raises ``AudioDecodeError`` for an unreadable file."""
    from lightning_modules.attribution import SIGNED, attribute
    from lightning_modules.base import PITCH_INPUTS
    from lightning_modules.callbacks.plots import save_file_figure

    feats, decoded = segmenter.features(path)
    segs, starts = segmenter.segments(feats)
    probs = model.segment_probs(segs, batch_size).mean(0)
    labels = list(model.hparams.labels)
    cls = int(probs.argmax())
    res = attribute(model, segs, target=cls, methods=methods, normalize=False,
                    batch_size=batch_size)
    spf = segmenter.seconds_per_frame
    seconds = float(top_seconds) if top_seconds else segmenter.seg * spf
    win = max(1, int(round(seconds / spf)))
    stem = png_stem or Path(path).stem
    entry = {"file": str(path), "genre": labels[cls],
             "probabilities": {g: round(float(p), 5) for g, p in zip(labels, probs)},
             "segments": int(len(starts)), "seconds": round(decoded.source_seconds, 2),
             "pngs": {}, "top": {}}
    for b in model.branch_names:
        base = feats[b].numpy()
        total = base.shape[1]
        covered = np.zeros(total, dtype=bool)
        for st in starts:
            covered[st:st + segmenter.seg] = True
        maps = {m: normalise_map(stitch(res.maps[b][m], starts, total), m in SIGNED)
                for m in methods}
        cam = maps.get("gradcam")
        if cam is None:  # only signed maps asked for: rank by the first one's magnitude
            cam = np.abs(maps[methods[0]])
        t0, t1 = top_window(cam, win)
        source = cam
        if b in PITCH_INPUTS and "integrated_gradients" in maps:
            source = pitch_evidence(maps["integrated_gradients"], base,
                                    getattr(model, f"{b}_mean").flatten().cpu().numpy())
        profile = source[:, t0:t1].mean(axis=1)
        top = {"time_s": [round(t0 * spf, 3), round(t1 * spf, 3)]}
        if b == "mel":
            lo, hi = top_band_range(profile, top_mass)
            top["freq_hz"] = [round(float(axes.mel_hz[lo]), 1), round(float(axes.mel_hz[hi]), 1)]
            bins = [lo, hi]
        else:
            bins = top_classes(profile, top_mass)
            names = axes.pitch_names(base.shape[0])
            top["pitch_classes"] = [names[i] for i in bins]
        title = (f"{Path(path).name}: predicted {labels[cls]} (p={float(probs[cls]):.2f})\n"
                 f"maps for {labels[cls]}, {len(starts)} segments stitched; dashed: top span"
                 + ("; hatched: no segment" if not covered.all() else ""))
        png = save_file_figure(out_dir / f"{stem}_{b}.png", base, maps, b, axes, title,
                               top={"time_s": top["time_s"], "bins": bins}, covered=covered)
        entry["pngs"][b] = str(png)
        entry["top"][b] = top
    return entry


def explain(cfg) -> dict:
    from datamodules.inference import FileSegmenter
    from datamodules.inputs import inputs_of
    from experiments.report_html import write_report
    from lightning_modules.callbacks.plots import FeatureAxes

    inputs = inputs_of(cfg.files)
    files = inputs.files
    if inputs.ignored:
        log(f"{inputs.ignored} non-audio files ignored")
    methods = [cfg.methods] if isinstance(cfg.methods, str) else [str(m) for m in cfg.methods]
    if len(cfg.get("checkpoints") or []) > 1:
        log(f"explain maps one model: the first of the {len(cfg.checkpoints)} checkpoints, "
            f"{cfg.checkpoint}")
    model = load_checkpoint_model(cfg).to(str(cfg.device))
    extra = dict(model.hparams.get("extra") or {})
    if "audio" not in extra or "features" not in extra:
        raise UserError(f"{cfg.checkpoint}: the checkpoint has no feature/audio parameters "
                        f"(hparams.extra.audio/features); train it with experiments.train")
    for b in model.branch_names:
        try:
            model.branch_last_conv(b)
        except ValueError as e:
            raise UserError(f"{cfg.checkpoint}: {e}; explain needs a CNN backbone") from None
    out_dir = Path(cfg.out).expanduser() if cfg.out else default_out(cfg.checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    segmenter = FileSegmenter(extra, device=str(cfg.device))
    axes = FeatureAxes.from_model(model)
    results, stems = list(inputs.errors), set()
    for e in inputs.errors:
        log(f"{e['file']}: error: {e['error']}")
    for i, f in enumerate(files):
        stem, k = Path(str(f)).stem, 1
        while stem in stems:  # two files of the same name in different folders
            stem, k = f"{Path(str(f)).stem}-{k + 1}", k + 1
        stems.add(stem)
        log(f"[{i + 1}/{len(files)}] {f}")
        try:
            r = explain_file(model, segmenter, f, out_dir, axes, methods, int(cfg.batch_size),
                             cfg.top_seconds, float(cfg.top_mass), png_stem=stem)
            log(f"  {r['genre']} (p={r['probabilities'][r['genre']]:.2f}); " + "; ".join(
                f"{b}: {t['time_s'][0]:.1f}-{t['time_s'][1]:.1f} s, "
                + (f"{t['freq_hz'][0]:.0f}-{t['freq_hz'][1]:.0f} Hz" if "freq_hz" in t
                   else " ".join(t["pitch_classes"])) for b, t in r["top"].items()))
        except AudioDecodeError as e:
            r = {"file": str(f), "error": e.reason}
            log(f"  error: {e.reason}")
        results.append(r)
    report = write_report(out_dir, results, str(cfg.checkpoint), methods)
    log(f"report: {report}")
    return {"explanations": results, "checkpoint": str(cfg.checkpoint), "out": str(out_dir),
            "report": str(report)}


def main(cfg) -> int:
    print_summary(explain(cfg))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``python -m experiments.explain`` with ``argv`` (default: the command line)."""
    return main_guard(main, argv=argv, composer=checkpoint_composer(DEFAULTS))


if __name__ == "__main__":
    sys.exit(cli())
