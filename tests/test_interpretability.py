"""Interpretability checks that can fail: pitch-class resolution of chroma maps, and
deletion/insertion against baselines with the attribution's own spatial structure."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.explain import top_classes
from lightning_modules import build_model
from lightning_modules.attribution import attribute, layer_grid, upsample_map
from lightning_modules.faithfulness import run_faithfulness
from tests.test_attribution import LABELS, CueSegments, train_tiny


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
    named = {}
    for m in res.maps["chroma"]:
        named[m] = [top_classes(res.maps["chroma"][m][b["label"] == k].clamp(min=0)
                                .mean(dim=(0, 2)).numpy(), 0.5)[0] for k in range(3)]
    assert named["integrated_gradients"] == [0, 4, 8], named
    assert named["gradcam"] != [0, 4, 8], named


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
