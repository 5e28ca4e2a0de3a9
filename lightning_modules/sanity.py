"""Sanity checks for attribution methods (Adebayo et al. 2018, "Sanity Checks for Saliency
Maps"): an explanation of a trained model must depend on what the model learned.

- **Cascading model randomisation** (:func:`cascading_randomisation`): on a copy of the
  model, the blocks of :func:`randomisation_blocks` are re-initialised cumulatively from the
  output down to the input (head, last stage, ..., stage 1; a mid-level join goes with the
  stage it feeds). After each block every method's maps are recomputed for the class the
  *trained* model predicts, and compared with the trained maps.
- **Data (label) randomisation** (:func:`fit_permuted_labels`, :func:`label_randomisation`):
  a re-initialised copy is trained on the same segments with the clip labels permuted across
  clips, so it can only memorise; its maps are compared with the trained model's for the
  same class.

Maps are compared by the per-example Spearman rank correlation of their absolute values
(:func:`rank_correlation`; a constant map correlates 0 with anything), averaged over the
examples, with a 95 % percentile bootstrap CI over the examples
(:func:`lightning_modules.ablations.bootstrap_ci`).

Pass rule (:func:`summarise`): a (branch, method) passes when its mean rank correlation with
the trained maps is below ``threshold`` (default 0.5) after the last cascade step and, when
the label check was run, for the label-randomised model. A method whose maps do not depend
on the weights (e.g. the input itself, an edge detector) keeps a correlation near 1 and
fails.

    rows = cascading_randomisation(model, {"mel": mel, "chroma": chroma})
    random_model, acc = fit_permuted_labels(model, train_dataset, epochs=20)
    rows += label_randomisation(model, random_model, {"mel": mel, "chroma": chroma})
    summarise(rows)["mel/gradcam"]  # {"final_cascading": ..., "labels": ..., "passes": ...}
"""
from __future__ import annotations

import copy
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lightning_modules.ablations import bootstrap_ci
from lightning_modules.attribution import (
    METHODS,
    Attributions,
    attribute,
    attribution_mode,
    model_device,
)

SANITY_COLUMNS = ("check", "step", "block", "branch", "method", "spearman", "spearman_ci_low",
                  "spearman_ci_high", "examples")
DEFAULT_THRESHOLD = 0.5

# ``attribute``'s calling convention, so a caller can inject another attribution method.
AttributeFn = Callable[..., Attributions]


# ------------------------------------------------------------------------- blocks
def randomisation_blocks(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """The cascade order, from the output down to the input: ``("head", [model.head])``,
    then ``(f"stage{s}", [stage s of every branch, the joins that feed stage s])`` for
    s = last .. 1. A join (``model.joins[receiver]``, after stage ``model.tap``) belongs to
    stage ``tap + 1``, so it is randomised together with the stage it feeds.

    Raises ``ValueError`` when the branches have different numbers of stages."""
    counts = {name: branch.num_stages for name, branch in model.branches.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"randomisation_blocks: the branches have different numbers of "
                         f"stages {counts}; the cascade needs equal counts")
    num_stages = next(iter(counts.values()))
    joins = list(model.joins.values())
    join_stage = int(model.tap) + 1
    if joins and not 2 <= join_stage <= num_stages:
        raise ValueError(f"randomisation_blocks: joins feed stage {join_stage}, but the "
                         f"branches have stages 1..{num_stages}")
    blocks: list[tuple[str, list[nn.Module]]] = [("head", [model.head])]
    for s in range(num_stages, 0, -1):
        modules = [branch.stages[s - 1] for branch in model.branches.values()]
        if s == join_stage:
            modules += joins
        blocks.append((f"stage{s}", modules))
    return blocks


def reinitialise(modules: Sequence[nn.Module], seed: int) -> int:
    """Re-initialise, in place, every submodule of ``modules`` that has ``reset_parameters``
    (convolutions, linear layers, batch norm, whose running statistics are reset too), with
    the global RNG seeded by ``seed`` inside ``torch.random.fork_rng``: deterministic, and the
    caller's RNG state is unchanged. Zero-initialised layers (the FiLM join's output conv)
    get their layer's default, non-zero initialisation. Returns the number of modules reset.

    Raises ``ValueError`` when a parameter belongs to no module with ``reset_parameters``
    (it would keep its trained value and hide a failed check)."""
    seen: dict[int, nn.Module] = {}
    for module in modules:
        for m in module.modules():
            seen.setdefault(id(m), m)
    resettable = [m for m in seen.values() if callable(getattr(m, "reset_parameters", None))]
    covered = {id(p) for m in resettable for p in m.parameters()}
    left = [f"{type(m).__name__}.{n}" for m in seen.values()
            for n, p in m.named_parameters(recurse=False) if id(p) not in covered]
    if left:
        raise ValueError(f"reinitialise: parameters without a reset_parameters module would "
                         f"keep their values: {left}")
    cuda = sorted({p.device.index or 0 for m in resettable for p in m.parameters()
                   if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(seed))
        with torch.no_grad():
            for m in resettable:
                m.reset_parameters()
    return len(resettable)


# -------------------------------------------------------------------- correlation
def _as_rows(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=float)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"rank_correlation: need [B, ...] maps, got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


def rank_correlation(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray,
                     absolute: bool = False) -> np.ndarray:
    """Per-example Spearman rank correlation of two [B, ...] maps: [B] floats.

    Ties get average ranks (``scipy.stats.rankdata``); a row that is constant in either map
    gives 0.0. ``absolute``: rank |a| and |b| (signed maps such as Guided Grad-CAM)."""
    from scipy.stats import rankdata

    x, y = _as_rows(a), _as_rows(b)
    if x.shape != y.shape:
        raise ValueError(f"rank_correlation: shapes differ: {np.shape(a)} vs {np.shape(b)}")
    if absolute:
        x, y = np.abs(x), np.abs(y)
    rx = rankdata(x, axis=1)
    ry = rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    num = (rx * ry).sum(axis=1)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    rho = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.clip(rho, -1.0, 1.0)


# ------------------------------------------------------------------------- checks
def _predicted(model: nn.Module, inputs: Mapping[str, torch.Tensor],
               batch_size: int | None) -> torch.Tensor:
    """The class ``model`` predicts per example (eval mode), [B] on the CPU."""
    missing = [n for n in model.branch_names if inputs.get(n) is None]
    if missing:
        raise ValueError(f"sanity checks: mode {model.mode!r} needs inputs "
                         f"{list(model.branch_names)}, missing {missing}")
    x = {n: inputs[n] for n in model.branch_names}
    n = next(iter(x.values())).shape[0]
    with attribution_mode(model):
        probs = model.segment_probs(x, batch_size=int(batch_size or n))
    return probs.argmax(dim=1)


def _maps(attribute_fn: AttributeFn, model: nn.Module, inputs: Mapping[str, torch.Tensor],
          target: torch.Tensor, methods: Sequence[str],
          batch_size: int | None) -> dict[str, dict[str, torch.Tensor]]:
    res = attribute_fn(model, inputs, target=target, methods=tuple(methods), normalize=False,
                       batch_size=batch_size)
    return res.maps


def _compare(reference: Mapping[str, Mapping[str, torch.Tensor]],
             other: Mapping[str, Mapping[str, torch.Tensor]], check: str, step: int | None,
             block: str, seed: int) -> list[dict]:
    rows = []
    for branch, per in reference.items():
        for method, ref in per.items():
            rho = rank_correlation(ref, other[branch][method], absolute=True)
            lo, hi = bootstrap_ci(rho, seed)
            rows.append({"check": check, "step": step, "block": block, "branch": branch,
                         "method": method, "spearman": float(rho.mean()),
                         "spearman_ci_low": lo, "spearman_ci_high": hi,
                         "examples": int(len(rho))})
    return rows


def _fixed_target(model: nn.Module, inputs: Mapping[str, torch.Tensor], target,
                  batch_size: int | None) -> torch.Tensor:
    if target is None:
        return _predicted(model, inputs, batch_size)
    return torch.as_tensor(target).long()


def cascading_randomisation(model: nn.Module, inputs: Mapping[str, torch.Tensor],
                            methods: Sequence[str] = METHODS, target=None, seed: int = 0,
                            batch_size: int | None = None,
                            attribute_fn: AttributeFn = attribute) -> list[dict]:
    """Cascading model randomisation (module docstring) on a deep copy of ``model``; the
    caller's model, its parameters and batch-norm statistics are left as they were.

    Args:
        inputs: ``{"mel": [B, 1, F, T], "chroma": [B, 1, 12, T]}`` un-normalised.
        methods: attribution methods, passed to ``attribute_fn``.
        target: class explained (``None``: the trained model's prediction, an int or a [B]
            tensor), kept for every randomised copy.
        seed: block ``k`` (1-based) is re-initialised with seed ``seed + k``; also the
            bootstrap's seed.
        batch_size: examples per backward pass (default: all at once).
        attribute_fn: called like :func:`~lightning_modules.attribution.attribute`
            (``model, inputs, target=, methods=, normalize=False, batch_size=``).

    Returns one row (``SANITY_COLUMNS``) per step, branch and method: ``check="cascading"``,
    ``step`` k, ``block`` the block randomised last, ``spearman`` the mean over examples.
    """
    work = copy.deepcopy(model)
    target = _fixed_target(work, inputs, target, batch_size)
    trained = _maps(attribute_fn, work, inputs, target, methods, batch_size)
    rows: list[dict] = []
    for k, (name, modules) in enumerate(randomisation_blocks(work), start=1):
        reinitialise(modules, int(seed) + k)
        randomised = _maps(attribute_fn, work, inputs, target, methods, batch_size)
        rows += _compare(trained, randomised, "cascading", k, name, int(seed))
    return rows


def label_randomisation(model: nn.Module, random_model: nn.Module,
                        inputs: Mapping[str, torch.Tensor], methods: Sequence[str] = METHODS,
                        target=None, batch_size: int | None = None, seed: int = 0,
                        attribute_fn: AttributeFn = attribute) -> list[dict]:
    """Data randomisation: maps of ``model`` vs ``random_model`` (from
    :func:`fit_permuted_labels`) for the same ``target`` (default: ``model``'s
    prediction). One row per branch and method: ``check="labels"``, ``step=None``,
    ``block="all"``; ``seed`` is the bootstrap's. Neither model is modified."""
    target = _fixed_target(model, inputs, target, batch_size)
    trained = _maps(attribute_fn, model, inputs, target, methods, batch_size)
    randomised = _maps(attribute_fn, random_model, inputs, target, methods, batch_size)
    return _compare(trained, randomised, "labels", None, "all", int(seed))


def fit_permuted_labels(model: nn.Module, dataset, epochs: int = 20, batch_size: int = 32,
                        lr: float = 3e-3, seed: int = 0,
                        weight_decay: float = 0.0) -> tuple[nn.Module, float]:
    """Train a fully re-initialised deep copy of ``model`` on ``dataset``'s segments with the
    clip labels permuted across clips (every segment of a clip gets the clip's new label).

    ``dataset``: a ``SegmentDataset``-like object (``clip_pos`` [N] clip of each segment,
    ``labels`` [n_clips], ``batch(indices)`` -> {"mel", "chroma", "label", "clip"}). AdamW
    (``lr``, ``weight_decay``), plain cross-entropy, ``epochs`` passes over the segments in
    shuffled batches of ``batch_size``, on ``model``'s device; deterministic for a ``seed``
    (the global RNG state is restored). The normalisation buffers (``mel_mean``, ...) are
    the trained model's; ``model`` is not modified.

    Returns (the copy in eval mode, its segment accuracy on the permuted labels: near 1 when
    it memorised them, near chance when it did not)."""
    clip_pos = np.asarray(dataset.clip_pos, dtype=np.int64)
    clip_labels = np.asarray(dataset.labels, dtype=np.int64)
    if len(clip_pos) == 0:
        raise ValueError("fit_permuted_labels: the dataset has no segments")
    rng = np.random.default_rng(int(seed))
    permuted = torch.from_numpy(clip_labels[rng.permutation(len(clip_labels))][clip_pos])
    random_model = copy.deepcopy(model)
    names = tuple(random_model.branch_names)
    dev = model_device(random_model)
    blocks = [m for _, modules in randomisation_blocks(random_model) for m in modules]
    n, step = len(clip_pos), max(1, int(batch_size))
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(seed))
        reinitialise(blocks, int(seed))
        decay = [p for p in random_model.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in random_model.parameters() if p.requires_grad and p.ndim <= 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(weight_decay)},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=float(lr))
        gen = torch.Generator().manual_seed(int(seed))
        with torch.inference_mode(False), torch.enable_grad():
            random_model.train()
            for _ in range(int(epochs)):
                order = torch.randperm(n, generator=gen).numpy()
                for i in range(0, n, step):
                    idx = order[i:i + step]
                    batch = dataset.batch(idx)
                    x = {k: batch[k].to(dev, torch.float32) for k in names}
                    y = permuted[torch.from_numpy(idx)].to(dev)
                    loss = F.cross_entropy(random_model(**x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        opt.zero_grad(set_to_none=True)
    random_model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, n, step):
            idx = np.arange(i, min(n, i + step))
            batch = dataset.batch(idx)
            x = {k: batch[k].to(dev, torch.float32) for k in names}
            pred = random_model(**x).argmax(dim=1).cpu()
            correct += int((pred == permuted[torch.from_numpy(idx)]).sum())
    return random_model, correct / n


# ------------------------------------------------------------------------ summary
def summarise(rows: Sequence[Mapping], threshold: float = DEFAULT_THRESHOLD) -> dict[str, dict]:
    """Per ``f"{branch}/{method}"``: ``final_cascading`` (mean Spearman at the last cascade
    step, ``None`` without cascading rows), ``final_block`` (the block of that step),
    ``labels`` (mean Spearman of the label check, ``None`` without it) and ``passes``.

    Rule: a method passes when every check present is below ``threshold``: the correlation
    after full cascading randomisation and, when the label check was run, the correlation
    with the label-randomised model. A pair with neither check does not pass."""
    out: dict[str, dict] = {}
    for r in rows:
        key = f"{r['branch']}/{r['method']}"
        entry = out.setdefault(key, {"final_cascading": None, "final_block": None,
                                     "labels": None, "passes": False, "_step": -1})
        if r["check"] == "cascading" and int(r["step"]) > entry["_step"]:
            entry.update(final_cascading=float(r["spearman"]), final_block=r["block"],
                         _step=int(r["step"]))
        elif r["check"] == "labels":
            entry["labels"] = float(r["spearman"])
    for entry in out.values():
        del entry["_step"]
        present = [v for v in (entry["final_cascading"], entry["labels"]) if v is not None]
        entry["passes"] = bool(present) and all(v < threshold for v in present)
    return out
