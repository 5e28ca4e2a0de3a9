"""Training throughput per interaction mode and speed setting, against this machine's sgemm.

    python -m benchmarks.training [--device cpu|cuda] [--batch-size 32] [--steps 6]
                                  [--rounds 3] [--grid 128x130] [--backbone parallel_cnn]
                                  [--modes late_fusion ...] [--processes 2] [--compile]

One step is forward + backward + AdamW on random inputs of the real segment shape (default:
128 Mel bands x 130 frames, 12 chroma bins, batch 32). For every mode it measures four
settings, interleaved over ``--rounds`` rounds (median step time of ``--steps`` steps
after warm-up, then the median over rounds): fp32, bf16 autocast, fp32 + channels-last,
bf16 autocast + channels-last; each as segments/s, as a ratio to fp32 of the same mode,
and as GFLOP/s (the step's FLOPs counted by ``torch.utils.flop_counter``) next to a
float32 2048 x 2048 matmul measured in the same run. On a CPU it also times ``--processes``
concurrent fp32 trainings of one thread each (summed), what a sweep with ``parallel=N``
gets from the cores. ``--compile`` adds ``torch.compile`` (fp32) with its compile time.
The cell marked ``*`` is what ``trainer.precision=auto`` and ``train.channels_last=auto``
pick on this machine (``experiments.speed``). The last stdout line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

MODES = ("late_fusion", "mid_into_mel", "mid_into_chroma", "mid_two_way", "mel_only",
         "chroma_only")
SETTINGS = (("fp32", False, False), ("bf16", True, False), ("fp32+channels_last", False, True),
            ("bf16+channels_last", True, True))


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def sgemm_gflops(dev: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Median GFLOP/s of an n x n float32 matmul on ``dev`` (the machine's reference)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dev) for _ in range(2))
    a @ b
    times = []
    for _ in range(reps):
        sync(dev)
        t = time.perf_counter()
        a @ b
        sync(dev)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


class Case:
    """One mode in one setting: its model, optimiser and inputs, and a timed step."""

    def __init__(self, mode, backbone, bands, frames, batch, dev, bf16, channels_last):
        from lightning_modules import build_model

        torch.manual_seed(0)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = build_model(mode, labels=[f"g{i}" for i in range(10)], backbone=backbone,
                                 inputs={"mel": bands, "chroma": 12}).to(dev).train()
        self.model = self.model.to(memory_format=fmt)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        self.mel = torch.randn(batch, 1, bands, frames, generator=g).to(dev)
        self.chroma = torch.rand(batch, 1, 12, frames, generator=g).to(dev)
        self.y = torch.randint(0, 10, (batch,), generator=g).to(dev)
        self.dev, self.bf16, self.batch = dev, bf16, batch
        self.fn = self.model

    def step(self) -> None:
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = torch.nn.functional.cross_entropy(self.fn(self.mel, self.chroma), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def flops(self) -> int:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            self.step()
        return fc.get_total_flops()

    def rate(self, steps: int) -> float:
        self.step()  # warm-up (allocations, oneDNN primitive cache)
        times = []
        for _ in range(steps):
            sync(self.dev)
            t = time.perf_counter()
            self.step()
            sync(self.dev)
            times.append(time.perf_counter() - t)
        return self.batch / statistics.median(times)


def _one_thread_rate(args) -> float:
    """A worker process of :func:`parallel_rate`: one torch thread, fp32, NCHW."""
    mode, backbone, bands, frames, batch, steps, start = args
    torch.set_num_threads(1)
    case = Case(mode, backbone, bands, frames, batch, torch.device("cpu"), False, False)
    case.step()
    start.wait()  # every process times the same interval
    return case.rate(steps)


def parallel_rate(mode, backbone, bands, frames, batch, steps, processes: int) -> float:
    """Summed segments/s of ``processes`` concurrent fp32 trainings with one thread each:
    what a sweep with ``parallel=N`` gets from N cores (``experiments.sweep_local``)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(processes)
        with ctx.Pool(processes) as pool:
            rates = pool.map(_one_thread_rate, [(mode, backbone, bands, frames, batch, steps,
                                                 start)] * processes)
    return sum(rates)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--grid", default="128x130", help="Mel bands x frames per segment")
    ap.add_argument("--backbone", default="parallel_cnn")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (fp32)")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                    help="CPU: also time this many concurrent 1-thread fp32 trainings "
                         "(a sweep's parallel=N); 1 to skip")
    ap.add_argument("--all-bf16", action="store_true",
                    help="time bf16 for every mode even without native bf16 (by default it is "
                         "timed for the first mode only there: emulated bf16 is slow)")
    a = ap.parse_args(argv)

    from experiments.speed import native_bf16, resolve_channels_last, resolve_precision

    bands, frames = (int(x) for x in a.grid.split("x"))
    dev = torch.device(a.device)
    accel = "gpu" if dev.type == "cuda" else "cpu"
    auto_prec = resolve_precision("auto", accel)
    auto = ("bf16" if auto_prec.startswith("bf16") else "fp32") + \
        ("+channels_last" if resolve_channels_last("auto", auto_prec, accel) else "")
    native = native_bf16(dev.type)
    gemm = sgemm_gflops(dev)
    rows = []
    for mode in a.modes:
        timed = [(name, bf16, cl) for name, bf16, cl in SETTINGS
                 if not bf16 or native or a.all_bf16 or not rows]
        cases = {name: Case(mode, a.backbone, bands, frames, a.batch_size, dev, bf16, cl)
                 for name, bf16, cl in timed}
        gflop = cases["fp32"].flops() / 1e9 / a.batch_size
        rates: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(a.rounds):  # interleaved: a busy spell hits every setting alike
            for name, case in cases.items():
                rates[name].append(case.rate(a.steps))
        extra = {}
        if a.compile:
            case = Case(mode, a.backbone, bands, frames, a.batch_size, dev, False, False)
            case.fn = torch.compile(case.model)
            t = time.perf_counter()
            case.step()
            extra = {"compile_s": time.perf_counter() - t,
                     "compiled": statistics.median(case.rate(a.steps) for _ in range(a.rounds))}
        med = {name: statistics.median(r) for name, r in rates.items()}
        if dev.type == "cpu" and a.processes > 1:
            extra["parallel"] = statistics.median(
                parallel_rate(mode, a.backbone, bands, frames, a.batch_size, a.steps,
                              a.processes) for _ in range(a.rounds))
        rows.append({"mode": mode, "gflop_per_segment": gflop, "segments_per_s": med, **extra})

    print(f"{a.backbone} on {a.device}, batch {a.batch_size}, segment {bands}x{frames}, "
          f"torch threads {torch.get_num_threads()}, native bf16: {native_bf16(dev.type)}; "
          f"sgemm (2048^2 fp32) {gemm:.1f} GFLOP/s; medians of {a.rounds} rounds x "
          f"{a.steps} steps")
    par = any("parallel" in r for r in rows)
    head = f"{'mode':<17}{'GFLOP/seg':>10}" + "".join(f"{n:>22}" for n, _, _ in SETTINGS)
    print(head + (f"{f'fp32 {a.processes} procs x 1 thr':>24}" if par else "")
          + ("  compiled (compile s)" if a.compile else ""))
    for r in rows:
        fp32 = r["segments_per_s"]["fp32"]
        cells = []
        gflop = r["gflop_per_segment"]

        def cell(v: float | None, mark: str = " ") -> str:
            if v is None:
                return "not timed "
            return f"{v:>9.1f} {v / fp32:>5.2f}x {v * gflop:>4.0f}GF{mark}"

        for name, _, _ in SETTINGS:
            cells.append(cell(r["segments_per_s"].get(name), "*" if name == auto else " "))
        line = f"{r['mode']:<17}{gflop:>10.3f}" + "".join(f"{c:>22}" for c in cells)
        if "parallel" in r:
            line += f"{cell(r['parallel']):>24}"
        if a.compile:
            line += f"  {r['compiled']:.1f} {r['compiled'] / fp32:.2f}x ({r['compile_s']:.0f} s)"
        print(line)
    if not native and not a.all_bf16 and len(rows) > 1:
        print(f"no native bf16 here: bf16 timed for {rows[0]['mode']} only (--all-bf16 for "
              f"every mode)")
    first = rows[0]
    share = first["segments_per_s"]["fp32"] * first["gflop_per_segment"] / gemm
    print(f"cells: segments/s, ratio to fp32, GFLOP/s achieved; * = the auto setting here "
          f"({auto}); fp32 reaches {share:.0%} of sgemm's GFLOP/s for {first['mode']}")
    print(json.dumps({
        "benchmark": "training", "device": a.device, "backbone": a.backbone, "grid": a.grid,
        "batch_size": a.batch_size, "threads": torch.get_num_threads(),
        "native_bf16": native, "auto_setting": auto,
        "sgemm_gflops": round(gemm, 1),
        "modes": {r["mode"]: {
            "gflop_per_segment": round(r["gflop_per_segment"], 4),
            **{name: round(v, 1) for name, v in r["segments_per_s"].items()},
            **{f"{name}_ratio": round(v / r["segments_per_s"]["fp32"], 3)
               for name, v in r["segments_per_s"].items()},
            "fp32_gflops": round(r["segments_per_s"]["fp32"] * r["gflop_per_segment"], 1),
            **({"compiled": round(r["compiled"], 1), "compile_s": round(r["compile_s"], 1)}
               if a.compile else {}),
            **({f"fp32_{a.processes}_processes": round(r["parallel"], 1),
                f"fp32_{a.processes}_processes_ratio":
                    round(r["parallel"] / r["segments_per_s"]["fp32"], 3)}
               if "parallel" in r else {})} for r in rows}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
