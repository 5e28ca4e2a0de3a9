"""Rendering one synthetic clip from its drawn parameters (:func:`clip_spec`): chord
voices from wavetables, a drum kit and pattern per rhythm family, the family's
articulation of the chords, noise at the drawn SNR, peak-normalised 16-bit PCM.
"""
from __future__ import annotations

import math

import numpy as np

from datamodules.synth_design import MODES, VOICE_RANGE, clip_rngs, clip_spec

# Bump whenever the audio a given set of parameters produces changes (here or in
# clip_spec): a stored dataset with another version is regenerated.
GENERATOR_VERSION = "synth-1"

_TABLE = 4096  # wavetable length (a power of two: indices wrap with a bit mask)
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
    _, rng = clip_rngs(seed, genre, index)
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
