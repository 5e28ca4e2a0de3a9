"""The built-in demo dataset (``data=synth``): 10 synthetic genre-like classes in GTZAN's layout.

``generate_synth(root)`` writes ``<root>/genres/<genre>/<genre>.<NNNNN>.wav`` (mono, 16-bit
PCM, 22,050 Hz, 30 s by default) for GTZAN's ten genre names, so the GTZAN indexer reads it
unchanged, plus ``<root>/README.md``, ``<root>/SYNTH_CLIPS.csv`` (the drawn parameters of
every clip) and, last, the marker ``<root>/SYNTH_COMPLETE.json``.

The classes are built so that *fusing* the two inputs of the project's models matters:

* 5 rhythm **families** (drum pattern, kit and density, tempo range, and the articulation of
  the chords: sustained, side-chain pumped, chugging 8ths, off-beat stabs, swung plucks),
  which the log-Mel spectrogram shows clearly;
* x 2 harmonic **modes**: every chord of a "major" clip is a major triad (I, IV, V of a
  major key), every chord of a "minor" clip a minor triad (i, iv, v of a minor key).

Key (all 12), tempo, gain, noise level, tuning and detuning, brightness (spectral roll-off
of the chord voices), voicing (random octave of every chord tone, random doublings, hence
inversions) and chord durations are drawn per clip. Major and minor triads contain exactly
the same intervals (a major third, a minor third and a fourth), differently stacked, and the
voices are spread over three octaves, so the log-Mel shows little of the mode; the 12-bin
chroma (octaves folded) shows it at once. What the chroma would show of the family is kept
out: chord changes do not follow the family's tempo, the articulation only scales the
amplitude of the chord (its pitch classes stay), the drums sit mostly outside the band where
the chords dominate the chroma, and the brightness range is the same for every family (upper
harmonics add the fifth and the major third of every note to the chroma). Neither input alone
separates all ten classes: the Mel gives the family, the chroma the mode.

Every clip is drawn from its own generator seeded by ``(seed, genre index, clip number)``:
the output is byte-identical whatever the number of worker processes.
"""
from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["GENRES", "GENERATOR_VERSION", "MARKER", "generate_synth", "describe_classes",
           "clip_spec", "render_clip", "is_complete"]

GENRES: tuple[str, ...] = ("blues", "classical", "country", "disco", "hiphop",
                           "jazz", "metal", "pop", "reggae", "rock")
# Bump whenever the audio a given set of parameters produces changes: a stored dataset with
# another version is regenerated.
GENERATOR_VERSION = "synth-1"
MARKER = "SYNTH_COMPLETE.json"
CLIPS_TABLE = "SYNTH_CLIPS.csv"

MODES = {"major": (0, 4, 7), "minor": (0, 3, 7)}  # triad intervals above the chord root
# Chord roots (semitones above the tonic), the same for both modes: I-IV-V / i-iv-v.
PROGRESSIONS = ((0, 5, 7, 0), (0, 7, 5, 0), (0, 5, 0, 7), (0, 0, 5, 7), (0, 7, 0, 5),
                (0, 5, 7, 7), (0, 5, 5, 7), (0, 7, 7, 5))
PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
VOICE_RANGE = (45, 81)  # MIDI notes of the chord voices (A2 .. A5), every family and mode
CHORD_SECONDS = (1.6, 3.4)  # chord durations, drawn independently of the family's tempo

FAMILIES: dict[str, dict] = {
    "chamber": {
        "tempo": (56, 84),
        "rhythm": "no drum kit: a soft low timpani-like thump on most downbeats",
        "articulation": "sustained pads, slow attack (0.25-0.6 s), vibrato",
    },
    "dance": {
        "tempo": (108, 132),
        "rhythm": "four-on-the-floor kick, open hi-hat on every off-beat, clap on 2 and 4, "
                  "optional 16th hats",
        "articulation": "pads ducked by every kick (side-chain pumping)",
    },
    "rock": {
        "tempo": (96, 150),
        "rhythm": "back-beat: kick on 1 and 3 (+ syncopations), snare on 2 and 4, closed 8th "
                  "hats, crash every 4 bars",
        "articulation": "chords re-struck on every 8th and decaying to a floor (chugging)",
    },
    "halftime": {
        "tempo": (64, 96),
        "rhythm": "half-time: kick on 1 (+ syncopated kicks), snare only on 3, busy 16th hats",
        "articulation": "quiet pad under plucked off-beat chord stabs (skank)",
    },
    "shuffle": {
        "tempo": (84, 120),
        "rhythm": "triplet shuffle: ride on swung 8ths, kick on 1 and 3, light snare on 2 and 4",
        "articulation": "quiet pad under plucked chords on swung 8ths",
    },
}

# genre -> (family, mode). Pairs share a family and differ only in the mode.
CLASSES: dict[str, tuple[str, str]] = {
    "blues": ("shuffle", "minor"),
    "classical": ("chamber", "major"),
    "country": ("shuffle", "major"),
    "disco": ("dance", "major"),
    "hiphop": ("halftime", "minor"),
    "jazz": ("chamber", "minor"),
    "metal": ("rock", "minor"),
    "pop": ("dance", "minor"),
    "reggae": ("halftime", "major"),
    "rock": ("rock", "major"),
}

_TABLE = 4096  # wavetable length (a power of two: indices wrap with a bit mask)
# Harmonic k of every chord voice has amplitude k**-p, p drawn per clip from this range, the
# same for every family and mode: a family-specific brightness would show in the chroma
# (upper harmonics add the fifth and the major third of every note to it).
TIMBRE_POWER = (1.0, 2.6)
DRUM_LEVEL = 0.3  # drum RMS relative to the harmonic part (before the per-clip jitter)
PLUCK_ATTACK = 0.01  # s; short, but without a broadband click that would flatten the chroma

# Per family, how the chord signal is articulated (an amplitude envelope on the chord voices,
# so the pitch content, hence the chroma, stays that of the chord):
#   sustain: plain pads (slow attack, vibrato); pump: ducked by every kick (side-chain);
#   chug: re-struck on every 8th, decaying to a floor; stab: a quiet pad plus plucked stabs.
_ARTICULATION = {
    "chamber": dict(kind="sustain", attack=(0.25, 0.6), vibrato=12.0),
    "dance": dict(kind="pump", attack=(0.02, 0.08), depth=(0.35, 0.55), tau=(0.12, 0.2)),
    "rock": dict(kind="chug", attack=(0.005, 0.02), floor=(0.4, 0.5), tau=(0.08, 0.16)),
    "halftime": dict(kind="stab", attack=(0.05, 0.15), pad=0.8, level=0.9, tau=(0.08, 0.16)),
    "shuffle": dict(kind="stab", attack=(0.05, 0.15), pad=0.65, level=0.9, tau=(0.10, 0.2)),
}


def describe_classes() -> dict[str, dict]:
    """genre -> {"family", "mode", "tempo_bpm", "rhythm", "articulation", "harmony", "text"}."""
    out = {}
    for g in GENRES:
        fam, mode = CLASSES[g]
        f = FAMILIES[fam]
        harmony = (f"{mode} triads only (I-IV-V progressions of a {mode} key), random key, "
                   f"random voicing over A2-A5")
        out[g] = {
            "family": fam,
            "mode": mode,
            "tempo_bpm": list(f["tempo"]),
            "rhythm": f["rhythm"],
            "articulation": f["articulation"],
            "harmony": harmony,
            "text": f"{fam} family ({f['rhythm']}; {f['articulation']}), {mode} mode",
        }
    return out


# --------------------------------------------------------------------------- parameters
def _clip_rngs(seed: int, genre: str, index: int):
    ss = np.random.SeedSequence([int(seed), GENRES.index(genre), int(index), 0x5D7])
    spec_ss, render_ss = ss.spawn(2)
    return np.random.default_rng(spec_ss), np.random.default_rng(render_ss)


def clip_spec(genre: str, index: int, seed: int = 0, seconds: float = 30.0) -> dict:
    """The high-level parameters drawn for one clip (key, tempo, gain, ...). Pure function."""
    if genre not in CLASSES:
        raise ValueError(f"unknown genre {genre!r}; expected one of {GENRES}")
    fam, mode = CLASSES[genre]
    rng, _ = _clip_rngs(seed, genre, index)
    lo, hi = FAMILIES[fam]["tempo"]
    tempo = float(rng.uniform(lo, hi))
    beat = 60.0 / tempo
    offset = float(rng.uniform(0.0, beat))  # where the first beat falls
    key = int(rng.integers(12))
    prog = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    # Chords change on beats, after durations drawn in seconds (so independent of the family);
    # the clip opens in the middle of a random chord of the progression.
    chords, t, edge, i = [], 0.0, offset, int(rng.integers(len(prog)))
    while t < seconds:
        edge += max(2, int(round(rng.uniform(*CHORD_SECONDS) / beat))) * beat
        root = (key + prog[i % len(prog)]) % 12
        chords.append((round(t, 6), round(min(edge, seconds), 6), root))
        t, i = edge, i + 1
    return {
        "clip_id": f"{genre}.{index:05d}",
        "genre": genre,
        "family": fam,
        "mode": mode,
        "key": key,
        "key_name": PITCH_NAMES[key] + ("" if mode == "major" else "m"),
        "tempo_bpm": round(tempo, 3),
        "offset_s": offset,
        "progression": list(prog),
        "chords": chords,
        "tuning_cents": float(rng.uniform(-15, 15)),
        "gain_db": float(rng.uniform(-12.0, -1.0)),  # peak level of the written clip
        "snr_db": float(rng.uniform(12.0, 30.0)),
        "drums_db": float(rng.uniform(-4.0, 2.0)),  # drum level relative to the default mix
        "timbre_power": float(rng.uniform(*TIMBRE_POWER)),  # harmonic k has amplitude k**-p
    }


# --------------------------------------------------------------------------- synthesis
def _wavetable(n_harm: int, power: float) -> np.ndarray:
    """One period of a harmonic tone, amplitudes k**-power (zero phase), peak-normalised."""
    spec = np.zeros(_TABLE // 2 + 1, dtype=np.complex128)
    k = np.arange(1, n_harm + 1)
    amp = k.astype(np.float64) ** -power
    spec[1:n_harm + 1] = amp * -1j  # sines
    tab = np.fft.irfft(spec, n=_TABLE)
    return (tab / np.abs(tab).max()).astype(np.float32)


def _midi_hz(m):
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def _chord_notes(rng, pcs: list[int]) -> np.ndarray:
    n = int(rng.integers(4, 7))
    chosen = list(pcs) + [pcs[int(j)] for j in rng.integers(0, 3, size=n - 3)]
    lo, hi = VOICE_RANGE
    notes = []
    for pc in chosen:
        cands = [m for m in range(lo, hi + 1) if m % 12 == pc]
        notes.append(cands[int(rng.integers(len(cands)))])
    return np.array(notes, dtype=np.float64)


def _band_noise(rng, n: int, sr: int, lo: float, hi: float, slope: float = 0.0) -> np.ndarray:
    """White noise band-limited to [lo, hi] Hz (soft edges) by FFT shaping, unit peak."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    w = 1.0 / (1.0 + (lo / np.maximum(f, 1.0)) ** 4) / (1.0 + (f / hi) ** 4)
    if slope:
        w *= (np.maximum(f, 20.0) / 1000.0) ** slope
    x = np.fft.irfft(spec * w, n=n)
    return x / (np.abs(x).max() + 1e-12)


def _decay(n: int, sr: int, tau: float, attack: float = 0.001) -> np.ndarray:
    t = np.arange(n) / sr
    return np.exp(-t / tau) * np.minimum(1.0, t / attack)


def _drum_kit(rng, sr: int) -> dict[str, np.ndarray]:
    """One clip's drum sounds (parameters drawn per clip). Their energy is kept out of the
    band where the chord voices dominate the chroma (about 100 Hz - 2 kHz): a low kick, snare
    and clap noise above 1.8 kHz, hats and ride above 3.5 kHz."""
    kit = {}
    n = int(0.45 * sr)
    t = np.arange(n) / sr
    f1, f0 = rng.uniform(60, 90), rng.uniform(35, 45)
    freq = f0 + (f1 - f0) * np.exp(-t / rng.uniform(0.025, 0.05))
    kick = np.sin(2 * np.pi * np.cumsum(freq) / sr) * _decay(n, sr, rng.uniform(0.12, 0.25))
    kick += 0.25 * _band_noise(rng, n, sr, 1500, 6000) * _decay(n, sr, 0.004)
    kit["kick"] = 0.3 * kick
    n = int(0.35 * sr)
    snare = _band_noise(rng, n, sr, rng.uniform(2000, 3000), rng.uniform(6000, 9000)) \
        * _decay(n, sr, rng.uniform(0.06, 0.12))
    snare += 0.1 * np.sin(2 * np.pi * rng.uniform(170, 240) * np.arange(n) / sr) \
        * _decay(n, sr, 0.05)
    kit["snare"] = snare
    n = int(0.3 * sr)
    clap = np.zeros(n)
    for d in (0.0, 0.011, 0.022):
        s = int(d * sr)
        tau = 0.012 if d < 0.02 else 0.09
        clap[s:] += _band_noise(rng, n - s, sr, 1800, 5000) * _decay(n - s, sr, tau)
    kit["clap"] = clap / np.abs(clap).max()
    hp = rng.uniform(5500, 8000)
    n = int(0.12 * sr)
    kit["hat"] = _band_noise(rng, n, sr, hp, 10500) * _decay(n, sr, rng.uniform(0.015, 0.035))
    n = int(0.5 * sr)
    kit["open_hat"] = _band_noise(rng, n, sr, hp, 10500) * _decay(n, sr, rng.uniform(0.12, 0.22))
    n = int(0.9 * sr)
    kit["ride"] = _band_noise(rng, n, sr, rng.uniform(3500, 5000), 10500) \
        * _decay(n, sr, rng.uniform(0.25, 0.4))
    n = int(1.6 * sr)
    kit["crash"] = _band_noise(rng, n, sr, 2500, 10500) * _decay(n, sr, 0.6)
    n = int(1.0 * sr)
    t = np.arange(n) / sr
    f = rng.uniform(45, 65) * (1 + 0.08 * np.exp(-t / 0.08))
    body = np.sin(2 * np.pi * np.cumsum(f) / sr) * _decay(n, sr, rng.uniform(0.3, 0.5), 0.01)
    kit["thump"] = body + 0.15 * _band_noise(rng, n, sr, 200, 2000) * _decay(n, sr, 0.05)
    return kit


def _pattern(rng, family: str, tempo: float, offset: float, seconds: float):
    """Drum hits [(name, time_s, velocity)] and the accents of the harmonic part (the times
    its articulation envelope is re-triggered)."""
    beat = 60.0 / tempo
    hits, accents = [], []
    bar_len = 4 * beat
    n_bars = int(math.ceil((seconds - offset) / bar_len)) + 1
    start = offset - bar_len  # a bar before the first downbeat so the clip opens mid-groove

    def add(name, t, v, jitter=0.006):
        hits.append((name, t + rng.normal(0, jitter), v * rng.uniform(0.8, 1.0)))

    if family == "chamber":
        p = rng.uniform(0.5, 0.9)
        for b in range(n_bars + 1):
            t0 = start + b * bar_len
            if rng.random() < p:
                add("thump", t0, 0.5)
        return hits, accents
    extra_kick = rng.random() < 0.6
    sixteenth_hats = rng.random() < 0.5
    for b in range(n_bars + 1):
        t0 = start + b * bar_len
        for q in range(4):
            tq = t0 + q * beat
            if family == "dance":
                add("kick", tq, 1.0)
                accents.append(tq)  # side-chain: the pads duck under every kick
                add("open_hat", tq + beat / 2, 0.5)
                if q in (1, 3):
                    add("clap", tq, 0.8)
                if sixteenth_hats:
                    for s in (1, 3):
                        add("hat", tq + s * beat / 4, 0.25)
            elif family == "rock":
                if q in (0, 2):
                    add("kick", tq, 1.0)
                if q == 2 and extra_kick:
                    add("kick", tq + beat / 2, 0.8)
                if q in (1, 3):
                    add("snare", tq, 0.9)
                add("hat", tq, 0.45)
                add("hat", tq + beat / 2, 0.35)
                if q == 0 and b % 4 == 0:
                    add("crash", tq, 0.4)
                accents += [tq, tq + beat / 2]
            elif family == "halftime":
                if q == 0:
                    add("kick", tq, 1.0)
                if q == 1 and extra_kick:
                    add("kick", tq + beat / 2, 0.8)
                if q == 2:
                    add("snare", tq, 1.0)
                for s in range(4):
                    add("hat", tq + s * beat / 4, 0.4 if s % 2 == 0 else 0.22)
                accents.append(tq + beat / 2)
            elif family == "shuffle":
                sw = beat * 2 / 3  # swung 8th: the third triplet
                if q in (0, 2):
                    add("kick", tq, 0.9)
                if q in (1, 3):
                    add("snare", tq, 0.55)
                add("ride", tq, 0.45)
                add("ride", tq + sw, 0.3)
                accents += [tq, tq + sw]
            else:  # pragma: no cover
                raise ValueError(family)
    return hits, accents


def _place(out: np.ndarray, sample: np.ndarray, t: float, v: float, sr: int) -> None:
    s = int(round(t * sr))
    a, b = max(s, 0), min(s + len(sample), len(out))
    if b > a:
        out[a:b] += v * sample[a - s:b - s]


def render_clip(genre: str, index: int, seed: int = 0, sample_rate: int = 22050,
                seconds: float = 30.0) -> tuple[np.ndarray, dict]:
    """Synthesize one clip: (int16 samples, its spec). Deterministic in its arguments."""
    spec = clip_spec(genre, index, seed, seconds)
    _, rng = _clip_rngs(seed, genre, index)
    sr = int(sample_rate)
    n = int(round(seconds * sr))
    fam = spec["family"]
    art = _ARTICULATION[fam]
    triad = MODES[spec["mode"]]
    nyq = 0.45 * sr

    # --- chords: every voice read from a wavetable of the clip's timbre
    attack = rng.uniform(*art["attack"])
    release = max(0.12, attack)  # cross-fade: no dip (hence no flat chroma) between chords
    vib = art.get("vibrato", 0.0)
    vib_rate = rng.uniform(4.5, 6.0)
    tuning = 2.0 ** (spec["tuning_cents"] / 1200.0)
    tables: dict[int, np.ndarray] = {}
    harm = np.zeros(n, dtype=np.float32)
    for (t0, t1, root) in spec["chords"]:
        notes = _chord_notes(rng, [(root + iv) % 12 for iv in triad])
        a = int(round(t0 * sr))
        if a >= n:
            break
        b = min(n, int(round((t1 + release) * sr)))
        L = b - a
        tt = np.arange(L, dtype=np.float64) / sr
        env = np.minimum(1.0, (tt + 1e-9) / attack)
        rel = tt > (t1 - t0)
        env[rel] *= np.cos(np.clip((tt[rel] - (t1 - t0)) / release, 0, 1) * np.pi / 2) ** 2
        chord = np.zeros(L, dtype=np.float32)
        ph = np.empty(L, dtype=np.float64)
        if vib:  # integral of the relative frequency deviation sin(2 pi v t)
            vib_shape = (1 - np.cos(2 * np.pi * vib_rate * (tt + t0))) / (2 * np.pi * vib_rate)
        for note in notes:
            f0 = float(_midi_hz(note)) * tuning * 2.0 ** (rng.normal(0, 6) / 1200.0)
            n_harm = int(max(1, min(40, nyq // f0)))
            if n_harm not in tables:
                tables[n_harm] = _wavetable(n_harm, spec["timbre_power"])
            # phase in table samples; the integer index wraps with a bit mask
            np.multiply(tt, f0 * _TABLE, out=ph)
            ph += rng.random() * _TABLE
            if vib:
                ph += (f0 * _TABLE * vib / 1200.0 * math.log(2)) * vib_shape
            idx = ph.astype(np.int64)
            idx &= _TABLE - 1
            chord += np.float32(rng.uniform(0.6, 1.0)) * tables[n_harm][idx]
        harm[a:b] += env.astype(np.float32) * chord

    # --- rhythm: drum hits, and the family's articulation of the chords
    hits, accents = _pattern(rng, fam, spec["tempo_bpm"], spec["offset_s"], seconds)
    if art["kind"] != "sustain":
        tau = rng.uniform(*art["tau"])
        train = np.zeros(n)
        dec = _decay(int(5 * tau * sr), sr, tau, attack=PLUCK_ATTACK)
        for t in accents:
            _place(train, dec, t, rng.uniform(0.85, 1.0), sr)
        train = np.minimum(train, 1.0)
        if art["kind"] == "pump":
            mod = 1.0 - rng.uniform(*art["depth"]) * train
        elif art["kind"] == "chug":
            floor = rng.uniform(*art["floor"])
            mod = floor + (1.0 - floor) * train
        else:  # stab
            mod = art["pad"] + art["level"] * train
        harm *= mod.astype(np.float32)
    kit = _drum_kit(rng, sr)
    drums = np.zeros(n, dtype=np.float64)
    for name, t, v in hits:
        _place(drums, kit[name], t, v, sr)

    # --- mix: drums at a jittered level under the chords, white noise at the drawn SNR
    harm64 = harm.astype(np.float64)
    harm_rms = float(np.sqrt(np.mean(harm64 ** 2))) + 1e-9
    drum_rms = float(np.sqrt(np.mean(drums ** 2)))
    drum_gain = 0.0
    if drum_rms > 1e-9:
        drum_gain = DRUM_LEVEL * harm_rms / drum_rms * 10 ** (spec["drums_db"] / 20)
        if fam == "chamber":
            drum_gain *= 0.5
    mix = harm64 + drum_gain * drums
    sig_rms = float(np.sqrt(np.mean(mix ** 2))) + 1e-9
    noise = rng.standard_normal(n)
    mix += noise * (sig_rms * 10 ** (-spec["snr_db"] / 20) / float(np.sqrt(np.mean(noise ** 2))))
    # 10-ms fades, then peak-normalise to the drawn gain (always below 0 dBFS)
    fade = min(int(0.01 * sr), n // 4)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade)
        mix[:fade] *= ramp
        mix[-fade:] *= ramp[::-1]
    mix *= 10 ** (spec["gain_db"] / 20) / float(np.abs(mix).max())
    pcm = np.clip(np.round(mix * 32767.0), -32767, 32767).astype(np.int16)
    return pcm, spec


# --------------------------------------------------------------------------- dataset files
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
            # spawn: safe whatever threads the caller (torch, W&B) has started
            ctx = mp.get_context("spawn")
            with ctx.Pool(min(workers, len(jobs))) as pool:
                for row in pool.imap_unordered(_job, jobs, chunksize=2):
                    rows.append(row)
                    bar.update(1)
    finally:
        bar.close()
    rows.sort(key=lambda r: (GENRES.index(r["genre"]), r["clip_id"]))
    return rows


_OURS = {"genres", "README.md", MARKER, CLIPS_TABLE}


def generate_synth(root: str | Path, clips_per_class: int = 30, seed: int = 0,
                   sample_rate: int = 22050, seconds: float = 30.0, workers: int = 2,
                   progress: bool = True) -> dict:
    """Writes the dataset under root if not already complete; returns a summary dict
    {"root", "clips", "generated": bool, "seconds_taken", "params"}.

    Generation happens in a temporary sibling directory that is renamed into place once the
    marker is written, under a file lock on ``<root>.lock``: a killed run never leaves a
    directory that looks complete, and a second process waits and then reuses the result.
    An existing ``root`` with other parameters, or without the marker, is replaced, but only
    if it holds nothing but what this generator writes (else ``FileExistsError``).
    """
    from filelock import FileLock

    if clips_per_class < 1 or seconds <= 0 or sample_rate < 8000 or seed < 0:
        raise ValueError("need clips_per_class >= 1, seconds > 0, sample_rate >= 8000, seed >= 0")
    workers = int(workers) if workers is not None else (os.cpu_count() or 1)
    root = Path(root).expanduser().resolve()
    params = _params(clips_per_class, seed, sample_rate, seconds)
    n_clips = clips_per_class * len(GENRES)
    t_start = time.perf_counter()

    def summary(generated):
        return {"root": str(root), "clips": n_clips, "generated": generated,
                "seconds_taken": round(time.perf_counter() - t_start, 3), "params": params}

    if is_complete(root, params):
        return summary(False)
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if is_complete(root, params):  # another process finished it while we waited
            return summary(False)
        if root.exists():
            if not root.is_dir():
                raise FileExistsError(f"{root} exists and is not a directory")
            foreign = sorted(p.name for p in root.iterdir() if p.name not in _OURS)
            if foreign:
                raise FileExistsError(
                    f"{root} holds files the synthetic generator did not write ({foreign[:5]}); "
                    "refusing to replace it: choose another data.root or remove them")
        # leftovers of killed runs (we hold the lock, so nobody else is writing them)
        for stale in root.parent.glob(f".{root.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in root.parent.glob(f".{root.name}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            rows = _generate_into(tmp, params, workers, progress)
            with open(tmp / CLIPS_TABLE, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            (tmp / "README.md").write_text(_readme(params, n_clips))
            marker = {"params": params, "generator": "datamodules.synth",
                      "version": GENERATOR_VERSION, "clips": n_clips, "genres": list(GENRES),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            old = None
            if root.exists():
                old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(root, old)
            os.replace(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return summary(True)
