"""Training throughput (segments/s) per interaction mode, forward + backward + AdamW step.

    python -m benchmarks.training [--device cpu|cuda] [--batch-size 64] [--steps 6]
                                  [--grid 128x129] [--backbone parallel_cnn]

Random inputs of the real segment shape (default: 128 Mel bands x 129 frames = 3 s at hop
512, 12 chroma bins). Reports the median step time over ``--steps`` after warm-up, and each
mode's throughput as a ratio to ``late_fusion`` measured in the same run. On CUDA with
``--precision bf16`` the step runs under bf16 autocast as ``trainer=gpu`` does.
The last stdout line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

MODES = ("late_fusion", "mid_into_mel", "mid_into_chroma", "mid_two_way", "mel_only",
         "chroma_only")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--grid", default="128x129", help="Mel bands x frames per segment")
    ap.add_argument("--backbone", default="parallel_cnn")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    a = ap.parse_args()

    from lightning_modules import build_model

    bands, frames = (int(x) for x in a.grid.split("x"))
    dev = torch.device(a.device)
    amp = dev.type == "cuda" and a.precision == "bf16"
    labels = [f"g{i}" for i in range(10)]
    g = torch.Generator().manual_seed(0)
    mel = torch.randn(a.batch_size, 1, bands, frames, generator=g).to(dev)
    chroma = torch.rand(a.batch_size, 1, 12, frames, generator=g).to(dev)
    y = torch.randint(0, 10, (a.batch_size,), generator=g).to(dev)
    rows = []
    for mode in MODES:
        model = build_model(mode, labels=labels, backbone=a.backbone,
                            inputs={"mel": bands, "chroma": 12}).to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        times = []
        for step in range(a.steps + 2):  # two warm-up steps
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = torch.nn.functional.cross_entropy(model(mel, chroma), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if step >= 2:
                times.append(time.perf_counter() - t)
        med = statistics.median(times)
        rows.append({"mode": mode, "segments_per_s": a.batch_size / med,
                     "params": sum(p.numel() for p in model.parameters())})
    ref = rows[0]["segments_per_s"]
    print(f"{a.backbone} on {a.device} ({'bf16' if amp else 'fp32'}), batch {a.batch_size}, "
          f"segment {bands}x{frames}, torch threads {torch.get_num_threads()}")
    print(f"{'mode':<18}{'params':>10}{'segments/s':>12}{'vs late_fusion':>16}")
    for r in rows:
        r["ratio"] = r["segments_per_s"] / ref
        print(f"{r['mode']:<18}{r['params']:>10,}{r['segments_per_s']:>12.1f}{r['ratio']:>15.2f}x")
    print(json.dumps({"benchmark": "training", "device": a.device, "backbone": a.backbone,
                      "grid": a.grid, "batch_size": a.batch_size, "precision":
                      "bf16" if amp else "fp32",
                      "segments_per_s": {r["mode"]: round(r["segments_per_s"], 1) for r in rows}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
