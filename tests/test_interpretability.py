"""Interpretability checks that can fail: pitch-class resolution of chroma maps, and
deletion/insertion against baselines with the attribution's own spatial structure."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.explain import pitch_evidence, top_classes
from lightning_modules import build_model
from lightning_modules.attribution import attribute, layer_grid, upsample_map
from lightning_modules.faithfulness import run_faithfulness
from tests.test_attribution import EXTRA, LABELS, MEL_BINS, TINY, CueSegments, fit_tiny, train_tiny


def test_circular_upsampling_wraps_pitch_classes():
    cam = torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 3, 1).expand(1, 1, 3, 4)
    flat = upsample_map(cam, (12, 8))
    ring = upsample_map(cam, (12, 8), circular=True)
    assert ring.shape == flat.shape == (1, 1, 12, 8)
    # B (row 11) sits between the last pooled row and the first one: circular gives it a
    # share of row 0's evidence, plain bilinear clamps it to the last row's 0.
    assert float(flat[0, 0, 11, 0]) == 0.0
    assert float(ring[0, 0, 11, 0]) == pytest.approx(0.375)
    assert float(ring[0, 0, 0, 0]) == pytest.approx(0.625)  # C: the mirror image of B
    torch.testing.assert_close(ring[0, 0, 2:10, 0], flat[0, 0, 2:10, 0])  # inner rows agree
    same = torch.rand(1, 1, 12, 5)
    torch.testing.assert_close(upsample_map(same, (12, 10), circular=True),
                               upsample_map(same, (12, 10)))


@pytest.mark.parametrize("backbone", ["serial_cnn", "parallel_cnn"])
def test_chroma_gradcam_is_read_at_twelve_pitch_class_rows(backbone):
    """The default backbones pool chroma 12 -> 6 -> 3; Grad-CAM reads the chroma branch where
    it still has 12 rows, the Mel branch at its last convolution."""
    model = build_model("mid_two_way", labels=LABELS, backbone=backbone, tap=2,
                        inputs={"mel": 128, "chroma": 12}).eval()
    x = {"mel": torch.randn(2, 1, 128, 130), "chroma": torch.rand(2, 1, 12, 130)}
    assert layer_grid(model, "chroma", x) == (12, 130)
    assert layer_grid(model, "mel", x) == (16, 17)
    assert model.branch_attribution_layer("mel") is model.branch_last_conv("mel")


@pytest.mark.parametrize("mode", ["late_fusion", "mid_two_way"])
def test_the_top_pitch_class_explain_reports_is_the_note_that_decides(mode):
    """Class k is one bright pitch class (4k: C, E, G#). ``explain`` names a clip's pitch
    classes from Integrated Gradients, read at the input's 12 rows: its top pitch class is
    that note for every class. Grad-CAM, even read where the chroma branch still has 12
    rows, does not name it for these models; its maps stay for the time span."""
    model, valid = train_tiny(mode, "chroma")
    b = valid.batch(np.arange(len(valid)))
    res = attribute(model, b, target=b["label"], methods=("gradcam", "integrated_gradients"))
    maps = res.maps["chroma"]
    evidence = {"gradcam": maps["gradcam"].clamp(min=0).numpy(),
                "integrated_gradients": chroma_evidence(model, maps, b)}
    named = {m: [top_classes(e[b["label"].numpy() == k].mean(axis=(0, 2)), 0.5)[0]
                 for k in range(3)] for m, e in evidence.items()}
    assert named["integrated_gradients"] == [0, 4, 8], named
    assert named["gradcam"] != [0, 4, 8], named


def chroma_evidence(model, maps, b) -> np.ndarray:
    """The per-cell evidence ``explain`` names pitch classes from, for a batch."""
    return pitch_evidence(maps["integrated_gradients"].numpy(), b["chroma"][:, 0].numpy(),
                          model.chroma_mean.flatten().numpy())


#: Four triads that share no note, so every pitch class is a chord note of one class (as in
#: music, every row of the chroma varies; a row that never does is all noise, which the
#: band normalisation magnifies).
CHORDS = {"C": (0, 4, 7), "F#": (6, 10, 1), "Dm": (2, 5, 9), "G#m": (8, 11, 3)}


class ChordSegments(CueSegments):
    """Class k: the three notes of ``CHORDS``' k-th triad bright over the chroma noise, each
    at its own level per segment; the log-Mel is noise."""

    def __init__(self, clips_per_class: int, segments: int, seed: int):
        g = self.noise(len(CHORDS), clips_per_class, segments, seed)
        triads = list(CHORDS.values())
        for i, k in enumerate(self.y.tolist()):
            self.chroma[i, 0, list(triads[k])] += 0.35 + 0.7 * torch.rand(3, 1, generator=g)


@pytest.mark.parametrize("mode", ["late_fusion", "mid_two_way"])
def test_explain_names_the_notes_of_the_chord_a_clip_is_built_from(mode):
    """Trained on four chords, ``explain``'s pitch classes for every unseen clip are notes
    of that clip's chord, and its three most attributed pitch classes are the triad. (Over six
    seeds of both modes: 192 of 192 clips; the positive IG without the presence rule put a
    non-chord note in the top three for 1 to 11 of 16 clips per model.)"""
    torch.manual_seed(1)
    model = build_model(mode, labels=list(CHORDS), backbone="serial_cnn", backbone_kwargs=TINY,
                        tap=1, head_dropout=0.0, inputs={"mel": MEL_BINS, "chroma": 12},
                        extra=EXTRA)
    model = fit_tiny(model, ChordSegments(8, 4, seed=2), steps=80)
    valid = ChordSegments(4, 3, seed=3)
    b = valid.batch(np.arange(len(valid)))
    with torch.no_grad():
        assert (model(b["mel"], b["chroma"]).argmax(1) == b["label"]).float().mean() > 0.9
    res = attribute(model, b, target=b["label"], methods=("integrated_gradients",))
    evidence = chroma_evidence(model, res.maps["chroma"], b)
    triads = list(CHORDS.values())
    for clip in np.unique(b["clip"].numpy()):
        at = b["clip"].numpy() == clip
        chord = set(triads[int(b["label"][at][0])])
        profile = evidence[at].mean(axis=(0, 2))
        assert set(top_classes(profile, 0.5)) <= chord, (clip, chord, profile.round(3))
        assert set(np.argsort(-profile)[:3].tolist()) == chord, (clip, chord, profile.round(3))
    # Without the presence rule, notes whose absence speaks for the class are named too.
    raw = res.maps["chroma"]["integrated_gradients"].clamp(min=0).numpy()
    off = [clip for clip in np.unique(b["clip"].numpy())
           if set(np.argsort(-raw[b["clip"].numpy() == clip].mean(axis=(0, 2)))[:3].tolist())
           != set(triads[valid.labels[clip]])]
    assert len(off) >= 4, off


# ----------------------------------------------------------------- deletion / insertion
def random_bump(model, x, target, branch):
    """A smooth map that knows nothing about the input: one Gaussian bump per example, at a
    random place (seeded)."""
    b, _, f, t = x[branch].shape
    g = torch.Generator().manual_seed(11)
    cf, ct = torch.rand(b, 1, 1, generator=g) * f, torch.rand(b, 1, 1, generator=g) * t
    rows = torch.arange(f).view(1, f, 1) - cf
    cols = torch.arange(t).view(1, 1, t) - ct
    return torch.exp(-0.5 * ((rows / (f / 6)) ** 2 + (cols / (t / 6)) ** 2))


@pytest.fixture(scope="module")
def faithfulness_on_cue():
    model, _ = train_tiny("mel_only", "mel")
    test = CueSegments(8, 2, seed=5)
    res = run_faithfulness(model, test, methods=("gradcam",), seed=0,
                           fractions=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0),
                           rankers={"random_bump": random_bump})
    return res


def test_gradcam_beats_its_shifted_self_random_blobs_and_a_randomised_model(faithfulness_on_cue):
    res = faithfulness_on_cue
    assert res.clips == 24 and res.segments == 48
    for baseline in ("shifted", "random_blobs", "randomised_model"):
        assert res.verdicts[("deletion", "mel", "gradcam", baseline)], baseline
        assert res.verdicts[("insertion", "mel", "gradcam", baseline)], baseline
    r = res.results
    assert r["interpretability/deletion_prob_auc_gradcam_mel"] < \
        r["interpretability/deletion_prob_auc_random_blobs_mel"] - 0.1
    # Deleting the whole input leaves chance; putting all of it back restores the clean score.
    s = res.scores[("deletion", "mel", "gradcam")]["prob"]
    i = res.scores[("insertion", "mel", "gradcam")]["prob"]
    np.testing.assert_allclose(s[:, 0], i[:, -1])
    np.testing.assert_allclose(s[:, -1], i[:, 0])


def test_an_uninformative_smooth_map_does_not_beat_its_shifted_self(faithfulness_on_cue):
    """A smooth map placed at random is no better than itself shifted; even so it may beat
    random blobs of another structure (one contiguous region keeps a whole pattern more often
    than several small ones), which is why the shifted map is the matched baseline."""
    res = faithfulness_on_cue
    for kind in ("deletion", "insertion"):
        assert not res.verdicts[(kind, "mel", "random_bump", "shifted")], kind
        diff = [r for r in res.rows if r["method"] == "random_bump" and r["section"] == kind
                and r["metric"] == "prob_auc_minus_shifted"][0]
        assert diff["ci_low"] < 0 < diff["ci_high"], diff


def test_faithfulness_rows_carry_curves_aucs_and_paired_differences(faithfulness_on_cue):
    rows = faithfulness_on_cue.rows
    aucs = [r for r in rows if r["metric"] == "prob_auc" and r["method"] == "gradcam"]
    assert {r["section"] for r in aucs} == {"deletion", "insertion"}
    for r in aucs:
        assert r["ci_low"] <= r["value"] <= r["ci_high"] and r["n"] == 24
    curve = [r for r in rows if r["section"] == "deletion" and r["method"] == "random_blobs"
             and r["metric"] == "prob"]
    assert [r["x"] for r in curve] == [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
    diffs = {r["metric"] for r in rows if r["metric"].startswith("prob_auc_minus_")}
    assert diffs == {"prob_auc_minus_shifted", "prob_auc_minus_random_blobs",
                     "prob_auc_minus_randomised_model"}
    with pytest.raises(ValueError, match="unknown method"):
        run_faithfulness(None, None, methods=("lime",))
