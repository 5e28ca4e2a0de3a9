"""The design of the synthetic demo classes, and the parameters drawn for every clip.

Ten genre-like classes under GTZAN's genre names, built so that *fusing* the two inputs of
the project's models matters:

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

import numpy as np

from datamodules.features import PITCH_CLASSES
from datamodules.gtzan import GENRES  # the synthetic set borrows GTZAN's ten class names

MODES = {"major": (0, 4, 7), "minor": (0, 3, 7)}  # triad intervals above the chord root
# Chord roots (semitones above the tonic), the same for both modes: I-IV-V / i-iv-v.
PROGRESSIONS = ((0, 5, 7, 0), (0, 7, 5, 0), (0, 5, 0, 7), (0, 0, 5, 7), (0, 7, 0, 5),
                (0, 5, 7, 7), (0, 5, 5, 7), (0, 7, 7, 5))
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

# Harmonic k of every chord voice has amplitude k**-p, p drawn per clip from this range, the
# same for every family and mode: a family-specific brightness would show in the chroma
# (upper harmonics add the fifth and the major third of every note to it).
TIMBRE_POWER = (1.0, 2.6)


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
def clip_rngs(seed: int, genre: str, index: int):
    """The clip's own generators (parameters, rendering), seeded by (seed, genre, index)."""
    ss = np.random.SeedSequence([int(seed), GENRES.index(genre), int(index), 0x5D7])
    spec_ss, render_ss = ss.spawn(2)
    return np.random.default_rng(spec_ss), np.random.default_rng(render_ss)


def clip_spec(genre: str, index: int, seed: int = 0, seconds: float = 30.0) -> dict:
    """The high-level parameters drawn for one clip (key, tempo, gain, ...). Pure function."""
    if genre not in CLASSES:
        raise ValueError(f"unknown genre {genre!r}; expected one of {GENRES}")
    fam, mode = CLASSES[genre]
    rng, _ = clip_rngs(seed, genre, index)
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
        "key_name": PITCH_CLASSES[key] + ("" if mode == "major" else "m"),
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
