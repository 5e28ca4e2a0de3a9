"""Check that the compiled parts load: torch, torchaudio, soundfile, and the feature path.

    python -m experiments.check_install

Run by ``make setup`` and before the test suite. On success it prints one line with the
versions (and the CUDA build and devices); on failure one line that names the versions
involved and the fix, and exits 1. A torchaudio wheel built for another torch fails only
when it is imported ("Could not load this library: .../libtorchaudio.so"), which is what
this catches before a long run does.
"""
from __future__ import annotations

import sys
from importlib import metadata

FIX = "reinstall the tested versions from the lock: rm -rf .venv && make setup"


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def problem() -> str | None:
    """None when everything loads; otherwise one sentence naming versions and the fix."""
    pair = f"torch {version('torch')} with torchaudio {version('torchaudio')}"
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any load failure is reported the same way
        return f"torch {version('torch')} does not import ({_one_line(exc)}); {FIX}"
    try:
        import torchaudio.functional as AF

        AF.resample(torch.zeros(1, 441), 44100, 22050)
    except Exception as exc:  # noqa: BLE001
        return f"torchaudio does not load: {pair} ({_one_line(exc)}); {FIX}"
    try:
        import soundfile  # noqa: F401 - loads libsndfile
    except Exception as exc:  # noqa: BLE001
        return (f"soundfile {version('soundfile')} does not load libsndfile "
                f"({_one_line(exc)}); {FIX}")
    try:
        from datamodules.features import FeatureExtractor

        out = FeatureExtractor({"n_mels": 32})(torch.zeros(1, 4096))
        shapes = {k: tuple(v.shape) for k, v in out.items()}
        if shapes != {"mel": (1, 32, 9), "chroma": (1, 12, 9)}:
            return f"feature extraction gives shapes {shapes} with {pair}; {FIX}"
    except Exception as exc:  # noqa: BLE001
        return f"feature extraction fails with {pair} ({_one_line(exc)}); {FIX}"
    return None


def summary() -> str:
    import torch

    cuda = torch.version.cuda or "none (CPU build)"
    devices = torch.cuda.device_count() if torch.version.cuda else 0
    return (f"install ok: torch {version('torch')} (CUDA build {cuda}, {devices} CUDA device(s) "
            f"visible), torchaudio {version('torchaudio')}, pytorch-lightning "
            f"{version('pytorch-lightning')}, soundfile {version('soundfile')}, python "
            f"{sys.version.split()[0]}")


def main() -> int:
    found = problem()
    if found:
        print(f"check_install: {found}", file=sys.stderr)
        return 1
    print(summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
