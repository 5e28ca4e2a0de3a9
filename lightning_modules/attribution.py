"""Pixel attribution per branch: Grad-CAM, Guided Grad-CAM and Integrated Gradients (Captum).

Grad-CAM for a branch reads that branch's attribution layer
(``model.branch_attribution_layer``): the Mel branch's last convolution, the chroma branch's
deepest convolution that still has all 12 pitch-class rows (the default backbones pool
chroma 12 -> 6 -> 3, and 3 rows stretched over 12 cannot resolve a pitch class). The map is
upsampled to the branch's *own* input grid (:func:`upsample_map`): bilinear along time and
along Mel frequency, circular along pitch (B neighbours C) wherever a chroma map has fewer
than 12 rows. In the mid-level modes the donor's features also flow into the receiver, so
the receiver's Grad-CAM may owe part of its evidence to the other input; it is still read on
the receiver's layer and drawn on the receiver's input, which is what the thesis shows.
Guided Grad-CAM multiplies guided backpropagation on the branch's input with that branch's
upsampled, rectified Grad-CAM (as ``captum.attr.GuidedGradCam``, with the same upsampling as
Grad-CAM). Integrated Gradients (``captum.attr.IntegratedGradients``) integrates the input
gradient along the straight path from the band means (every input at once: the "no
information" input the deletion curves delete to) to the input, at the input's own
resolution.

Attribution runs with the model in ``eval()`` (batch-norm statistics are read, never
updated; dropout off) and gradients enabled, outside inference mode, so it can be called
from Lightning's validation hooks; every module's training flag is restored afterwards.

    res = attribute(model, {"mel": mel, "chroma": chroma})   # [B, 1, F, T] un-normalised
    res.maps["mel"]["gradcam"]      # [B, 128, T], in [0, 1] (max 1 per example)
    res.maps["chroma"]["guided_gradcam"]  # [B, 12, T], in [-1, 1] (max |.| 1 per example)
    res.probs, res.target           # [B, C] softmax, [B] class explained
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

METHODS = ("gradcam", "guided_gradcam", "integrated_gradients")
SIGNED = ("guided_gradcam", "integrated_gradients")  # maps normalised by max |.|
IG_STEPS = 8


@dataclass
class Attributions:
    """``maps[branch][method]``: [B, F, T] on the branch's input grid (CPU, float32);
    ``probs`` [B, C] softmax of the unperturbed inputs; ``target`` [B] the class explained."""

    maps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    probs: torch.Tensor | None = None
    target: torch.Tensor | None = None

    @property
    def branches(self) -> list[str]:
        return list(self.maps)


@contextlib.contextmanager
def attribution_mode(model: nn.Module) -> Iterator[None]:
    """``eval()``, gradients on, inference mode off; every module's ``training`` flag is
    restored on exit (even after an error). Parameters keep their ``requires_grad``."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            model.eval()
            yield
    finally:
        for m, was in flags:
            m.training = was


class _ForwardByName(nn.Module):
    """Captum calls ``forward(*inputs)`` positionally; the model takes ``mel=``/``chroma=``.
    Holds the model as a child, so guided backpropagation finds its ReLU modules."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        super().__init__()
        self.model = model
        self.names = tuple(names)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, xs)))


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _inputs_for(model, inputs: Mapping[str, torch.Tensor]) -> tuple[tuple[str, ...],
                                                                    tuple[torch.Tensor, ...]]:
    """The model's branch inputs as fresh (non-inference) float tensors on its device."""
    names = tuple(model.branch_names)
    missing = [n for n in names if inputs.get(n) is None]
    if missing:
        raise ValueError(f"attribute: mode {model.mode!r} needs inputs {list(names)}, "
                         f"missing {missing}")
    dev = model_device(model)
    xs = []
    for n in names:
        x = inputs[n]
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"attribute: {n} must be a [B, 1, F, T] map, got {tuple(x.shape)}")
        # clone(): tensors made under inference mode (Lightning validation) cannot be
        # saved for backward; a clone made outside inference mode can.
        xs.append(x.detach().to(device=dev, dtype=torch.float32).clone())
    if len({x.shape[0] for x in xs}) != 1:
        sizes = {n: x.shape[0] for n, x in zip(names, xs)}
        raise ValueError(f"attribute: batch sizes differ: {sizes}")
    return names, tuple(xs)


def normalise(maps: torch.Tensor, signed: bool = False) -> torch.Tensor:
    """Per example ([B, ...]): divide by the max (``signed``: the max of |.|); all-zero
    examples stay zero."""
    flat = maps.flatten(1)
    scale = (flat.abs() if signed else flat).amax(dim=1).clamp(min=1e-12)
    return maps / scale.view(-1, *([1] * (maps.dim() - 1)))


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    methods = tuple(str(m) for m in methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown attribution method(s) {bad or '(none)'}; choose from {METHODS}")
    return methods


def upsample_map(cam: torch.Tensor, grid: tuple[int, int], circular: bool = False) -> torch.Tensor:
    """[B, C, h, w] layer map -> [B, C, F, T] on the input grid ``(F, T)``: bilinear
    (``align_corners=False``, as ``LayerAttribution.interpolate``); with ``circular`` the
    rows wrap around (pitch classes: the row after B is C) when ``h < F``."""
    from torch.nn import functional as F

    rows, frames = int(grid[0]), int(grid[1])
    h = cam.shape[2]
    if not circular or h == rows:
        return F.interpolate(cam, size=(rows, frames), mode="bilinear", align_corners=False)
    out = F.interpolate(cam, size=(h, frames), mode="bilinear", align_corners=False)
    pos = (torch.arange(rows, dtype=torch.float64) + 0.5) * h / rows - 0.5
    lo = torch.floor(pos)
    frac = (pos - lo).to(cam.dtype).to(cam.device).view(1, 1, -1, 1)
    lo = lo.long() % h
    hi = (lo + 1) % h
    return out[:, :, lo.to(cam.device)] * (1 - frac) + out[:, :, hi.to(cam.device)] * frac


def _layer_cam(model, branch: str, names, xs, target: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of ``branch``'s attribution layer at that layer's own grid: [B, 1, h, w]."""
    from captum.attr import LayerGradCam

    layer = model.branch_attribution_layer(branch)
    return LayerGradCam(_ForwardByName(model, names), layer).attribute(
        xs, target=target, relu_attributions=False).detach()


def _to_input_grid(branch: str, names, xs, cam: torch.Tensor) -> torch.Tensor:
    from lightning_modules.base import PITCH_INPUTS

    grid = tuple(xs[names.index(branch)].shape[2:])
    return upsample_map(cam, grid, circular=branch in PITCH_INPUTS)


def gradcam(model, branch: str, names, xs, target: torch.Tensor) -> torch.Tensor:
    """Rectified Grad-CAM of ``branch``'s attribution layer, upsampled to the branch's input
    grid: [B, F, T] (un-normalised)."""
    cam = _layer_cam(model, branch, names, xs, target)
    return _to_input_grid(branch, names, xs, cam).clamp(min=0)[:, 0]


def guided_gradcam(model, branch: str, names, xs, target: torch.Tensor) -> torch.Tensor:
    """Guided backpropagation on ``branch``'s input times its rectified, upsampled Grad-CAM:
    [B, F, T] (signed, un-normalised)."""
    from captum.attr import GuidedBackprop

    cam = _to_input_grid(branch, names, xs,
                         _layer_cam(model, branch, names, xs, target).clamp(min=0))
    guided = GuidedBackprop(_ForwardByName(model, names)).attribute(xs, target=target)
    return (guided[names.index(branch)].detach() * cam)[:, 0]


def integrated_gradients_all(model, names, xs, target: torch.Tensor,
                             steps: int = IG_STEPS) -> tuple[torch.Tensor, ...]:
    """Integrated Gradients of every input from the band-mean baseline (every input at its
    band mean), ``steps`` Gauss-Legendre points: one [B, F, T] per input (signed)."""
    from captum.attr import IntegratedGradients

    baselines = tuple(getattr(model, f"{n}_mean").to(x).expand_as(x) for n, x in zip(names, xs))
    attrs = IntegratedGradients(_ForwardByName(model, names)).attribute(
        xs, baselines=baselines, target=target, n_steps=int(steps))
    return tuple(a.detach()[:, 0] for a in attrs)


def integrated_gradients(model, branch: str, names, xs, target: torch.Tensor,
                         steps: int = IG_STEPS) -> torch.Tensor:
    """:func:`integrated_gradients_all` of ``branch``'s input: [B, F, T]."""
    return integrated_gradients_all(model, names, xs, target, steps)[names.index(branch)]


def layer_grid(model, branch: str, inputs: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(rows, frames) of ``branch``'s attribution layer for inputs of this shape: the grid
    Grad-CAM is computed on before upsampling."""
    names, xs = _inputs_for(model, {k: v[:1] for k, v in inputs.items() if v is not None})
    seen = {}

    def record(module, args, output):
        seen["shape"] = tuple(output.shape[2:])

    hook = model.branch_attribution_layer(branch).register_forward_hook(record)
    try:
        with torch.no_grad():
            model(**dict(zip(names, xs)))
    finally:
        hook.remove()
    return seen["shape"]


_METHOD_FNS = {"gradcam": gradcam, "guided_gradcam": guided_gradcam,
               "integrated_gradients": integrated_gradients}


def attribute(model, inputs: Mapping[str, torch.Tensor], target=None,
              methods: Sequence[str] = METHODS, branches: Sequence[str] | None = None,
              normalize: bool = True, batch_size: int | None = None) -> Attributions:
    """Attribution maps for every branch of ``model`` (a ``GenreClassifier``).

    Args:
        inputs: ``{"mel": [B, 1, 128, T], "chroma": [B, 1, 12, T]}`` un-normalised, as in
            batches (extra keys are ignored; a single-branch mode needs only its input).
        target: class explained per example: ``None`` (the predicted class), an int, or a
            [B] tensor.
        methods: among :data:`METHODS`.
        branches: default every branch of the model.
        normalize: Grad-CAM divided by its max per example ([0, 1]); the signed methods
            (:data:`SIGNED`) by their max |.| ([-1, 1]). ``False`` keeps raw values (to
            stitch or compare examples).
        batch_size: examples per backward pass (default: all at once).

    Returns :class:`Attributions` (CPU tensors). The model's training flags, batch-norm
    statistics and gradients are left as they were.
    """
    methods = _check_methods(methods)
    branches = list(model.branch_names if branches is None else branches)
    for b in branches:
        model.branch_attribution_layer(b)  # clear error for a missing branch or a vector backbone
    with attribution_mode(model), warnings.catch_warnings():
        # Captum announces that it sets requires_grad on inputs and hooks ReLUs: expected.
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        warnings.filterwarnings("ignore", message=".*Setting backward hooks on ReLU.*")
        names, xs = _inputs_for(model, inputs)
        n = xs[0].shape[0]
        step = n if not batch_size else max(1, int(batch_size))
        probs, targets = [], []
        out: dict[str, dict[str, list]] = {b: {m: [] for m in methods} for b in branches}
        grads_before = {id(p): p.grad for p in model.parameters()}
        for i in range(0, n, step):
            chunk = tuple(x[i:i + step] for x in xs)
            with torch.no_grad():
                p = model(**dict(zip(names, chunk))).float().softmax(dim=1)
            t = _target_for(target, p, i, step)
            probs.append(p.cpu())
            targets.append(t.cpu())
            # Integrated Gradients attributes every input in one pass: computed once.
            ig = integrated_gradients_all(model, names, chunk, t) \
                if "integrated_gradients" in methods else None
            for b in branches:
                for m in methods:
                    x = ig[names.index(b)] if m == "integrated_gradients" else \
                        _METHOD_FNS[m](model, b, names, chunk, t)
                    out[b][m].append(x.float().cpu())
        # Captum differentiates w.r.t. inputs and layer outputs only (torch.autograd.grad),
        # but keep parameter .grad untouched even if that ever changes.
        for p in model.parameters():
            p.grad = grads_before[id(p)]
        # Still outside inference mode: the results are ordinary tensors.
        maps = {}
        for b in branches:
            maps[b] = {}
            for m in methods:
                x = torch.cat(out[b][m])
                maps[b][m] = normalise(x, signed=m in SIGNED) if normalize else x
        return Attributions(maps=maps, probs=torch.cat(probs), target=torch.cat(targets))


def _target_for(target, probs: torch.Tensor, start: int, step: int) -> torch.Tensor:
    b = probs.shape[0]
    if target is None:
        return probs.argmax(dim=1)
    if isinstance(target, int):
        return torch.full((b,), int(target), dtype=torch.long, device=probs.device)
    t = torch.as_tensor(target).reshape(-1)
    if t.numel() == 1:
        return t.expand(b).long().to(probs.device)
    return t[start:start + step].long().to(probs.device)
