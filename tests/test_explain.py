"""``python -m experiments.explain``: overlays per branch per file, top spans, bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from experiments.explain import stitch, top_band_range, top_classes, top_window
from lightning_modules import build_model
from tests.conftest import call_cli, last_json, tone

LABELS = ["blues", "jazz", "rock"]


# ------------------------------------------------------------------------ pure helpers
def test_stitch_averages_overlapping_windows():
    maps = torch.stack([torch.full((2, 4), 1.0), torch.full((2, 4), 3.0)])
    out = stitch(maps, [0, 2], total=7)
    assert out.shape == (2, 7)
    assert out[0].tolist() == [1, 1, 2, 2, 3, 3, 0]  # frames 2-3 overlap; frame 6 uncovered


def test_top_span_band_and_pitch_classes():
    cam = np.zeros((16, 40))
    cam[5:8, 20:26] = 1.0
    cam[12, 2] = 0.5  # a lone weaker cell elsewhere
    assert top_window(cam, 6) == (20, 26)
    assert top_window(cam, 100) == (0, 40)
    profile = cam[:, 20:26].mean(axis=1)
    assert top_band_range(profile, 0.5) == (5, 6) or top_band_range(profile, 0.5) == (6, 7)
    assert top_band_range(profile, 1.0) == (5, 7)
    assert top_band_range(np.zeros(4)) == (0, 3)
    chroma = np.array([0.1, 0, 0, 0, 0.6, 0, 0, 0.3, 0, 0, 0, 0])
    assert top_classes(chroma, 0.5) == [4]
    assert top_classes(chroma, 0.8) == [4, 7]


# -------------------------------------------------------------------------------- CLI
class _Random(torch.utils.data.Dataset):
    def __init__(self, frames):
        g = torch.Generator().manual_seed(0)
        self.mel = -40 + 10 * torch.randn(8, 1, 128, frames, generator=g)
        self.chroma = torch.rand(8, 1, 12, frames, generator=g)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"mel": self.mel[i], "chroma": self.chroma[i], "label": torch.tensor(i % 3),
                "clip": torch.tensor(i)}


def _checkpoint(run_dir):
    """A tiny mid_two_way model with the ``extra`` train.py stores (features, audio,
    config), fitted two steps and saved like a run's checkpoint."""
    from experiments.builders import model_kwargs
    from experiments.config import compose

    cfg = compose(["data=gtzan", "model=mid_two_way", "backbone=serial_cnn", "trainer=cpu"])
    kwargs = model_kwargs(cfg, LABELS, {"mel": 128, "chroma": 12})
    kwargs["backbone_kwargs"] = {"channels": [8, 16], "dropout": 0.0}
    kwargs["tap"] = 1
    pl.seed_everything(0, verbose=False)
    model = build_model("mid_two_way", **kwargs)
    model.set_normalization({"mel": (np.full(128, -40.0), np.full(128, 10.0)),
                             "chroma": (np.full(12, 0.5), np.full(12, 0.3))})
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=DataLoader(_Random(129), batch_size=4))
    path = run_dir / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    trainer.save_checkpoint(path)
    return path


def test_explain_writes_overlays_top_spans_and_reports_a_bad_file(tmp_path):
    run_dir = tmp_path / "run"
    ckpt = _checkpoint(run_dir)
    # 7 s of stereo at 16 kHz: several overlapping 3-s segments, resampled and mixed down.
    wave = tone(7.0, sr=16000, freq=330.0)
    good = tmp_path / "audio" / "stereo tune.wav"
    good.parent.mkdir()
    sf.write(str(good), np.stack([wave, 0.5 * wave], axis=1), 16000, subtype="PCM_16")
    bad = tmp_path / "audio" / "notes.wav"
    bad.write_text("this is not audio\n")

    res = call_cli("experiments.explain", f"checkpoint={ckpt}", f"files=['{good}','{bad}']")
    assert res.returncode == 0, res.stderr[-3000:]
    out = last_json(res.stdout)
    assert out["out"] == str(run_dir / "explain")  # default: <run_dir>/explain
    first, second = out["explanations"]

    assert first["file"] == str(good) and first["genre"] in LABELS
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert first["segments"] >= 3
    assert set(first["pngs"]) == {"mel", "chroma"}
    for branch, png in first["pngs"].items():
        assert png.startswith(str(run_dir / "explain")) and png.endswith(f"_{branch}.png")
        with open(png, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    mel, chroma = first["top"]["mel"], first["top"]["chroma"]
    for top in (mel, chroma):
        t0, t1 = top["time_s"]
        assert 0 <= t0 < t1 <= 7.05 and abs((t1 - t0) - 3.0) < 0.05  # one segment length
    f0, f1 = mel["freq_hz"]
    assert 0 < f0 <= f1 <= 11025
    names = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
    assert chroma["pitch_classes"] and set(chroma["pitch_classes"]) <= set(names)

    assert second == {"file": str(bad), "error": second["error"]}
    assert "not a readable audio file" in second["error"]
    assert "notes.wav" in res.stderr  # progress on stderr


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_explain_a_folder_writes_a_report_that_a_browser_renders(tmp_path):
    import re
    import subprocess

    run_dir = tmp_path / "run"
    ckpt = _checkpoint(run_dir)
    music = tmp_path / "my music"
    (music / "live").mkdir(parents=True)
    sf.write(str(music / "live" / "café song.wav"), tone(4.0, sr=22050, freq=262.0), 22050)
    sf.write(str(music / "b.flac"), tone(3.5, sr=44100, freq=392.0), 44100)
    (music / "._b.flac").write_bytes(b"\x00\x05\x16\x07")
    (music / "broken.mp3").write_bytes(b"ID3 not really an mp3")
    out = tmp_path / "report"
    res = call_cli("experiments.explain", f"checkpoint={ckpt}", f"files=['{music}']",
                   f"out={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    s = last_json(res.stdout)
    names = [Path(e["file"]).name for e in s["explanations"]]
    assert names == ["b.flac", "broken.mp3", "café song.wav"]  # ._b.flac is litter
    page = (out / "index.html").read_text()
    assert s["report"] == str(out / "index.html") and "http" not in page  # no network
    genres = [e["genre"] for e in s["explanations"] if "genre" in e]
    assert len(genres) == 2 and "error: " in page
    imgs = re.findall(r'<img src="([^"]+)"', page)
    from urllib.parse import unquote

    assert len(imgs) == 4 and all((out / unquote(i)).is_file() for i in imgs)  # 2 x 2 branches

    browser = _chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=5000"]
    url = (out / "index.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-images-loaded="4"' in dom and 'data-images-total="4"' in dom
    assert "4 of 4 images loaded" in dom
    for e in s["explanations"]:
        section = dom.split(Path(e["file"]).name, 1)[1][:3000]
        assert (f'class="genre">{e["genre"]}<' in section) if "genre" in e \
            else "error:" in section
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2000", url],
                   capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2000, 1280) and img.std() > 10  # a rendered page, not a blank one
