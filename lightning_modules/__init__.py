"""Models: backbone registry, fusion op, shared LightningModule, one class per mode."""
from lightning_modules.backbones import (
    BACKBONES,
    StagedBackbone,
    backbone_input_kind,
    build_backbone,
    register_backbone,
)
from lightning_modules.base import GenreClassifier
from lightning_modules.fusion import Join, join
from lightning_modules.metrics import ClipVoting
from lightning_modules.modes import (
    MODES,
    ChromaOnly,
    LateFusion,
    MelOnly,
    MidIntoChroma,
    MidIntoMel,
    MidTwoWay,
    build_model,
    load_model,
    mode_class,
)

__all__ = [
    "BACKBONES", "StagedBackbone", "backbone_input_kind", "build_backbone",
    "register_backbone", "GenreClassifier", "Join", "join", "ClipVoting", "MODES",
    "ChromaOnly", "LateFusion", "MelOnly", "MidIntoChroma", "MidIntoMel", "MidTwoWay",
    "build_model", "load_model", "mode_class",
]
