"""The built-in demo dataset (``data=synth``): 10 synthetic genre-like classes in GTZAN's layout.

``generate_synth(root)`` writes ``<root>/genres/<genre>/<genre>.<NNNNN>.wav`` (mono, 16-bit
PCM, 22,050 Hz, 30 s by default) for GTZAN's ten genre names, so the GTZAN indexer reads it
unchanged, plus ``<root>/README.md``, ``<root>/SYNTH_CLIPS.csv`` (the drawn parameters of
every clip) and, last, the marker ``<root>/SYNTH_COMPLETE.json``. The classes are designed
in :mod:`datamodules.synth_design` and rendered by :mod:`datamodules.synth_render`; every
clip depends only on its own arguments, so the files are byte-identical whatever the number
of worker processes.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import soundfile as sf

from datamodules.publish import build_once
from datamodules.synth_design import GENRES, clip_spec, describe_classes
from datamodules.synth_render import GENERATOR_VERSION, render_clip
from datamodules.worker_pool import worker_pool

__all__ = ["GENRES", "GENERATOR_VERSION", "MARKER", "generate_synth", "describe_classes",
           "clip_spec", "render_clip", "is_complete"]

MARKER = "SYNTH_COMPLETE.json"
CLIPS_TABLE = "SYNTH_CLIPS.csv"


def _params(clips_per_class, seed, sample_rate, seconds) -> dict:
    return {"clips_per_class": int(clips_per_class), "seed": int(seed),
            "sample_rate": int(sample_rate), "seconds": float(seconds),
            "version": GENERATOR_VERSION}


def _clip_paths(root: Path, params: dict) -> list[Path]:
    return [root / "genres" / g / f"{g}.{i:05d}.wav"
            for g in GENRES for i in range(params["clips_per_class"])]


def is_complete(root: str | os.PathLike, params: dict | None = None) -> bool:
    """True when ``root`` holds a finished dataset (with ``params``, if given): the marker
    is there, and every clip it lists exists and is not empty."""
    root = Path(root)
    try:
        data = json.loads((root / MARKER).read_text())
        stored = data["params"]
        if params is not None and stored != params:
            return False
        return all(p.is_file() and p.stat().st_size > 44 for p in _clip_paths(root, stored))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _job(args):
    out_dir, genre, index, seed, sample_rate, seconds = args
    pcm, spec = render_clip(genre, index, seed, sample_rate, seconds)
    path = Path(out_dir) / "genres" / genre / f"{spec['clip_id']}.wav"
    sf.write(str(path), pcm, int(sample_rate), subtype="PCM_16", format="WAV")
    row = {k: spec[k] for k in ("clip_id", "genre", "family", "mode", "key_name", "tempo_bpm",
                                "gain_db", "snr_db", "tuning_cents")}
    row["chords"] = len(spec["chords"])
    return row


def _readme(params: dict, n_clips: int) -> str:
    lines = [
        "# Synthetic genre dataset (`data=synth`)",
        "",
        "Written by `datamodules/synth.py` (generator " + GENERATOR_VERSION + ") in GTZAN's "
        "layout: `genres/<genre>/<genre>.<NNNNN>.wav`, mono 16-bit PCM.",
        f"{n_clips} clips: {params['clips_per_class']} per class, {params['seconds']:g} s at "
        f"{params['sample_rate']} Hz, seed {params['seed']}.",
        "",
        "Ten classes = 5 rhythm families (seen in the log-Mel spectrogram) x 2 harmonic "
        "modes (seen in the chroma). Key (all 12), tempo, gain (-12..-1 dBFS peak), noise "
        "(SNR 12..30 dB), tuning (+-15 cents), brightness, voicing and chord durations vary per "
        "clip, so neither input alone separates the ten classes: the point is to fuse them.",
        "",
        "| genre | family | mode | tempo (BPM) | rhythm | articulation |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for g, d in describe_classes().items():
        lines.append(f"| {g} | {d['family']} | {d['mode']} | {d['tempo_bpm'][0]}-"
                     f"{d['tempo_bpm'][1]} | {d['rhythm']} | {d['articulation']} |")
    lines += ["", "Harmony: a major-mode clip plays only major triads (I, IV, V), a minor-mode "
              "clip only minor triads (i, iv, v); each chord's tones are placed in random "
              "octaves between A2 and A5 with random doublings. `" + CLIPS_TABLE + "` lists "
              "every clip's drawn key, tempo, gain and SNR.", ""]
    return "\n".join(lines)


def _generate_into(tmp: Path, params: dict, workers: int, progress: bool) -> list[dict]:
    from tqdm import tqdm

    for g in GENRES:
        (tmp / "genres" / g).mkdir(parents=True, exist_ok=True)
    jobs = [(str(tmp), g, i, params["seed"], params["sample_rate"], params["seconds"])
            for g in GENRES for i in range(params["clips_per_class"])]
    rows = []
    bar = tqdm(total=len(jobs), desc="synth clips", unit="clip", file=sys.stderr, mininterval=1.0,
               disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for j in jobs:
                rows.append(_job(j))
                bar.update(1)
        else:
            with worker_pool(min(workers, len(jobs))) as pool:
                for row in pool.imap_unordered(_job, jobs, chunksize=2):
                    rows.append(row)
                    bar.update(1)
    finally:
        bar.close()
    rows.sort(key=lambda r: (GENRES.index(r["genre"]), r["clip_id"]))
    return rows


_OURS = {"genres", "README.md", MARKER, CLIPS_TABLE}


def _write_dataset(tmp: Path, root: Path, params: dict, workers: int, progress: bool) -> None:
    """Fill ``tmp`` with the whole dataset, the marker last; refuses (``FileExistsError``) to
    go on when the existing ``root`` holds anything this generator does not write."""
    if root.exists():
        if not root.is_dir():
            raise FileExistsError(f"{root} exists and is not a directory")
        foreign = sorted(p.name for p in root.iterdir() if p.name not in _OURS)
        if foreign:
            raise FileExistsError(
                f"{root} holds files the synthetic generator did not write ({foreign[:5]}); "
                "refusing to replace it: choose another data.root or remove them")
    rows = _generate_into(tmp, params, workers, progress)
    with open(tmp / CLIPS_TABLE, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    n_clips = len(rows)
    (tmp / "README.md").write_text(_readme(params, n_clips))
    marker = {"params": params, "generator": "datamodules.synth",
              "version": GENERATOR_VERSION, "clips": n_clips, "genres": list(GENRES),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def generate_synth(root: str | Path, clips_per_class: int = 30, seed: int = 0,
                   sample_rate: int = 22050, seconds: float = 30.0, workers: int = 2,
                   progress: bool = True) -> dict:
    """Writes the dataset under root if not already complete; returns a summary dict
    {"root", "clips", "generated": bool, "seconds_taken", "params"}.

    Generation happens in a temporary sibling directory that is renamed into place once the
    marker is written, under a file lock on ``<root>.lock`` (:func:`build_once`): a killed
    run never leaves a directory that looks complete, and a second process waits and then
    reuses the result. An existing ``root`` with other parameters, or without the marker, is
    replaced, but only if it holds nothing but what this generator writes (else
    ``FileExistsError``).
    """
    if clips_per_class < 1 or seconds <= 0 or sample_rate < 8000 or seed < 0:
        raise ValueError("need clips_per_class >= 1, seconds > 0, sample_rate >= 8000, seed >= 0")
    workers = int(workers) if workers is not None else (os.cpu_count() or 1)
    root = Path(root).expanduser().resolve()
    params = _params(clips_per_class, seed, sample_rate, seconds)
    t_start = time.perf_counter()
    outcome = build_once(root, lambda: is_complete(root, params),
                         lambda tmp: _write_dataset(tmp, root, params, workers, progress),
                         replace=True)
    return {"root": str(root), "clips": clips_per_class * len(GENRES),
            "generated": outcome.built, "seconds_taken": round(time.perf_counter() - t_start, 3),
            "params": params}
