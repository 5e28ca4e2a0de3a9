"""GPU readiness in one go: feature extraction, training throughput through both data paths,
GPU utilisation while training, and a 2-GPU DDP run where two devices exist.

    bash benchmarks/gpu_check.sh [--out FILE] [--seconds 20] [--cpu]
    python -m benchmarks.gpu_check [the same]

Steps (about 5 minutes on one GPU, most of it the synthetic set's first generation):
1. ``benchmarks.features --device auto``: clips/s of the batched extractor on CUDA and on
   the CPU (real GTZAN clips when ../shared is present).
2. Per interaction mode, training segments/s (forward + backward + AdamW, bf16 autocast
   where native) on the synthetic set's cached features, through the device-resident
   store and through the 2-worker DataLoader, for ``--seconds`` seconds each, with GPU
   utilisation sampled by ``nvidia-smi`` meanwhile (mean and median, %).
3. With two or more CUDA devices: ``experiments.train trainer=ddp trainer.devices=2`` on
   the synthetic set for two epochs (its wall time and test accuracy).
All figures go to one JSON file (``--out``, default ``paths.output_dir/gpu_check.json``)
and are the last stdout line. Without a CUDA device it prints why and exits 2 (``--cpu``
runs the same steps on the CPU at a tiny size, to check the script itself).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NO_CUDA_EXIT = 2
MODES = ("late_fusion", "mid_into_mel", "mid_into_chroma", "mid_two_way", "mel_only",
         "chroma_only")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def last_json(text: str) -> dict:
    lines = [ln for ln in text.strip().splitlines() if ln.strip().startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def run_module(args: list[str], timeout: float) -> dict:
    """``python -m args`` in the repository; its JSON summary, or the error it printed."""
    p = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
    return last_json(p.stdout)


class Utilisation:
    """``nvidia-smi`` GPU utilisation (%) of device 0, sampled every 200 ms while active."""

    def __init__(self):
        self.samples: list[float] = []
        self.proc = None

    def __enter__(self):
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-i", "0", "-lms", "200"], stdout=subprocess.PIPE, text=True,
                stderr=subprocess.DEVNULL)
        except FileNotFoundError:
            return self
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_median": None}
        return {"gpu_util_mean": round(statistics.mean(self.samples), 1),
                "gpu_util_median": round(statistics.median(self.samples), 1)}


def training_rates(cfg_words: list[str], dev, seconds: float, modes) -> dict:
    """Segments/s per mode and data path (``store`` / ``loader``) with utilisation."""
    import torch

    from datamodules.datamodule import GenreDataModule
    from datamodules.device_store import DeviceStore
    from experiments.builders import build_model
    from experiments.config import compose
    from experiments.speed import native_bf16

    bf16 = native_bf16(dev.type)
    out = {}
    for path in ("store", "loader"):
        cfg = compose([*cfg_words, f"data.store={'device' if path == 'store' else 'loader'}"])
        dm = GenreDataModule(cfg)
        dm.setup("fit")
        if path == "store":  # the datamodule's own store lives where its trainer is: here, dev
            dm.stores["train"] = DeviceStore(dm.datasets["train"], dev, dm.batch_size,
                                             shuffle=True, drop_last=True, seed=0)
        loader = dm.train_dataloader()
        for mode in modes:
            cfg.model.mode = mode
            model = build_model(cfg, dm).to(dev).train()
            model.set_normalization(dm.norm_stats)
            if dev.type == "cuda":
                model = model.to(memory_format=torch.channels_last)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

            def step(batch):
                b = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = torch.nn.functional.cross_entropy(model(b["mel"], b["chroma"]),
                                                             b["label"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return b["label"].shape[0]

            for i, batch in enumerate(loader):  # warm-up: kernels, cuDNN autotuning
                step(batch)
                if i >= 3:
                    break
            seen, t0 = 0, time.perf_counter()
            with Utilisation() as util:
                while time.perf_counter() - t0 < seconds:
                    for batch in loader:
                        seen += step(batch)
                        if time.perf_counter() - t0 >= seconds:
                            break
                if dev.type == "cuda":
                    torch.cuda.synchronize()
            rate = seen / (time.perf_counter() - t0)
            out.setdefault(mode, {})[path] = {"segments_per_s": round(rate, 1),
                                              **util.summary()}
            log(f"  {mode:<16} {path:<6} {rate:>10.1f} segments/s  {util.summary()}")
        del loader  # its persistent workers end with it
    for mode, r in out.items():
        r["store_vs_loader"] = round(r["store"]["segments_per_s"]
                                     / max(1e-9, r["loader"]["segments_per_s"]), 2)
    return {"bf16": bf16, "modes": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON file (default: paths.output_dir)")
    ap.add_argument("--seconds", type=float, default=20.0, help="per mode and data path")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--cpu", action="store_true",
                    help="no GPU: run the same steps on the CPU at a tiny size")
    a = ap.parse_args(argv)

    import torch

    from experiments.config import compose

    if not torch.cuda.is_available() and not a.cpu:
        log(f"no CUDA device: torch {torch.__version__} (CUDA build {torch.version.cuda}) "
            f"sees {torch.cuda.device_count()} devices; run this on a machine with an NVIDIA "
            f"GPU and driver (see README, Install: make setup TORCH_INDEX=... for older "
            f"drivers). Nothing was measured.")
        return NO_CUDA_EXIT
    dev = torch.device("cpu" if a.cpu else "cuda")
    t_start = time.perf_counter()
    paths = compose([])
    out_file = Path(a.out) if a.out else Path(str(paths.paths.output_dir)) / "gpu_check.json"
    result: dict = {"benchmark": "gpu_check", "device": str(dev), "torch": torch.__version__,
                    "cuda_build": torch.version.cuda, "devices": []}
    if dev.type == "cuda":
        result["devices"] = [torch.cuda.get_device_name(i)
                             for i in range(torch.cuda.device_count())]
    log(f"gpu_check on {dev}: {result['devices'] or 'CPU (script check)'}")

    log("1/3 feature extraction, CUDA vs CPU (benchmarks.features)")
    feat = run_module(["benchmarks.features", "--device", "auto", "--clips",
                       "8" if a.cpu else "64", "--repeats", "1" if a.cpu else "3"], 900)
    result["features"] = feat

    log("2/3 training segments/s per mode: device-resident store vs 2-worker DataLoader")
    words = ["data=synth"]
    if a.cpu:  # a small set of its own: the demo set under data_dir/synth stays as it is
        words += [f"data.root={paths.paths.data_dir}/synth_gpu_check_cpu",
                  "data.synth.clips_per_class=5", "backbone.channels=[4,8,8,8]"]
    result["training"] = training_rates(words, dev, a.seconds, a.modes)

    n_dev = torch.cuda.device_count() if dev.type == "cuda" else 0
    if n_dev >= 2:
        log("3/3 DDP on 2 GPUs (experiments.train trainer=ddp trainer.devices=2)")
        t = time.perf_counter()
        ddp = run_module(["experiments.train", "data=synth", "model=mid_two_way",
                          "trainer=ddp", "trainer.devices=2", "trainer.max_epochs=2",
                          "callbacks.gradcam.enabled=false", "callbacks.ablation.enabled=false",
                          "callbacks.interpretability.enabled=false",
                          "train.run_name=gpu_check_ddp", "logger.wandb.enabled=false"], 600)
        result["ddp_2_gpus"] = {"seconds": round(time.perf_counter() - t, 1),
                                "test/acc_clip": ddp.get("test/acc_clip"),
                                "error": ddp.get("error")}
    else:
        result["ddp_2_gpus"] = f"skipped: {n_dev} CUDA device(s)"
        log(f"3/3 DDP skipped: {n_dev} CUDA device(s)")
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(result, indent=2))
    log(f"figures written to {out_file}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    sys.exit(main())
