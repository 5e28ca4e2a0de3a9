"""Shared fixtures: tiny datasets in the real on-disk layouts, and the real clips in ../shared."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from datamodules.gtzan import GENRES  # noqa: F401 - the tests' GTZAN genres

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"


def pytest_configure(config):
    # A torch/torchaudio pair that does not load would fail every test module at import with
    # a linker message; stop first with one line that names the versions and the fix.
    from experiments.check_install import problem

    found = problem()
    if found:
        pytest.exit(f"check_install: {found}", returncode=3)
    # The tests' models are tiny: one intra-op thread avoids oversubscribing 2 shared cores.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Nothing a test runs writes into the repository or talks to W&B servers."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("MLFI_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("MLFI_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("MLFI_OUTPUT_DIR", str(base / "outputs"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real audio not available: {SHARED_DATA} is absent (only in the dev setup)")
    return SHARED_DATA


def tone(seconds: float, sr: int = 22050, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def write_clip(path: Path, seconds: float = 3.5, sr: int = 22050, freq: float = 440.0,
               seed: int = 0, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {"format": fmt, "subtype": "PCM_16"} if fmt else {"subtype": "PCM_16"}
    if path.suffix.lower() == ".mp3":
        kw = {"format": "MP3", "subtype": "MPEG_LAYER_III"}
    sf.write(str(path), tone(seconds, sr, freq, seed), sr, **kw)
    return path


# A tiny training run on a 6-s GTZAN-layout fixture (make_gtzan(..., seconds=6.0)): CPU,
# no worker processes, small channels. Tests add the dataset root and what they check.
TINY_GTZAN_RUN = ["data=gtzan", "data.split=random", "data.clip_seconds=6.0",
                  "data.min_seconds=1.0", "data.batch_size=16", "data.num_workers=0",
                  "cache.workers=0", "backbone.channels=[4,8,8,8]"]
# The interpretability callback on a budget: a few clips, one label-randomisation epoch.
TINY_INTERPRETABILITY = ["callbacks.interpretability.max_segments=24",
                         "callbacks.interpretability.sanity_segments=8",
                         "callbacks.interpretability.label_epochs=1",
                         "callbacks.interpretability.fractions=[0.0,0.3,1.0]",
                         "callbacks.interpretability.severity.sigmas=[2.0]",
                         "callbacks.interpretability.severity.fractions=[0.5]"]


def make_gtzan(root: Path, layout: str = "archive", per_genre: int = 3, ext: str = ".wav",
               genres=GENRES, seconds: float = 3.5) -> Path:
    """A tiny GTZAN in one of the real layouts. Returns the genre-folder parent."""
    if layout == "archive":          # genres.tar.gz: genres/<g>/<g>.00000.au + .mf + README
        top = root / "genres"
    elif layout == "reupload":       # Data/genres_original/<g>/<g>.00000.wav + images, csvs
        top = root / "Data" / "genres_original"
        (root / "Data" / "images_original" / "blues").mkdir(parents=True, exist_ok=True)
        (root / "Data" / "images_original" / "blues" / "blues00000.png").write_bytes(b"\x89PNG")
        (root / "Data" / "features_30_sec.csv").write_text("filename,length\n")
        (root / "Data" / "features_3_sec.csv").write_text("filename,length\n")
    elif layout == "flat":           # the genre folders directly under data.root
        top = root
    else:
        raise ValueError(layout)
    for gi, g in enumerate(genres):
        for i in range(per_genre):
            fmt = "AU" if ext == ".au" else None
            write_clip(top / g / f"{g}.{i:05d}{ext}", seconds=seconds, freq=110.0 * (gi + 1),
                       seed=gi * 100 + i, fmt=fmt)
    if layout == "archive":
        for g in genres:
            (top / f"{g[:2]}.mf").write_text(f"{g}/{g}.00000.au\t{g}\n")
        (top / "README").write_text("GTZAN genre collection\n")
    return top


class Called:
    """What an in-process entry point call returned and printed (like CompletedProcess)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def call_cli(module: str, *args: str, env: dict | None = None) -> Called:
    """Run entry point ``module``'s ``cli(args)`` in this process (no interpreter start,
    no torch import: seconds cheaper than :func:`run_cli`), with ``env`` set meanwhile;
    stdout and stderr are captured as a user would see them."""
    import contextlib
    import importlib
    import io

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = importlib.import_module(module).cli(list(args))
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Called(int(rc or 0), out.getvalue(), err.getvalue())


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 600):
    """Run ``python -m <args>`` like a user; returns CompletedProcess (text)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


def last_json(stdout: str) -> dict:
    import json

    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    assert lines, "no stdout"
    return json.loads(lines[-1])
