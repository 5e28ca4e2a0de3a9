"""Texture vs shape at matched distortion (``lightning_modules.texture_shape``).

Two tiny models on constructed data where the answer is known:

- texture cue (``tests.test_attribution``'s ``cue="mel"``): the class is the *form* of one
  bright small shape at a random place; blurring removes it, moving time blocks keeps it;
- layout cue (:class:`LayoutSegments`): the class is *which half* of the segment holds a
  bright 8-band x 6-frame block; the block and the noise look the same in every class, and
  every segment is blurred by a random sigma in 0 .. 4 cells, so fine texture varies
  within each class and cannot be the cue. Moving time tiles carries parts of the block to
  the other half.

The sweep must give opposite verdicts for the two, read where every curve is measured: on
these 24-frame segments that takes 2-frame time-shuffle tiles (:data:`MATCHED`; the
default 8-frame tiles leave 3 tiles, and moving 2 of them distorts more than any blur).
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from lightning_modules import build_model
from lightning_modules.perturbations import gaussian_smooth
from lightning_modules.texture_shape import (
    DEFAULT_FRACTIONS,
    DEFAULT_SEVERITY,
    DEFAULT_SIGMAS,
    PERTURBATIONS,
    TEXTURE_SHAPE_COLUMNS,
    accuracy_at_distortion,
    distortion,
    moved_tiles,
    partial_permutation,
    perturb,
    plan_severities,
    save_severity_figure,
    severity_sweep,
    shuffle_patches_partial,
    shuffle_patches_time,
    texture_vs_shape,
)
from tests.test_attribution import (
    EXTRA,
    FRAMES,
    MEL_BINS,
    TINY,
    CueSegments,
    fit_tiny,
    tiny_model,
    train_tiny,
)

LAYOUT_LABELS = ["first_half", "second_half"]
# The verdict sweeps' severities: 2-frame time tiles, 12 in a 24-frame segment (as the
# default 8-frame tiles give 16 in a 3-s segment at hop 512), so that the mild time shuffles
# distort less than the strongest blur.
MATCHED = {**DEFAULT_SEVERITY, "time_tile": 2}


class LayoutSegments(CueSegments):
    """Class k: an 8-band x 6-frame block (+25 dB) centred in half k of the segment (start
    jittered by up to 2 frames), at a random band; noise as in ``CueSegments``; then each
    segment blurred with a random sigma from (0, 0.5, 1, 2, 4) cells."""

    def __init__(self, clips_per_class: int, segments: int, seed: int):
        rows, width = 8, 6
        g = self.noise(len(LAYOUT_LABELS), clips_per_class, segments, seed)
        sigmas = (0.0, 0.5, 1.0, 2.0, 4.0)
        for i, k in enumerate(self.y.tolist()):
            jitter = int(torch.randint(-2, 3, (1,), generator=g))
            centre = k * (FRAMES // 2) + FRAMES // 4
            t0 = min(max(centre - width // 2 + jitter, 0), FRAMES - width)
            f0 = int(torch.randint(0, MEL_BINS - rows + 1, (1,), generator=g))
            self.mel[i, 0, f0:f0 + rows, t0:t0 + width] += 25
            s = sigmas[int(torch.randint(0, len(sigmas), (1,), generator=g))]
            self.mel[i:i + 1] = gaussian_smooth(self.mel[i:i + 1], s)


def train_layout(steps: int = 200, seed: int = 0):
    """A mel_only tiny model on :class:`LayoutSegments`, as ``train_tiny`` (about 3 s)."""
    torch.manual_seed(seed)
    model = build_model("mel_only", labels=LAYOUT_LABELS, backbone="serial_cnn",
                        backbone_kwargs=TINY, tap=1, head_dropout=0.0,
                        inputs={"mel": MEL_BINS, "chroma": 12}, extra=EXTRA)
    return fit_tiny(model, LayoutSegments(8, 4, seed=0), steps)


@pytest.fixture(scope="module")
def texture_sweep():
    model, _ = train_tiny("mel_only", "mel")
    data = CueSegments(10, 3, seed=2, cue="mel")
    return model, severity_sweep(model, data, **MATCHED), severity_sweep(model, data)


@pytest.fixture(scope="module")
def layout_sweep():
    model = train_layout()
    data = LayoutSegments(10, 3, seed=2)
    return model, severity_sweep(model, data, **MATCHED), severity_sweep(model, data)


def _row(rows, branch, perturbation, severity):
    (row,) = [r for r in rows if r["branch"] == branch and r["perturbation"] == perturbation
              and r["severity"] == severity]
    return row


# ------------------------------------------------------------------------ perturbations
def test_partial_shuffle_moves_the_rounded_fraction_of_tiles_each_to_a_new_place():
    # fraction x tiles to the nearest whole number (halves up), at least 2, at most all.
    assert [moved_tiles(16, q) for q in DEFAULT_FRACTIONS] == [2, 4, 8, 16]
    assert [moved_tiles(12, q) for q in DEFAULT_FRACTIONS] == [2, 3, 6, 12]
    assert [moved_tiles(3, q) for q in DEFAULT_FRACTIONS] == [2, 2, 2, 3]
    assert moved_tiles(10, 0.25) == 3 and moved_tiles(6, 0.25) == 2 and moved_tiles(1, 1) == 0
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"in \(0, 1\]"):
            moved_tiles(8, bad)
    for n, q in ((16, 0.1), (12, 0.25), (7, 0.5), (5, 1.0)):
        p = partial_permutation(n, q, torch.Generator().manual_seed(n))
        assert sorted(p.tolist()) == list(range(n))  # a permutation ...
        assert int((p != torch.arange(n)).sum()) == moved_tiles(n, q)  # ... moving k tiles
    # Time shuffle, 3 rows of 4-band tiles x 4 frames (6 per row) and whole-height tiles:
    # per example and tile row, exactly k tiles differ from the clean ones.
    x = torch.randn(3, 1, 12, 26, generator=torch.Generator().manual_seed(0))  # distinct
    for patch, rows_of_tiles in (((4, 4), 3), ((12, 4), 1)):
        for q in DEFAULT_FRACTIONS:
            y = shuffle_patches_time(x, patch, torch.Generator().manual_seed(1), fraction=q)
            assert torch.equal(x.sort(dim=3).values, y.sort(dim=3).values)  # bands kept
            assert torch.equal(y[..., 24:], x[..., 24:])  # past the last whole tile
            tiles_x = x[..., :24].reshape(3, 1, rows_of_tiles, patch[0], 6, 4)
            tiles_y = y[..., :24].reshape(3, 1, rows_of_tiles, patch[0], 6, 4)
            changed = (tiles_x != tiles_y).flatten(3, 3).any(dim=(3, 5))  # [3, 1, rows, 6]
            assert torch.all(changed.sum(dim=-1) == moved_tiles(6, q)), (patch, q)
    # Time-frequency shuffle, 4x4 tiles of 12x26: 3 x 6 = 18 tiles per example.
    for q in DEFAULT_FRACTIONS:
        z = shuffle_patches_partial(x, (4, 4), q, torch.Generator().manual_seed(1))
        assert torch.equal(x.flatten(1).sort(1).values, z.flatten(1).sort(1).values)
        tiles_x = x[..., :24].reshape(3, 3, 4, 6, 4).permute(0, 1, 3, 2, 4).flatten(1, 2)
        tiles_z = z[..., :24].reshape(3, 3, 4, 6, 4).permute(0, 1, 3, 2, 4).flatten(1, 2)
        changed = (tiles_x != tiles_z).flatten(2).any(dim=2)
        assert torch.all(changed.sum(dim=1) == moved_tiles(18, q)), q
        again = shuffle_patches_partial(x, (4, 4), q, torch.Generator().manual_seed(1))
        assert torch.equal(z, again)  # seeded
    assert not torch.equal(x.sort(dim=3).values, z.sort(dim=3).values)  # values change band
    with pytest.raises(ValueError, match="fewer than 2 tiles"):
        shuffle_patches_time(x, (12, 14))
    with pytest.raises(ValueError, match="fewer than 2 tiles"):
        shuffle_patches_partial(x, (12, 14), 1.0)


def test_time_shuffle_keeps_every_cell_in_its_band_the_time_freq_shuffle_does_not():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 12, 26, generator=g)
    for patch in ((12, 4), (4, 6)):  # whole-height tiles; 3 rows of tiles
        y = shuffle_patches_time(x, patch, torch.Generator().manual_seed(1))
        assert y.shape == x.shape and not torch.equal(x, y)
        # Each band keeps its multiset of values: nothing changes frequency ...
        assert torch.equal(x.sort(dim=3).values, y.sort(dim=3).values), patch
        # ... while every example's time layout changed.
        assert all(not torch.equal(x[i], y[i]) for i in range(3))
        # Frames past the last whole tile stay where they were.
        tail = 26 - 26 % patch[1]
        assert torch.equal(y[..., tail:], x[..., tail:])
        again = shuffle_patches_time(x, patch, torch.Generator().manual_seed(1))
        assert torch.equal(y, again)  # seeded
    # Whole tiles move: each 4-frame block of the output is a block of the input.
    y = shuffle_patches_time(x, (12, 4), torch.Generator().manual_seed(2))
    blocks_in = {tuple(x[0, 0, :, j:j + 4].flatten().tolist()) for j in range(0, 24, 4)}
    blocks_out = {tuple(y[0, 0, :, j:j + 4].flatten().tolist()) for j in range(0, 24, 4)}
    assert blocks_in == blocks_out


def test_distortion_is_zero_when_clean_and_grows_with_the_fraction_moved():
    """On noise shaped as a 3-s Mel segment's time axis (128 frames: 16 tiles of 8), the
    partial shuffles grade from well inside the blur's range to twice its top."""
    g = torch.Generator().manual_seed(0)
    x = -60 + 8 * torch.randn(16, 1, MEL_BINS, 128, generator=g)
    model = tiny_model("mel_only")
    model.set_normalization({"mel": (x.mean(dim=(0, 1, 3)).numpy(),
                                     x.std(dim=(0, 1, 3)).numpy())})
    d0 = distortion(model, "mel", x, x.clone())
    assert d0.shape == (16,) and torch.equal(d0, torch.zeros(16))
    # Measured in the model's normalised units: a shift by one band std is 1 per cell.
    torch.testing.assert_close(distortion(model, "mel", x, x + model.mel_std),
                               torch.ones(16))
    blur = [float(distortion(model, "mel", x, gaussian_smooth(x, s)).mean())
            for s in DEFAULT_SIGMAS]
    assert all(a < b for a, b in zip(blur, blur[1:])), blur
    for name in ("shuffle_time", "shuffle_time_freq"):
        points = [p for p in plan_severities(x.shape)[0] if p["perturbation"] == name]
        assert [p["severity"] for p in points] == list(DEFAULT_FRACTIONS)
        gen = torch.Generator().manual_seed(0)
        d = [float(distortion(model, "mel", x, perturb(x, p, gen)).mean()) for p in points]
        assert all(a < b for a, b in zip(d, d[1:])), (name, d)
        # White noise: a moved cell changes by about 2 variances, so the distortion is about
        # 2 x the share of cells moved (the cells past the last whole tile stay).
        for p, v in zip(points, d):
            share = p["moved"] / p["tiles"] * (p["tiles"] * p["tile"][0] * p["tile"][1]
                                               / x[0, 0].numel())
            assert v == pytest.approx(2 * share, rel=0.1), (name, p["severity"], v)
        # The curves overlap: the mildest shuffle lies below the strongest blur, which
        # stays below 1 (a local mean), while moving every tile reaches about 2.
        assert d[0] < 0.5 * blur[-1] and d[1] < blur[-1] < 1 < 1.8 < d[-1], (name, d, blur)


# ---------------------------------------------------------------------- sweep verdicts
def test_the_sweep_tells_a_texture_model_from_a_layout_model(texture_sweep, layout_sweep):
    """Read where every curve is measured (no straight line from the clean point), blurring
    hurts the texture-cue model more than moving time tiles, and the layout-cue model the
    other way round."""
    _, tex_rows, _ = texture_sweep
    _, lay_rows, _ = layout_sweep
    tex, lay = texture_vs_shape(tex_rows, "mel"), texture_vs_shape(lay_rows, "mel")
    assert tex["clean"] >= 0.9 and lay["clean"] >= 0.9
    assert tex["verdict"] == "texture", tex["summary"]
    assert lay["verdict"] == "shape", lay["summary"]
    for res in (tex, lay):
        assert res["overlap"] and len(res["levels"]) == 2
        assert tuple(res["levels"]) == res["measured_range"]
        assert res["levels"][1] == pytest.approx(min(res["max_distortion"].values()))
        assert res["levels"][1] == pytest.approx(res["max_distortion"]["blur"])
        assert set(res["accuracy"]) == set(PERTURBATIONS)
        assert res["from_clean"] == {p: [False, False] for p in PERTURBATIONS}
        assert "line from the clean point" not in res["summary"]
    # Observed (time tiles of 2 frames): texture blur 0.33 vs time shuffle 0.84 at
    # D = 0.94 (0.84 .. 0.87 over 4 evaluation sets); layout blur 1.00 vs time shuffle
    # 0.82 at D = 0.66 (margin 0.13 .. 0.23 over 3 initialisation x 2 evaluation seeds).
    t_blur, t_shuffle = tex["accuracy"]["blur"][-1], tex["accuracy"]["shuffle_time"][-1]
    l_blur, l_shuffle = lay["accuracy"]["blur"][-1], lay["accuracy"]["shuffle_time"][-1]
    assert t_blur <= 0.6 and t_shuffle >= t_blur + 0.3, tex["summary"]
    assert l_blur >= 0.9 and l_blur >= l_shuffle + 0.1, lay["summary"]
    assert "texture hurts more" in tex["summary"] and "shape hurts more" in lay["summary"]
    # The raw points agree: a time shuffle at least as distorting as the strongest blur
    # leaves the texture model more accuracy, the layout model less.
    for rows, better in ((tex_rows, True), (lay_rows, False)):
        strongest_blur = _row(rows, "mel", "blur", max(DEFAULT_SIGMAS))
        (r,) = [r for r in rows if r["perturbation"] == "shuffle_time"
                and r["severity"] == 0.5]
        assert r["distortion"] > strongest_blur["distortion"]
        assert (r["acc_clip"] > strongest_blur["acc_clip"]) == better, (r, strongest_blur)
    # Distortion grows with the fraction moved on every shuffle curve.
    for rows in (tex_rows, lay_rows):
        for p in ("shuffle_time", "shuffle_time_freq"):
            d = [r["distortion"] for r in rows if r["perturbation"] == p]
            assert d == sorted(d) and len(d) == len(DEFAULT_FRACTIONS), (p, d)


def test_default_tiles_on_short_segments_fall_back_to_the_clean_line(
        texture_sweep, layout_sweep):
    """With the default 8-frame time tiles a 24-frame segment has 3 tiles: the mildest time
    shuffle moves 2 of them, more distortion than any blur, and the comparison says that
    it reads that curve on the line from the clean point. The time-frequency shuffle (12
    tiles of 8x8) is still measured there."""
    for _, _, rows in (texture_sweep, layout_sweep):
        res = texture_vs_shape(rows, "mel")
        assert not res["overlap"] and res["measured_range"] is None
        assert res["levels"][1] == pytest.approx(res["max_distortion"]["blur"])
        assert res["from_clean"]["shuffle_time"] == [True, True]
        assert res["from_clean"]["blur"][-1] is False
        assert res["from_clean"]["shuffle_time_freq"][-1] is False
        assert "time shuffle read on the line from the clean point" in res["summary"]
        assert {(s["perturbation"], s["severity"]) for s in rows.skipped} == {
            ("shuffle_time", 0.25), ("shuffle_time", 0.5)}
    # Observed: texture blur 0.33 vs time shuffle 1.00 (on the line) at D = 0.94; layout
    # blur 1.00 vs 0.74 at D = 0.66; the mildest time shuffles lie at D = 1.32 and 1.29.
    assert texture_vs_shape(texture_sweep[2], "mel")["verdict"] == "texture"
    assert texture_vs_shape(layout_sweep[2], "mel")["verdict"] == "shape"


def test_accuracy_at_distortion_interpolates_along_the_curve():
    def row(p, d, acc, sev=None):
        return {"branch": "mel", "perturbation": p, "severity": sev, "distortion": d,
                "acc_clip": acc}

    rows = [row("clean", 0.0, 1.0), row("blur", 0.8, 0.2, 4.0), row("blur", 0.2, 0.8, 1.0),
            row("shuffle_time", 1.6, 0.6, 0.1), row("shuffle_time_freq", 2.0, 0.4, 0.1),
            {**row("clean", 0.0, 0.9), "branch": "chroma"}]
    assert accuracy_at_distortion(rows, "mel", "blur", 0.0) == pytest.approx(1.0)
    assert accuracy_at_distortion(rows, "mel", "blur", 0.5) == pytest.approx(0.5)  # sorted
    assert accuracy_at_distortion(rows, "mel", "shuffle_time", 0.8) == pytest.approx(0.8)
    assert np.isnan(accuracy_at_distortion(rows, "mel", "blur", 0.9))
    assert np.isnan(accuracy_at_distortion(rows, "mel", "blur", -0.1))
    assert np.isnan(accuracy_at_distortion(rows, "chroma", "blur", 0.1))
    # No overlap: half of and all of the largest common distortion, on the clean line.
    res = texture_vs_shape(rows, "mel")
    assert not res["overlap"] and res["measured_range"] is None
    assert res["levels"] == pytest.approx([0.4, 0.8])
    assert res["accuracy"]["blur"] == pytest.approx([0.6, 0.2])
    assert res["accuracy"]["shuffle_time"] == pytest.approx([0.9, 0.8])
    assert res["accuracy"]["shuffle_time_freq"] == pytest.approx([0.88, 0.76])
    assert res["verdict"] == "texture" and res["clean"] == 1.0
    assert res["from_clean"] == {"blur": [False, False], "shuffle_time": [True, True],
                                 "shuffle_time_freq": [True, True]}
    assert "time shuffle, time-frequency shuffle read on the line" in res["summary"]
    # Overlapping curves: the ends of the range every curve measured.
    rows += [row("shuffle_time", 0.3, 0.9, 0.05), row("shuffle_time_freq", 0.4, 0.7, 0.05)]
    res = texture_vs_shape(rows, "mel")
    assert res["overlap"] and res["measured_range"] == pytest.approx((0.4, 0.8))
    assert res["levels"] == pytest.approx([0.4, 0.8])
    assert res["accuracy"]["blur"] == pytest.approx([0.6, 0.2])
    assert res["accuracy"]["shuffle_time"] == pytest.approx([0.9 - 0.3 * 0.1 / 1.3,
                                                             0.9 - 0.3 * 0.5 / 1.3])
    assert res["from_clean"] == {p: [False, False] for p in PERTURBATIONS}
    assert "line from the clean point" not in res["summary"]
    # A branch with only its clean point: nothing to compare.
    only_clean = texture_vs_shape(rows, "chroma")
    assert only_clean["levels"] == [] and only_clean["verdict"] is None
    with pytest.raises(ValueError, match="no clean row"):
        texture_vs_shape(rows, "tempo")


# ---------------------------------------------------------------------- rows, figure
def test_plan_skips_tiles_that_do_not_fit_and_fractions_that_repeat_a_smaller_one():
    points, skipped = plan_severities((1, 1, 12, 24), fractions=(0.5, 0.1, 1.0, 0.1),
                                      time_tile=16, tile=8)
    # 16-frame tiles: 1 along time, every time-shuffle fraction skipped; chroma 6x8 tiles:
    # 2 x 3 = 6, and 0.5 moves 3, 0.1 moves 2, 1.0 moves 6 (the repeated 0.1 is one point).
    assert {(s["perturbation"], s["severity"]) for s in skipped} == {
        ("shuffle_time", 0.5), ("shuffle_time", 0.1), ("shuffle_time", 1.0)}
    assert all("leaves 1 tile(s) in a 12x24 input" in s["reason"] for s in skipped)
    tf = [p for p in points if p["perturbation"] == "shuffle_time_freq"]
    assert [(p["severity"], p["moved"], p["tiles"], p["tile"]) for p in tf] == [
        (0.5, 3, 6, (6, 8)), (0.1, 2, 6, (6, 8)), (1.0, 6, 6, (6, 8))]
    _, skipped = plan_severities((1, 1, 12, 24), fractions=(0.1, 0.25), tile=8)
    assert [s["reason"] for s in skipped] == [
        "moves 2 of 3 8-frame tiles, as fraction 0.1 does",
        "moves 2 of 6 6x8 tiles (bands x frames), as fraction 0.1 does"]
    for kw, match in (({"sigmas": (0.0,)}, "sigmas"), ({"fractions": (0.0,)}, "fractions"),
                      ({"time_tile": 0}, "tile size")):
        with pytest.raises(ValueError, match=match):
            plan_severities((1, 1, 12, 24), **kw)


def test_rows_cover_every_severity_of_every_branch_and_report_skipped_ones(caplog):
    """Both branches (late fusion) on 32x24 Mel and 12x24 chroma segments: fractions that
    move as many tiles as a smaller one are skipped, logged and listed; the model's flags
    come back."""
    model = tiny_model("late_fusion").train()
    data = CueSegments(2, 2, seed=3, cue="mel")
    model.set_normalization(data.norm_stats())
    bn = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    with caplog.at_level(logging.WARNING, logger="lightning_modules.texture_shape"):
        rows = severity_sweep(model, data, batch_size=5)
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in bn.items())
    assert all(tuple(r) == TEXTURE_SHAPE_COLUMNS for r in rows)
    # 3 time tiles of 8 frames: 0.1, 0.25, 0.5 all move 2. Chroma's 6x8 tiles: 6, 0.1 and
    # 0.25 move 2. Mel's 8x8 tiles: 12, moving 2, 3, 6, 12.
    expected_skips = {"mel": {("shuffle_time", 0.25), ("shuffle_time", 0.5)},
                      "chroma": {("shuffle_time", 0.25), ("shuffle_time", 0.5),
                                 ("shuffle_time_freq", 0.25)}}
    for b in ("mel", "chroma"):
        (clean,) = [r for r in rows if r["branch"] == b and r["perturbation"] == "clean"]
        assert clean["severity"] is None and clean["distortion"] == 0.0
        assert clean["clips"] == 6 and clean["segments"] == 12
        skipped = {(s["perturbation"], s["severity"]) for s in rows.skipped if s["branch"] == b}
        assert skipped == expected_skips[b], b
        for p, sizes in (("blur", DEFAULT_SIGMAS), ("shuffle_time", DEFAULT_FRACTIONS),
                         ("shuffle_time_freq", DEFAULT_FRACTIONS)):
            run = [r["severity"] for r in rows if r["branch"] == b and r["perturbation"] == p]
            assert len(run) == len(set(run))
            assert set(run) | {s for q, s in skipped if q == p} == set(sizes), (b, p)
            assert not set(run) & {s for q, s in skipped if q == p}
    for r in rows:
        assert r["acc_clip_ci_low"] <= r["acc_clip"] <= r["acc_clip_ci_high"], r
        assert 0 <= r["prob_true"] <= 1 and r["distortion"] >= 0
        if r["perturbation"] != "clean":
            assert r["distortion"] > 0, r
    # The chroma's 12 rows: time-frequency tiles are clipped to 6 bands (2 tile rows).
    assert _row(rows, "chroma", "shuffle_time_freq", 0.5)["severity_unit"] == \
        "fraction of 6x8 tiles (bands x frames) moved (3 of 6)"
    assert _row(rows, "chroma", "shuffle_time", 1.0)["severity_unit"] == \
        "fraction of 8-frame tiles moved (3 of 3)"
    assert _row(rows, "mel", "shuffle_time_freq", 0.1)["severity_unit"] == \
        "fraction of 8x8 tiles (bands x frames) moved (2 of 12)"
    logged = " ".join(rec.getMessage() for rec in caplog.records)
    assert logged.count("skipped") == 5 and "chroma shuffle_time_freq 0.25 skipped" in logged
    # Seeded and deterministic, whatever the batch size; one branch, whole clips up to a cap.
    assert severity_sweep(model, data, batch_size=12) == rows
    capped = severity_sweep(model, data, branches=["chroma"], max_segments=4)
    assert {r["branch"] for r in capped} == {"chroma"} and capped[0]["segments"] == 4
    with pytest.raises(ValueError, match="no branch"):
        severity_sweep(model, data, branches=["tempo"])


def test_severity_figure_is_written(texture_sweep, layout_sweep, tmp_path):
    rows = texture_sweep[1]
    chroma = [{**r, "branch": "chroma"} for r in layout_sweep[1]]  # a second colour
    path = save_severity_figure(tmp_path / "fig" / "severity.png", list(rows) + chroma,
                                chance=1 / 3, title="tiny models")
    assert path == tmp_path / "fig" / "severity.png"
    assert path.stat().st_size > 10_000
