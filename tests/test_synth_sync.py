"""data=synth_sync: what each input shows of the two classes, determinism, generate-once."""
from __future__ import annotations

import numpy as np
import pytest

from datamodules.features import FeatureExtractor
from datamodules.synth_sync import (
    CLASSES,
    MARKER,
    TICKS_PER_BEAT,
    generate_sync,
    index_synth_sync,
    render_sync,
    sync_spec,
    tick_times,
)

HOP, SR, SECONDS = 512, 22050, 12.0


def _features(pcm):
    fx = FeatureExtractor(dict(names=["mel", "chroma"], n_mels=32, hop_length=HOP))
    f = fx(pcm.astype(np.float32)[None] / 32768)
    return f["mel"][0].numpy(), f["chroma"][0].numpy()


def _near(frame_times, events, within=0.05):
    return np.abs(frame_times[:, None] - events[None]).min(axis=1) < within


@pytest.mark.parametrize("label,index", [("on_beat", 0), ("anticipated", 1)])
def test_chroma_shows_the_chord_changes_and_mel_the_accents_not_the_other_way(label, index):
    pcm, spec = render_sync(label, index, seconds=SECONDS)
    quiet, _ = render_sync(label, index, seconds=SECONDS, spec=dict(spec, accent_db=0.0))
    mel, chroma = _features(pcm)
    mel0, chroma0 = _features(quiet)  # the same draws, no accents
    t = np.arange(mel.shape[1]) * HOP / SR
    ticks, within = tick_times(spec, SECONDS)
    tick = spec["beat_s"] / TICKS_PER_BEAT
    to_beat = np.abs(t[:, None] - ticks[within == 0][None]).min(axis=1)
    accent, away = to_beat < tick / 2 - 0.05, to_beat > tick / 2 + 0.05
    # The accent: every band several dB up; the chroma unchanged.
    rise = (mel - mel0)[:, accent].mean() - (mel - mel0)[:, away].mean()
    assert rise > 5.0
    assert np.abs(chroma - chroma0).max() < 0.05
    # Frame-to-frame change at the ticks (between frames t and t + 1).
    mid = t[1:] - 0.5 * HOP / SR
    changes = _near(mid, ticks[within == spec["change_tick"]])
    jumps = _near(mid, ticks[within != spec["change_tick"]])
    d_chroma = np.abs(np.diff(chroma0, axis=1)).sum(axis=0)
    d_mel = np.abs(np.diff(mel0, axis=1)).mean(axis=0)
    assert d_chroma[changes].mean() > 2 * d_chroma[jumps].mean()
    # The Mel moves alike at a chord change and at an octave jump.
    assert d_mel[changes].mean() == pytest.approx(d_mel[jumps].mean(), rel=0.15)
    assert d_mel[jumps].mean() > 3 * d_mel[~(changes | jumps)].mean()


def test_every_window_holds_the_same_beats_and_chord_changes_in_both_classes():
    for label in CLASSES:
        for index in range(6):
            spec = sync_spec(label, index)
            ticks, within = tick_times(spec, 30.0)
            for start in np.random.default_rng(index).uniform(0, 27, 20):
                inside = (ticks >= start) & (ticks < start + 3.0)
                assert (within[inside] == 0).sum() == 3 / spec["beat_s"]
                assert (within[inside] == spec["change_tick"]).sum() == 3 / spec["beat_s"]


def test_the_classes_differ_in_which_tick_the_chord_changes_on():
    assert [sync_spec(c, 4)["change_tick"] for c in CLASSES] == [0, TICKS_PER_BEAT - 1]
    a, _ = render_sync("anticipated", 2, seconds=4.0)
    b, _ = render_sync("anticipated", 2, seconds=4.0)
    assert np.array_equal(a, b) and a.dtype == np.int16 and len(a) == 4 * SR
    with pytest.raises(ValueError, match="unknown synth_sync class 'sideways'"):
        sync_spec("sideways", 0)


def _cfg(root, **kw):
    return {"root": str(root), "sample_rate": SR, "clip_seconds": 6.0, "split": "random",
            "ratios": [0.5, 0.25, 0.25], "split_seed": 0, "folds": 3, "fold": 0,
            "synth_sync": {"clips_per_class": 4, "seed": 0, "workers": 1}, **kw}


def test_generated_once_then_indexed_with_the_split(tmp_path):
    root = tmp_path / "sync"
    index = index_synth_sync(_cfg(root))
    assert index.labels == list(CLASSES) and len(index) == 8
    assert index.info["generated"] and (root / MARKER).is_file()
    assert index.per_split() == {"train": 4, "valid": 2, "test": 2}
    assert index.table.groupby("genre")["split"].apply(lambda s: (s == "test").sum()).tolist() \
        == [1, 1]
    assert all(p.endswith(".wav") for p in index.table["path"])
    before = (root / "clips" / "anticipated" / "anticipated.00003.wav").stat().st_mtime_ns
    again = index_synth_sync(_cfg(root, split="kfold"))
    assert not again.info["generated"]
    assert (root / "clips" / "anticipated" / "anticipated.00003.wav").stat().st_mtime_ns == before
    assert set(again.table["split"]) == {"train", "valid", "test"}
    with pytest.raises(Exception, match="not available for synth_sync: use random or kfold"):
        index_synth_sync(_cfg(root, split="official"))


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"did not write \(\['notes.txt'\]\)"):
        generate_sync(root, clips_per_class=2, seconds=4.0, workers=1)
    assert (root / "notes.txt").read_text() == "keep me"
