"""The synthetic demo dataset: GTZAN layout, determinism, generate-once, and class design."""
from __future__ import annotations

import json
import re
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from datamodules import synth, synth_design
from datamodules.synth import GENRES, MARKER, clip_spec, describe_classes, generate_synth

SR = 22050
_TRIADS = np.stack([np.roll(np.isin(np.arange(12), triad), k)
                    for triad in ((0, 4, 7), (0, 3, 7)) for k in range(12)]).astype(float)


def _wav_files(root):
    return sorted((root / "genres").rglob("*.wav"))


# ----------------------------------------------------------------- numpy-only feature proxies
def _power(y: np.ndarray, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    """|STFT|^2, [freq, frames] (Hann, no centering)."""
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop]
    return (np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2).T


def _chroma(P: np.ndarray, sr: int = SR, n_fft: int = 2048) -> np.ndarray:
    """12-bin chroma like librosa's (tuning 0, Gaussian octave weighting around 880 Hz, each
    frame normalised by its max); bins are hard-assigned to the nearest pitch class."""
    f = np.fft.rfftfreq(n_fft, 1.0 / sr)
    keep = (f > 50) & (f < 5000)
    midi = 69 + 12 * np.log2(f[keep] / 440.0)
    pc = np.round(midi).astype(int) % 12
    w = np.exp(-0.5 * (np.log2(f[keep] / 880.0) / 2.0) ** 2)
    fb = np.zeros((12, len(f)))
    fb[pc, np.where(keep)[0]] = w
    c = fb @ P
    return c / (c.max(axis=0, keepdims=True) + 1e-12)


def _onset_strength(P: np.ndarray, sr: int = SR, n_fft: int = 2048) -> np.ndarray:
    """Spectral flux of a log-spaced (Mel-like) 64-band dB spectrogram."""
    f = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = np.geomspace(30, 10000, 65)
    fb = np.stack([(f >= lo) & (f < hi) for lo, hi in zip(edges[:-1], edges[1:])]).astype(float)
    db = 10 * np.log10(fb @ P + 1e-10)
    return np.maximum(np.diff(db, axis=1), 0).sum(axis=0)


def _acf(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    r = np.correlate(x, x, mode="full")[len(x) - 1:]
    return r / (r[0] + 1e-12)


def _render(genre, index, seconds, seed=0):
    pcm, spec = synth.render_clip(genre, index, seed, SR, seconds)
    return pcm.astype(np.float64) / 32768.0, spec


# ----------------------------------------------------------------------------- layout
def test_layout_is_gtzan(tmp_path):
    root = tmp_path / "synth"
    out = generate_synth(root, clips_per_class=2, seconds=3.0, workers=2, progress=False)
    assert out["generated"] is True and out["clips"] == 20
    assert set(out) >= {"root", "clips", "generated", "seconds_taken", "params"}
    assert out["root"] == str(root.resolve())
    assert GENRES == ("blues", "classical", "country", "disco", "hiphop",
                      "jazz", "metal", "pop", "reggae", "rock")
    assert sorted(p.name for p in (root / "genres").iterdir()) == list(GENRES)
    for g in GENRES:
        names = sorted(p.name for p in (root / "genres" / g).iterdir())
        assert names == [f"{g}.00000.wav", f"{g}.00001.wav"]
        for name in names:
            assert re.fullmatch(rf"{g}\.\d{{5}}\.wav", name)
            path = root / "genres" / g / name
            info = sf.info(str(path))
            assert (info.samplerate, info.channels, info.subtype, info.format) == \
                (SR, 1, "PCM_16", "WAV")
            assert info.frames == 3 * SR
            pcm, _ = sf.read(str(path), dtype="int16")
            peak = int(np.abs(pcm.astype(np.int32)).max())
            # peak-normalised to -12..-1 dBFS: never clipped, never silent
            assert 10 ** (-12.5 / 20) * 32767 <= peak <= 10 ** (-0.9 / 20) * 32767
            assert pcm.astype(np.float64).std() > 100
    marker = json.loads((root / MARKER).read_text())
    assert marker["params"] == out["params"]
    assert marker["version"] == synth.GENERATOR_VERSION
    readme = (root / "README.md").read_text()
    assert all(g in readme for g in GENRES)
    # nothing but the dataset is left beside root (and the lock file, if filelock keeps it)
    assert {p.name for p in tmp_path.iterdir()} - {"synth.lock"} == {"synth"}


def test_describe_classes():
    d = describe_classes()
    assert list(d) == list(GENRES)
    pairs = {}
    for g, info in d.items():
        assert {"family", "mode", "text"} <= set(info)
        assert info["mode"] in ("major", "minor")
        pairs.setdefault(info["family"], []).append(info["mode"])
    # 5 families x 2 modes: every (family, mode) exactly once
    assert len(pairs) == 5 and all(sorted(m) == ["major", "minor"] for m in pairs.values())


# ------------------------------------------------------------------------ determinism
def test_deterministic_across_workers_and_seed_changes_output(tmp_path):
    kw = dict(clips_per_class=2, seconds=2.0, progress=False)
    generate_synth(tmp_path / "a", seed=3, workers=1, **kw)
    generate_synth(tmp_path / "b", seed=3, workers=2, **kw)
    generate_synth(tmp_path / "c", seed=4, workers=2, **kw)
    fa, fb, fc = (_wav_files(tmp_path / x) for x in "abc")
    assert len(fa) == len(fb) == len(fc) == 20
    for a, b, c in zip(fa, fb, fc):
        assert a.name == b.name == c.name
        assert a.read_bytes() == b.read_bytes(), a.name
        assert a.read_bytes() != c.read_bytes(), a.name
    # the per-clip parameter table is deterministic too
    assert (tmp_path / "a" / synth.CLIPS_TABLE).read_bytes() == \
        (tmp_path / "b" / synth.CLIPS_TABLE).read_bytes()


def test_clip_does_not_depend_on_the_number_of_clips():
    a, _ = synth.render_clip("jazz", 1, seed=0, sample_rate=SR, seconds=2.0)
    b, _ = synth.render_clip("jazz", 1, seed=0, sample_rate=SR, seconds=2.0)
    c, _ = synth.render_clip("jazz", 2, seed=0, sample_rate=SR, seconds=2.0)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# ------------------------------------------------------------------ generate once / redo
def test_second_call_reuses_changed_params_regenerate(tmp_path):
    root = tmp_path / "synth"
    kw = dict(clips_per_class=1, seconds=2.0, workers=1, progress=False)
    assert generate_synth(root, **kw)["generated"] is True
    first = (root / "genres" / "rock" / "rock.00000.wav").read_bytes()
    t = time.perf_counter()
    again = generate_synth(root, **kw)
    assert again["generated"] is False and time.perf_counter() - t < 1.0
    assert (root / "genres" / "rock" / "rock.00000.wav").read_bytes() == first

    changed = generate_synth(root, **{**kw, "seconds": 2.5})
    assert changed["generated"] is True and changed["params"]["seconds"] == 2.5
    assert sf.info(str(root / "genres" / "rock" / "rock.00000.wav")).frames == int(2.5 * SR)
    assert json.loads((root / MARKER).read_text())["params"]["seconds"] == 2.5

    more = generate_synth(root, **{**kw, "seconds": 2.5, "clips_per_class": 2})
    assert more["generated"] is True and len(_wav_files(root)) == 20
    fewer = generate_synth(root, **{**kw, "seconds": 2.5})
    assert fewer["generated"] is True and len(_wav_files(root)) == 10  # no stale clips left


def test_missing_clip_is_regenerated(tmp_path):
    root = tmp_path / "synth"
    kw = dict(clips_per_class=1, seconds=1.0, workers=1, progress=False)
    generate_synth(root, **kw)
    (root / "genres" / "jazz" / "jazz.00000.wav").unlink()
    assert not synth.is_complete(root)
    assert generate_synth(root, **kw)["generated"] is True
    assert len(_wav_files(root)) == 10


def test_directory_without_marker_is_regenerated(tmp_path):
    root = tmp_path / "synth"
    kw = dict(clips_per_class=1, seconds=2.0, workers=1, progress=False)
    generate_synth(root, **kw)
    (root / MARKER).unlink()
    victim = root / "genres" / "pop" / "pop.00000.wav"
    victim.write_bytes(victim.read_bytes()[:1000])  # a half-written file
    out = generate_synth(root, **kw)
    assert out["generated"] is True and (root / MARKER).is_file()
    assert sf.info(str(victim)).frames == 2 * SR


def test_killed_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    root = tmp_path / "synth"
    kw = dict(clips_per_class=2, seconds=2.0, workers=1, progress=False)
    real_job = synth._job
    calls = []

    def dying_job(args):
        calls.append(args)
        if len(calls) == 7:
            raise KeyboardInterrupt("killed")
        return real_job(args)

    monkeypatch.setattr(synth, "_job", dying_job)
    with pytest.raises(KeyboardInterrupt):
        generate_synth(root, **kw)
    assert not root.exists()
    assert {p.name for p in tmp_path.iterdir()} - {"synth.lock"} == set()  # temp dir removed

    # the same with an older complete dataset in place: it stays as it was
    monkeypatch.setattr(synth, "_job", real_job)
    generate_synth(root, **kw)
    before = {p.name: p.read_bytes() for p in _wav_files(root)}
    calls.clear()
    monkeypatch.setattr(synth, "_job", dying_job)
    with pytest.raises(KeyboardInterrupt):
        generate_synth(root, **{**kw, "seed": 9})
    assert synth.is_complete(root, synth._params(2, 0, SR, 2.0))
    assert {p.name: p.read_bytes() for p in _wav_files(root)} == before

    # a temporary directory left by a hard kill is cleaned up by the next generation
    stale = tmp_path / ".synth.tmp-123-deadbeef"
    (stale / "genres").mkdir(parents=True)
    monkeypatch.setattr(synth, "_job", real_job)
    assert generate_synth(root, **{**kw, "seed": 9})["generated"] is True
    assert not stale.exists()


def test_refuses_to_replace_foreign_directory(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError):
        generate_synth(root, clips_per_class=1, seconds=1.0, workers=1, progress=False)
    assert (root / "thesis.tex").read_text() == "precious"


def test_concurrent_generators_share_one_result(tmp_path):
    root = tmp_path / "synth"
    results, errors = [], []

    def go():
        try:
            results.append(generate_synth(root, clips_per_class=1, seconds=2.0, workers=1,
                                          progress=False))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(r["generated"] for r in results) == [False, True]
    assert len(_wav_files(root)) == 10 and (root / MARKER).is_file()


# ------------------------------------------------------------------ variation and design
def test_within_class_variation():
    specs = [clip_spec("disco", i, seed=0, seconds=6.0) for i in range(6)]
    assert len({s["key"] for s in specs}) > 1
    assert len({round(s["tempo_bpm"]) for s in specs}) > 1
    assert len({round(s["gain_db"], 2) for s in specs}) > 1
    lo, hi = synth_design.FAMILIES["dance"]["tempo"]
    assert all(lo <= s["tempo_bpm"] <= hi for s in specs)

    # the audio follows the drawn key and chords: the measured mean chroma matches the pitch
    # classes of the clip's own chords best without transposition, and two clips in different
    # keys sound different
    i, j = next((a, b) for a in range(6) for b in range(a + 1, 6)
                if (specs[a]["key"] - specs[b]["key"]) % 12 not in (0, 5, 7))
    ya, _ = _render("disco", i, 6.0)
    yb, _ = _render("disco", j, 6.0)
    means = []
    for y, spec in ((ya, specs[i]), (yb, specs[j])):
        c = _chroma(_power(y)).mean(1)
        expected = np.zeros(12)
        for t0, t1, root in spec["chords"]:
            for iv in synth_design.MODES[spec["mode"]]:
                expected[(root + iv) % 12] += t1 - t0
        corr = [np.corrcoef(np.roll(expected, k), c)[0, 1] for k in range(12)]
        assert int(np.argmax(corr)) == 0 and corr[0] > 0.8, np.round(corr, 2)
        means.append(c)
    assert np.corrcoef(*means)[0, 1] < 0.8

    # ... and the drawn tempo: the onset autocorrelation peaks at the beat period (4-on-the-floor)
    for y, spec in ((ya, specs[i]), (yb, specs[j])):
        r = _acf(_onset_strength(_power(y)))
        fps = SR / 512
        lags = np.arange(int(fps * 60 / 140), int(fps * 60 / 100) + 1)
        best = lags[np.argmax(r[lags])]
        assert abs(best - fps * 60 / spec["tempo_bpm"]) <= 1.0


_BEAT_FRACTIONS = (1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1, 3 / 2, 2)


def _design_features(seconds=6.0, per_class=4):
    rows = []
    for g in GENRES:
        for i in range(per_class):
            y, spec = _render(g, i, seconds)
            P = _power(y)
            c = _chroma(P)
            # chroma aligned to the root of the chord sounding in each frame (from the spec)
            t = (np.arange(c.shape[1]) * 512 + 1024) / SR
            aligned = np.zeros(12)
            for t0, t1, root in spec["chords"]:
                sel = (t >= t0 + 0.15) & (t < t1)
                aligned += np.roll(c[:, sel], -root, axis=0).sum(1)
            aligned /= aligned.max()
            # key-free: share of frames whose best-matching triad (24 templates) is major
            frac_major = float((np.argmax(_TRIADS @ c, axis=0) < 12).mean())
            r = _acf(_onset_strength(P))
            fps = SR / 512
            beat = fps * 60 / spec["tempo_bpm"]
            # periodicity at the beat, half beat and bar of the clip's tempo (in frames)
            period = [r[int(round(m * beat))] for m in _BEAT_FRACTIONS]
            rows.append(dict(genre=g, family=spec["family"], mode=spec["mode"],
                             aligned=aligned, frac_major=frac_major, period=np.array(period)))
    return rows


def _loo_nearest_centroid(X, labels):
    X = (X - X.mean(0)) / (X.std(0) + 1e-9)
    labels = np.asarray(labels)
    hits = 0
    for k in range(len(X)):
        keep = np.arange(len(X)) != k
        cents = {lab: X[keep & (labels == lab)].mean(0) for lab in set(labels)}
        pred = min(cents, key=lambda lab: np.linalg.norm(X[k] - cents[lab]))
        hits += pred == labels[k]
    return hits / len(X)


def test_class_design_carries_the_intended_information():
    rows = _design_features()
    fams = sorted({r["family"] for r in rows})
    # harmony, measured without the spec: more frames of every major clip than of any minor
    # clip of the same family match a major triad best (of 24 triad templates)
    for fam in fams:
        maj = [r["frac_major"] for r in rows if r["family"] == fam and r["mode"] == "major"]
        mnr = [r["frac_major"] for r in rows if r["family"] == fam and r["mode"] == "minor"]
        assert min(maj) > max(mnr) and np.mean(maj) - np.mean(mnr) > 0.4, (fam, maj, mnr)
    # after aligning to the chord roots, the major third (degree 4) dominates the minor third
    # (degree 3) in every major clip and the reverse in every minor clip, in every family
    for fam in fams:
        for r in rows:
            if r["family"] != fam:
                continue
            m3, M3 = r["aligned"][3], r["aligned"][4]
            if r["mode"] == "major":
                assert M3 > 2 * m3, (r["genre"], r["aligned"].round(2))
            else:
                assert m3 > 2 * M3, (r["genre"], r["aligned"].round(2))
        maj, mnr = (np.mean([r["aligned"] for r in rows if r["family"] == fam and r["mode"] == m],
                            axis=0) for m in ("major", "minor"))
        # the modes differ most in the third (not in the root or the fifth)
        assert np.abs(maj - mnr).max() > 0.3 and int(np.argmax(np.abs(maj - mnr))) in (3, 4)

    # rhythm: the onset periodicity differs between families. Four-on-the-floor (dance) has a
    # strong beat; chamber (no kit, sustained pads) almost none; the shuffle swings (a peak at
    # 1/3 and 2/3 of a beat where the straight families have none); half-time and rock hit the
    # half beat.
    period = np.stack([r["period"] for r in rows])
    fam_labels = np.array([r["family"] for r in rows])
    mode_labels = np.array([r["mode"] for r in rows])
    at = {m: _BEAT_FRACTIONS.index(m) for m in (1 / 3, 1 / 2, 2 / 3, 1)}
    beat = {f: period[fam_labels == f, at[1]] for f in fams}
    assert beat["dance"].min() > 0.3 and beat["chamber"].max() < beat["dance"].min()
    swing_all = (period[:, at[1 / 3]] + period[:, at[2 / 3]]) / 2 - period[:, at[1 / 2]]
    swing = {f: swing_all[fam_labels == f] for f in fams}
    assert swing["shuffle"].min() > max(swing[f].max() for f in fams if f != "shuffle")
    half = {f: period[fam_labels == f, at[1 / 2]] for f in fams}
    assert min(half["rock"].min(), half["halftime"].min()) > max(half["dance"].max(),
                                                                 half["shuffle"].max())
    # the beat-relative onset periodicity alone tells the five families apart (leave-one-out
    # nearest centroid on 40 clips of 6 s; chance is 20 %), but not the mode
    assert _loo_nearest_centroid(period, fam_labels) >= 0.9
    assert _loo_nearest_centroid(period, mode_labels) <= 0.75
    # and the root-aligned chroma tells the mode apart but not the family
    aligned = np.stack([r["aligned"] for r in rows])
    assert _loo_nearest_centroid(aligned, mode_labels) >= 0.9
    assert _loo_nearest_centroid(aligned, fam_labels) <= 0.6
