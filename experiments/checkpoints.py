"""Entry points that start from a checkpoint: its stored config + command-line overrides."""
from __future__ import annotations

from pathlib import Path

from datamodules.errors import UserError
from experiments.config import ConfigError, _split_word, compose_on


def checkpoint_composer(defaults: dict):
    """A ``main_guard`` composer: ``checkpoint=PATH`` is required; other ``key=value`` words
    override the training config stored in the checkpoint; ``defaults`` are this entry
    point's own keys (``split``, ``files``, ``out``...)."""

    def compose(argv, extra=None):
        argv = list(argv)
        ckpt = None
        rest = []
        for w in argv:
            key, value, _ = _split_word(w)
            if key == "checkpoint":
                ckpt = value
            else:
                rest.append(w)
        if not ckpt:
            raise ConfigError("checkpoint=PATH is required (a .ckpt from a run's checkpoints/)")
        paths = checkpoint_paths(ckpt)
        stored = read_stored_config(paths[0])
        own = {**defaults, "checkpoint": str(paths[0]),
               "checkpoints": [str(p) for p in paths]}
        return compose_on(stored, rest, extra=own)

    return compose


def checkpoint_paths(value: str) -> list[Path]:
    """``checkpoint=`` as one path, a list ``[a.ckpt,b.ckpt]`` or a glob pattern (an
    ensemble: the first one's stored config is used); each must exist."""
    import glob

    value = str(value).strip().strip("'\"")  # quoted on the command line to stop the shell
    if value.startswith("[") and value.endswith("]"):
        names = [v.strip().strip("'\"") for v in value[1:-1].split(",") if v.strip()]
    elif set("*?[") & set(value):
        names = sorted(glob.glob(str(Path(value).expanduser()), recursive=True))
        if not names:
            raise UserError(f"checkpoint={value}: the pattern matches no file")
    else:
        names = [value]
    paths = [Path(n).expanduser() for n in names]
    for p in paths:
        if not p.is_file():
            raise UserError(f"checkpoint {p} does not exist")
    return [p.resolve() for p in paths]


def read_stored_config(path: Path) -> dict:
    import torch

    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"{path}: not a readable checkpoint ({e})") from None
    extra = (ck.get("hyper_parameters") or {}).get("extra") or {}
    if "config" not in extra:
        raise UserError(f"{path}: not a checkpoint written by experiments.train (no stored config)")
    return extra["config"]


def load_checkpoint_model(cfg):
    from lightning_modules import load_model

    model = load_model(cfg.checkpoint, map_location="cpu")
    model.eval()
    return model


def load_ensemble(cfg) -> list:
    """Every model of ``checkpoint=`` (one, or an ensemble), in eval mode. The members must
    share the first one's labels and feature/segment parameters (their inputs are computed
    once); a member that differs is named."""
    from lightning_modules import load_model

    paths = list(cfg.get("checkpoints") or [cfg.checkpoint])
    models = [load_checkpoint_model(cfg)] + [load_model(p, map_location="cpu").eval()
                                             for p in paths[1:]]
    first = models[0].hparams
    for p, m in zip(paths[1:], models[1:]):
        for key, what in (("labels", "labels"), ("extra.features", "feature parameters"),
                          ("extra.audio", "audio/segment parameters")):
            a, b = first, m.hparams
            for k in key.split("."):
                a, b = a.get(k), b.get(k)
            if a != b:
                raise UserError(f"ensemble member {p} has other {what} than {paths[0]}: an "
                                f"ensemble needs models trained on the same labels and "
                                f"features")
    return models
