"""Interaction modes: one class per mode, each only its wiring (see ``base.py``).

Shapes below are for the default ``parallel_cnn``/``serial_cnn`` backbone (channels
16, 32, 64, 128; frequency halved down to >= 3 bins, time halved per stage), a 3-s
segment (T = 130), ``tap=2``:

    mel    [B, 1, 128, 130] -> stage 1 [B, 16, 64, 65] -> stage 2 [B, 32, 32, 33]
                            -> stage 3 [B, 64, 16, 17] -> stage 4 [B, 128, 8, 9]
    chroma [B, 1,  12, 130] -> stage 1 [B, 16,  6, 65] -> stage 2 [B, 32,  3, 33]
                            -> stage 3 [B, 64,  3, 17] -> stage 4 [B, 128, 3, 9]
    head: per branch mean + max over (F, T) -> [B, 256]; concat branches -> Linear -> [B, C]
"""
from __future__ import annotations

from lightning_modules.base import GenreClassifier


class LateFusion(GenreClassifier):
    """``late_fusion``: the traditional multi-input model. Both branches run independently
    on their own input; their pooled last-stage features ([B, 256] each) are concatenated
    before the classifier ([B, 512] -> [B, C]). ``tap`` is ignored."""

    mode = "late_fusion"
    branch_names = ("mel", "chroma")
    receives = {}


class MidIntoMel(GenreClassifier):
    """``mid_into_mel``: one-way MLFI into the Mel branch. The chroma features after stage
    ``tap`` ([B, 32, 3, 33]) are resized to the Mel grid ([B, 32, 32, 33]) and concatenated
    onto the Mel features ([B, 32, 32, 33] -> [B, 64, 32, 33]), which feed Mel stage
    ``tap + 1`` (widened by the chroma channels). The chroma branch continues unchanged;
    both branches feed the head."""

    mode = "mid_into_mel"
    branch_names = ("mel", "chroma")
    receives = {"mel": "chroma"}


class MidIntoChroma(GenreClassifier):
    """``mid_into_chroma``: one-way MLFI into the chroma branch. The Mel features after stage
    ``tap`` ([B, 32, 32, 33]) are average-pooled to the chroma grid ([B, 32, 3, 33]) and
    concatenated onto the chroma features ([B, 64, 3, 33]), which feed chroma stage
    ``tap + 1``. The Mel branch continues unchanged; both branches feed the head."""

    mode = "mid_into_chroma"
    branch_names = ("mel", "chroma")
    receives = {"chroma": "mel"}


class MidTwoWay(GenreClassifier):
    """``mid_two_way``: two-way MLFI. Each branch receives the other's stage-``tap``
    features (both taken before either join): Mel stage ``tap + 1`` reads
    [B, 32 + 32, 32, 33], chroma stage ``tap + 1`` reads [B, 32 + 32, 3, 33]."""

    mode = "mid_two_way"
    branch_names = ("mel", "chroma")
    receives = {"mel": "chroma", "chroma": "mel"}


class MelOnly(GenreClassifier):
    """``mel_only``: reference with the Mel branch alone ([B, 256] pooled -> [B, C]).
    The chroma input is accepted and ignored; ``tap`` is ignored."""

    mode = "mel_only"
    branch_names = ("mel",)
    receives = {}


class ChromaOnly(GenreClassifier):
    """``chroma_only``: reference with the chroma branch alone ([B, 256] pooled -> [B, C]).
    The Mel input is accepted and ignored; ``tap`` is ignored."""

    mode = "chroma_only"
    branch_names = ("chroma",)
    receives = {}


MODES: dict[str, type[GenreClassifier]] = {
    cls.mode: cls for cls in (LateFusion, MidIntoMel, MidIntoChroma, MidTwoWay, MelOnly,
                              ChromaOnly)
}


def mode_class(mode: str) -> type[GenreClassifier]:
    """The class registered for ``mode``; unknown names list the valid ones."""
    if mode not in MODES:
        raise ValueError(f"unknown model mode {mode!r}; valid modes: {', '.join(MODES)}")
    return MODES[mode]


def build_model(mode: str, **kwargs) -> GenreClassifier:
    """``MODES[mode](**kwargs)`` (kwargs: ``GenreClassifier`` arguments, ``labels`` required)."""
    return mode_class(mode)(**kwargs)


def load_model(checkpoint_path, map_location="cpu") -> GenreClassifier:
    """Rebuild a model from a Lightning checkpoint: the mode (from the checkpoint's
    hyperparameters) picks the class; weights, normalisation buffers and ``extra`` come
    back. Returned in ``eval()`` mode."""
    import torch

    ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    hparams = ckpt.get("hyper_parameters") or {}
    mode = hparams.get("mode")
    if mode is None:
        raise ValueError(f"{checkpoint_path}: no 'mode' in the checkpoint's hyperparameters; "
                         f"it was not written by a lightning_modules model")
    model = mode_class(mode).load_from_checkpoint(checkpoint_path, map_location=map_location)
    return model.eval()
