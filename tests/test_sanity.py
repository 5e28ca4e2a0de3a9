"""Model- and data-randomisation sanity checks for the attribution methods (Adebayo et al.
2018) on the tiny cue models of ``test_attribution``: a ``mel_only`` model that learned
where a bright shape is in a noisy log-Mel."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import stats

from lightning_modules import build_model
from lightning_modules.attribution import METHODS, attribute
from lightning_modules.sanity import (
    SANITY_COLUMNS,
    cascading_randomisation,
    fit_permuted_labels,
    label_randomisation,
    randomisation_blocks,
    rank_correlation,
    reinitialise,
    summarise,
)
from tests.test_attribution import LABELS, TINY, CueSegments, tiny_model, train_tiny


@pytest.fixture(scope="module")
def trained():
    """(mel_only model trained on the Mel cue, its validation inputs as one batch)."""
    model, valid = train_tiny("mel_only", "mel")
    return model, valid.batch(np.arange(len(valid)))


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def with_input_map(model, inputs, target=None, methods=METHODS, normalize=False,
                   batch_size=None):
    """``attribute`` plus a method ``"input"`` whose map is the input itself: it ignores the
    model, like an edge detector."""
    real = [m for m in methods if m != "input"]
    res = attribute(model, inputs, target=target, methods=real, normalize=normalize,
                    batch_size=batch_size)
    for branch in res.maps:
        res.maps[branch]["input"] = inputs[branch][:, 0].detach().float().cpu()
    return res


# --------------------------------------------------------------------- correlation
def test_rank_correlation_ties_constant_rows_and_scipy():
    g = np.random.default_rng(0)
    a, b = g.normal(size=(2, 5, 7)), g.normal(size=(2, 5, 7))
    rho = rank_correlation(a, b)
    assert rho.shape == (2,)
    for i in range(2):
        assert rho[i] == pytest.approx(stats.spearmanr(a[i].ravel(), b[i].ravel())[0], abs=1e-12)
    # Ties get average ranks, as scipy's.
    x = np.array([[0.0, 0.0, 0.0, 1.0, 2.0, 2.0]])
    y = np.array([[0.0, 1.0, 0.0, 3.0, 2.0, 5.0]])
    assert rank_correlation(x, y)[0] == pytest.approx(stats.spearmanr(x[0], y[0])[0], abs=1e-12)
    # A constant row (an all-zero Grad-CAM) correlates 0, not nan, with anything.
    flat = torch.zeros(2, 4, 3)
    other = torch.arange(24, dtype=torch.float).view(2, 4, 3)
    assert rank_correlation(flat, other).tolist() == [0.0, 0.0]
    assert rank_correlation(flat, flat).tolist() == [0.0, 0.0]
    # Signed maps: a sign flip is a perfect anti-correlation, unless absolute values are ranked.
    assert rank_correlation(-other, other).tolist() == pytest.approx([-1.0, -1.0])
    assert rank_correlation(-other, other, absolute=True).tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="shapes differ"):
        rank_correlation(np.zeros((2, 3)), np.zeros((2, 4)))


def test_trained_maps_correlate_one_with_themselves(trained):
    model, b = trained
    first = attribute(model, b, methods=METHODS, normalize=False)
    again = attribute(model, b, methods=METHODS, normalize=False)
    for method in METHODS:
        rho = rank_correlation(first.maps["mel"][method], again.maps["mel"][method],
                               absolute=True)
        assert rho.min() > 0.999, method


# ----------------------------------------------------------------------- blocks
def test_blocks_run_from_the_head_down_and_the_join_goes_with_the_stage_it_feeds():
    model = build_model("mid_into_chroma", labels=LABELS, backbone="serial_cnn",
                        backbone_kwargs=TINY, tap=1, head_dropout=0.0, join="film",
                        inputs={"mel": 32, "chroma": 12})
    blocks = randomisation_blocks(model)
    assert [name for name, _ in blocks] == ["head", "stage2", "stage1"]
    by_name = dict(blocks)
    assert by_name["head"] == [model.head]
    assert by_name["stage2"] == [model.branches["mel"].stages[1],
                                 model.branches["chroma"].stages[1], model.joins["chroma"]]
    assert by_name["stage1"] == [model.branches["mel"].stages[0],
                                 model.branches["chroma"].stages[0]]
    # Every parameter is in exactly one block.
    ids = [id(p) for _, modules in blocks for m in modules for p in m.parameters()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    uneven = build_model("late_fusion", labels=LABELS, backbone="serial_cnn",
                         backbone_kwargs=TINY, mel_backbone_kwargs={"channels": [8, 16, 16]},
                         inputs={"mel": 32, "chroma": 12})
    with pytest.raises(ValueError, match="different numbers of stages"):
        randomisation_blocks(uneven)


def test_reinitialise_is_seeded_keeps_the_rng_and_unzeroes_the_film_join():
    model = build_model("mid_into_chroma", labels=LABELS, backbone="serial_cnn",
                        backbone_kwargs=TINY, tap=1, head_dropout=0.0, join="film",
                        inputs={"mel": 32, "chroma": 12})
    out_conv = model.joins["chroma"].generator[2]
    assert not out_conv.weight.any() and not out_conv.bias.any()  # identity at first
    bn = model.branches["mel"].stages[0].features[0][1]
    bn.running_mean.fill_(3.0)
    bn.running_var.fill_(5.0)
    everything = [m for _, modules in randomisation_blocks(model) for m in modules]
    rng = torch.get_rng_state()
    a, b, c = (copy.deepcopy(model) for _ in range(3))
    n = reinitialise([m for _, ms in randomisation_blocks(a) for m in ms], seed=5)
    reinitialise([m for _, ms in randomisation_blocks(b) for m in ms], seed=5)
    reinitialise([m for _, ms in randomisation_blocks(c) for m in ms], seed=6)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG stream is untouched
    assert n == sum(hasattr(m, "reset_parameters") for e in everything for m in e.modules())
    assert_same_state(state(a), state(b))
    assert not torch.equal(a.head[1].weight, c.head[1].weight)
    gen = a.joins["chroma"].generator[2]
    assert gen.weight.abs().mean() > 1e-3 and gen.bias.abs().mean() > 1e-3
    a_bn = a.branches["mel"].stages[0].features[0][1]
    assert not a_bn.running_mean.any() and torch.equal(a_bn.running_var,
                                                       torch.ones_like(a_bn.running_var))
    # The normalisation buffers are no block's: they stay.
    assert torch.equal(a.mel_mean, model.mel_mean) and torch.equal(a.mel_std, model.mel_std)
    # A parameter no reset_parameters reaches would keep its trained value: refused.
    scaled = torch.nn.Module()
    scaled.scale = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="keep their values"):
        reinitialise([model.head, scaled], seed=0)


# ----------------------------------------------------------------------- cascade
def test_cascade_passes_gradcam_and_leaves_the_callers_model_alone(trained):
    model, b = trained
    before = state(model)
    rows = cascading_randomisation(model, b, methods=METHODS, seed=0)
    assert_same_state(before, state(model))
    assert not model.training
    n = len(b["label"])
    steps = [(r["step"], r["block"]) for r in rows if r["method"] == "gradcam"]
    assert steps == [(1, "head"), (2, "stage2"), (3, "stage1")]
    assert {(r["step"], r["branch"], r["method"]) for r in rows} == \
        {(s, "mel", m) for s in (1, 2, 3) for m in METHODS}
    assert len(rows) == 3 * len(METHODS)
    for r in rows:
        assert set(r) == set(SANITY_COLUMNS) and r["check"] == "cascading"
        assert r["examples"] == n
        assert r["spearman_ci_low"] <= r["spearman"] <= r["spearman_ci_high"]
    final = {r["method"]: r["spearman"] for r in rows if r["step"] == 3}
    assert final["gradcam"] < 0.5, final
    summary = summarise(rows)
    assert summary["mel/gradcam"]["passes"] and summary["mel/gradcam"]["labels"] is None
    assert summary["mel/gradcam"]["final_cascading"] == final["gradcam"]
    assert summary["mel/gradcam"]["final_block"] == "stage1"
    # Seeded: the same numbers again.
    again = cascading_randomisation(model, b, methods=("gradcam",), seed=0)
    assert [r["spearman"] for r in again] == [r["spearman"] for r in rows
                                              if r["method"] == "gradcam"]


def test_a_model_independent_map_fails_the_check(trained):
    model, b = trained
    rows = cascading_randomisation(model, b, methods=("gradcam", "input"),
                                   attribute_fn=with_input_map)
    inputs_rows = [r for r in rows if r["method"] == "input"]
    assert len(inputs_rows) == 3
    assert all(r["spearman"] > 0.999 for r in inputs_rows)
    summary = summarise(rows)
    assert summary["mel/gradcam"]["passes"]
    assert not summary["mel/input"]["passes"]
    assert summary["mel/input"]["final_cascading"] > 0.999


def test_two_branch_cascade_has_a_row_per_step_branch_and_method():
    model = tiny_model("mid_two_way").eval()
    g = torch.Generator().manual_seed(0)
    inputs = {"mel": -60 + 8 * torch.randn(4, 1, 32, 24, generator=g),
              "chroma": torch.rand(4, 1, 12, 24, generator=g)}
    rows = cascading_randomisation(model, inputs, methods=METHODS, target=1, batch_size=2)
    assert {(r["step"], r["block"], r["branch"], r["method"]) for r in rows} == \
        {(s, blk, br, m) for s, blk in ((1, "head"), (2, "stage2"), (3, "stage1"))
         for br in ("mel", "chroma") for m in METHODS}
    assert len(rows) == 3 * 2 * len(METHODS)
    with pytest.raises(ValueError, match="missing \\['chroma'\\]"):
        cascading_randomisation(model, {"mel": inputs["mel"]}, methods=("gradcam",))


# ------------------------------------------------------------------------ labels
def test_permuted_labels_model_is_new_keeps_the_normalisation_and_memorises(trained):
    model, b = trained
    train = CueSegments(8, 4, seed=0, cue="mel")
    before = state(model)
    random_model, acc = fit_permuted_labels(model, train, epochs=25, seed=0)
    assert_same_state(before, state(model))
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
    # 24 clips with shuffled labels: memorised well above chance (1/3).
    assert acc >= 0.8, acc
    assert not random_model.training
    for (name, p), (_, q) in zip(model.named_parameters(), random_model.named_parameters()):
        assert not torch.equal(p, q), name
    for name in ("mel_mean", "mel_std", "chroma_mean", "chroma_std"):
        assert torch.equal(getattr(random_model, name), getattr(model, name)), name

    rows = label_randomisation(model, random_model, b, methods=METHODS)
    assert [(r["check"], r["step"], r["block"], r["branch"]) for r in rows] == \
        [("labels", None, "all", "mel")] * len(METHODS)
    assert [r["method"] for r in rows] == list(METHODS)
    assert all(r["examples"] == len(b["label"]) for r in rows)
    labels = {r["method"]: r["spearman"] for r in rows}
    assert labels["gradcam"] < 0.5, labels
    assert_same_state(before, state(model))

    # Seeded: the same permutation, initialisation and batches give the same model.
    short_a, acc_a = fit_permuted_labels(model, train, epochs=1, seed=3)
    short_b, acc_b = fit_permuted_labels(model, train, epochs=1, seed=3)
    assert acc_a == acc_b
    assert_same_state(state(short_a), state(short_b))


# ----------------------------------------------------------------------- summary
def test_summarise_needs_every_check_below_the_threshold():
    def row(check, step, method, rho):
        return {"check": check, "step": step, "block": "b", "branch": "mel", "method": method,
                "spearman": rho, "spearman_ci_low": rho, "spearman_ci_high": rho,
                "examples": 4}

    rows = [row("cascading", 1, "a", 0.9), row("cascading", 2, "a", 0.2),
            row("labels", None, "a", 0.7),
            row("cascading", 2, "b", 0.1), row("cascading", 1, "b", 0.8),
            row("labels", None, "b", 0.3),
            row("cascading", 1, "c", 0.45)]
    s = summarise(rows)
    assert s["mel/a"] == {"final_cascading": 0.2, "final_block": "b", "labels": 0.7,
                          "passes": False}
    assert s["mel/b"]["final_cascading"] == 0.1 and s["mel/b"]["passes"]
    assert s["mel/c"]["labels"] is None and s["mel/c"]["passes"]
    assert not summarise(rows, threshold=0.4)["mel/c"]["passes"]
