"""A test of the mechanism (``data=synth_sync``): two classes that differ only in *when*
the chords change relative to the beat.

Every clip is a triad (major or minor, random root) of three pure tones, one per pitch
class, each in one of three octaves (C4-B6). The beat period is 1.0 or 1.5 s (drawn per
clip; both divide the 3-s windows, so every window holds the same number of beats and
chord changes), and every beat is split into four ticks. At every tick all three tones
jump to another octave (a 20-ms equal-power crossfade); once per beat the triad also
changes (a new root and quality, at most one pitch class shared with the last):

* ``on_beat``: the chord changes on the beat's tick;
* ``anticipated``: the chord changes one tick before the beat.

The beat is a loudness accent: the signal (noise included) is +8..12 dB louder for the
half tick either side of the beat's tick, with 60-ms raised-cosine ramps that lie midway
between ticks, so that no STFT frame holding a crossfade sees the gain change.

What each input shows, and what it does not:

* the 12-bin chroma (each frame divided by its maximum) shows which pitch classes sound,
  hence the chord changes, and not the accents (a gain on the whole signal);
* the log-Mel shows the accents and a jump of every tone at every tick, alike whether the
  pitch classes changed or only the octaves; telling a chord change from an octave jump
  needs the octave-folded pitch of three tones at semitone precision (each tick is also
  detuned at random by up to 25 cents), which 32 Mel bands at 1.7-6 semitones each do not
  give;
* so neither input alone tells the classes apart; and neither does a model that pools each
  branch over time before joining (late fusion): every window holds the same number of
  accents and chord changes in both classes, and only their relative phase differs. A join
  at a middle layer that keeps time aligned sees whether the chroma changes inside the
  accent.

Layout: ``<root>/clips/<class>/<class>.<NNNNN>.wav`` (mono 16-bit PCM), ``SYNC_CLIPS.csv``
(every clip's drawn parameters), ``README.md`` and, last, ``SYNC_COMPLETE.json``. Each clip
depends only on ``(seed, class, index)``.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from .index import ClipIndex
from .publish import build_once
from .splits import assign_random_or_kfold
from .worker_pool import worker_pool

CLASSES = ("on_beat", "anticipated")
GENERATOR_VERSION = "synth_sync-6"
MARKER = "SYNC_COMPLETE.json"
CLIPS_TABLE = "SYNC_CLIPS.csv"
BEAT_S = (1.0, 1.5)
TICKS_PER_BEAT = 4
CHANGE_TICK = {"on_beat": 0, "anticipated": TICKS_PER_BEAT - 1}  # tick index within a beat
MIDI_RANGE = (60, 96)      # C4 .. B6: every pitch class in three octaves
TRIADS = ((0, 4, 7), (0, 3, 7))  # major, minor
CROSSFADE_S = 0.02
RAMP_S = 0.06
TICK_DETUNE_CENTS = 25.0
TONE_JITTER_DB = 3.0


def sync_spec(label: str, index: int, seed: int = 0) -> dict:
    """The parameters drawn for one clip (pure function of its arguments)."""
    if label not in CLASSES:
        raise ValueError(f"unknown synth_sync class {label!r}; expected one of {CLASSES}")
    ss = np.random.SeedSequence([int(seed), CLASSES.index(label), int(index), 0x5C]).spawn(2)
    rng = np.random.default_rng(ss[0])
    beat = float(rng.choice(BEAT_S))
    return {
        "clip_id": f"{label}.{index:05d}",
        "label": label,
        "beat_s": beat,
        "phase_s": round(float(rng.uniform(0.0, beat)), 6),  # the first beat's time
        "change_tick": CHANGE_TICK[label],
        "accent_db": round(float(rng.uniform(8.0, 12.0)), 3),
        "tuning_cents": round(float(rng.uniform(-15.0, 15.0)), 3),
        "snr_db": round(float(rng.uniform(25.0, 35.0)), 3),
        "gain_db": round(float(rng.uniform(-12.0, -1.0)), 3),
        "render_seed": ss[1],
    }


def tick_times(spec: dict, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """(times, index within the beat) of every tick from before 0 to after ``seconds``."""
    tick = spec["beat_s"] / TICKS_PER_BEAT
    k = np.arange(int(np.floor(-spec["phase_s"] / tick)) - 2,
                  int(np.ceil((seconds - spec["phase_s"]) / tick)) + 3)
    return spec["phase_s"] + k * tick, k % TICKS_PER_BEAT


def _octave_jump(rng, midi: np.ndarray) -> np.ndarray:
    """Every tone to another octave of its pitch class, inside MIDI_RANGE."""
    out = midi.copy()
    for i, m in enumerate(midi):
        choices = [n for n in range(MIDI_RANGE[0], MIDI_RANGE[1]) if n % 12 == m % 12 and n != m]
        out[i] = rng.choice(choices)
    return out


def _chord_change(rng, midi: np.ndarray) -> np.ndarray:
    """A new triad (at most one pitch class shared) whose tones lie at least 3 semitones
    from every old tone, as every tone of an octave jump does."""
    old = set(int(m) % 12 for m in midi)
    for _ in range(1000):
        root, quality = int(rng.integers(12)), int(rng.integers(2))
        pcs = [(root + d) % 12 for d in TRIADS[quality]]
        if len(old & set(pcs)) > 1:
            continue
        new = np.array([rng.choice([n for n in range(*MIDI_RANGE) if n % 12 == p])
                        for p in pcs])
        if np.abs(new[:, None] - midi[None, :]).min() >= 3:
            return new
    raise RuntimeError("no chord change found")  # pragma: no cover - never in practice


def render_sync(label: str, index: int, seed: int = 0, sample_rate: int = 22050,
                seconds: float = 30.0, spec: dict | None = None) -> tuple[np.ndarray, dict]:
    """(int16 samples, spec) of one clip; ``spec`` replaces the drawn parameters (tests)."""
    spec = sync_spec(label, index, seed) if spec is None else spec
    rng = np.random.default_rng(spec["render_seed"])
    sr, n = int(sample_rate), int(round(seconds * sample_rate))
    t = np.arange(n) / sr
    ticks, within = tick_times(spec, seconds)
    midi = _chord_change(rng, np.array([0, 0, 0]))
    harmonic = np.zeros(n)
    half = CROSSFADE_S / 2
    for j in range(ticks.size - 1):
        if j > 0:
            midi = (_chord_change(rng, midi) if within[j] == spec["change_tick"]
                    else _octave_jump(rng, midi))
        lo = max(0, int(np.floor((ticks[j] - half) * sr)))
        hi = min(n, int(np.ceil((ticks[j + 1] + half) * sr)) + 1)
        if hi <= lo:
            continue
        ts = t[lo:hi]
        fade_in = np.sin(0.5 * np.pi * np.clip((ts - ticks[j]) / CROSSFADE_S + 0.5, 0, 1))
        fade_out = np.cos(0.5 * np.pi * np.clip((ts - ticks[j + 1]) / CROSSFADE_S + 0.5, 0, 1))
        cents = spec["tuning_cents"] + rng.uniform(-TICK_DETUNE_CENTS, TICK_DETUNE_CENTS)
        seg = np.zeros(ts.size)
        for m in midi:
            f = 440.0 * 2.0 ** ((m - 69) / 12 + cents / 1200)
            level = 10 ** (rng.uniform(-TONE_JITTER_DB, TONE_JITTER_DB) / 20)
            seg += level * np.sin(2 * np.pi * f * ts + rng.uniform(0, 2 * np.pi))
        harmonic[lo:hi] += fade_in * fade_out * seg
    rms = float(np.sqrt(np.mean(harmonic ** 2))) + 1e-12
    noise = rng.standard_normal(n) * rms * 10 ** (-spec["snr_db"] / 20)
    # The accent: up over a ramp centred half a tick before the beat, down over one centred
    # half a tick after it (midway between ticks, where no crossfade sounds).
    tick = spec["beat_s"] / TICKS_PER_BEAT
    level = np.zeros(n)
    for b in ticks[within == 0]:
        up = np.clip((t - (b - tick / 2)) / RAMP_S + 0.5, 0, 1)
        down = np.clip((t - (b + tick / 2)) / RAMP_S + 0.5, 0, 1)
        level += 0.5 * (np.cos(np.pi * down) - np.cos(np.pi * up))
    gain = 10 ** (spec["accent_db"] * np.clip(level, 0.0, 1.0) / 20)
    x = gain * (harmonic + noise)
    x *= 10 ** (spec["gain_db"] / 20) / (np.abs(x).max() + 1e-12)
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
    return pcm, spec


def _params(clips_per_class, seed, sample_rate, seconds) -> dict:
    return {"clips_per_class": int(clips_per_class), "seed": int(seed),
            "sample_rate": int(sample_rate), "seconds": float(seconds),
            "version": GENERATOR_VERSION}


def _paths(root: Path, params: dict) -> list[Path]:
    return [root / "clips" / c / f"{c}.{i:05d}.wav"
            for c in CLASSES for i in range(params["clips_per_class"])]


def _complete(root: Path, params: dict) -> bool:
    try:
        if json.loads((root / MARKER).read_text())["params"] != params:
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(p.is_file() and p.stat().st_size > 44 for p in _paths(root, params))


def _job(args):
    out_dir, label, index, params = args
    pcm, spec = render_sync(label, index, params["seed"], params["sample_rate"],
                            params["seconds"])
    sf.write(str(Path(out_dir) / "clips" / label / f"{spec['clip_id']}.wav"), pcm,
             params["sample_rate"], subtype="PCM_16", format="WAV")
    return {k: v for k, v in spec.items() if k != "render_seed"}


def _write(tmp: Path, root: Path, params: dict, workers: int) -> None:
    if root.exists():
        foreign = sorted(p.name for p in root.iterdir()
                         if p.name not in {"clips", "README.md", MARKER, CLIPS_TABLE})
        if foreign:
            raise FileExistsError(
                f"{root} holds files the synth_sync generator did not write ({foreign[:5]}); "
                "refusing to replace it: choose another data.root or remove them")
    for c in CLASSES:
        (tmp / "clips" / c).mkdir(parents=True, exist_ok=True)
    jobs = [(str(tmp), c, i, params) for c in CLASSES for i in range(params["clips_per_class"])]
    if workers <= 1:
        rows = [_job(j) for j in jobs]
    else:
        with worker_pool(min(workers, len(jobs))) as pool:
            rows = list(pool.imap(_job, jobs, chunksize=2))
    with open(tmp / CLIPS_TABLE, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (tmp / "README.md").write_text(
        f"# `data=synth_sync` ({GENERATOR_VERSION})\n\n{len(rows)} clips, "
        f"{params['clips_per_class']} per class ({', '.join(CLASSES)}), {params['seconds']:g} s "
        f"at {params['sample_rate']} Hz, seed {params['seed']}. Written by "
        "`datamodules/synth_sync.py`, whose docstring describes the design; "
        f"`{CLIPS_TABLE}` lists every clip's drawn parameters.\n")
    (tmp / MARKER).write_text(json.dumps({"params": params, "clips": len(rows),
                                          "classes": list(CLASSES),
                                          "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                                         indent=2) + "\n")


def generate_sync(root, clips_per_class: int = 60, seed: int = 0, sample_rate: int = 22050,
                  seconds: float = 30.0, workers: int = 2) -> bool:
    """Write the dataset under ``root`` unless it is already complete with these parameters
    (under a lock, published by an atomic rename: :func:`datamodules.publish.build_once`).
    Returns whether it was generated now."""
    if clips_per_class < 2 or seconds < 2 * max(BEAT_S):
        raise ValueError(f"synth_sync needs clips_per_class >= 2 and seconds >= "
                         f"{2 * max(BEAT_S):g}")
    if sample_rate < 16000:
        raise ValueError(f"synth_sync: sample_rate {sample_rate} is too low for its tones "
                         f"(up to 2 kHz, with headroom for the chroma's STFT); use >= 16000")
    root = Path(root).expanduser().resolve()
    params = _params(clips_per_class, seed, sample_rate, seconds)
    outcome = build_once(root, lambda: _complete(root, params),
                         lambda tmp: _write(tmp, root, params, int(workers)), replace=True)
    return bool(outcome.built)


def index_synth_sync(data_cfg, dataset: str = "synth_sync") -> ClipIndex:
    """Generate the set once under ``data.root`` (``data.synth_sync.*``), then index it and
    assign ``data.split`` (``random`` or ``kfold``)."""
    s = data_cfg.get("synth_sync", {}) or {}
    n = int(s.get("clips_per_class", 60))
    built = generate_sync(data_cfg["root"], clips_per_class=n, seed=int(s.get("seed", 0)),
                          sample_rate=int(data_cfg["sample_rate"]),
                          seconds=float(data_cfg["clip_seconds"]),
                          workers=int(s.get("workers", 2)))
    root = Path(data_cfg["root"]).expanduser().resolve()
    rows = [{"clip_id": f"{c}.{i:05d}", "path": str(root / "clips" / c / f"{c}.{i:05d}.wav"),
             "label": k, "genre": c, "split": "", "artist": ""}
            for k, c in enumerate(CLASSES) for i in range(n)]
    table = pd.DataFrame(rows)
    split = data_cfg.get("split", "random")
    table["split"] = assign_random_or_kfold(table, data_cfg, dataset, split)
    return ClipIndex(dataset=dataset, labels=list(CLASSES), table=table,
                     info={"root": str(root), "split": split, "generated": built,
                           "version": GENERATOR_VERSION})
