"""Throughput of the batched feature extractor vs a librosa reference (same clips, same run).

    python -m benchmarks.features [--clips 32] [--repeats 3] [--device cpu|cuda|auto]

Ours: ``FeatureExtractor`` (mel + chroma from one STFT per batch of 16 clips, torch threads
= cores). Reference: what a user would write per clip with librosa:
``power_to_db(melspectrogram(y))`` + ``chroma_stft(y, tuning=0)`` (two STFTs), numba
warmed up outside the timing. Clips: the real GTZAN clips in ../shared/data/gtzan-mini-dev
when present, otherwise synthetic noise. Timings of ours and of the reference alternate
within each repeat (the machine is shared), and the table reports medians.
Also: the STFT variants the extractor chose between (power spectrogram only), and CUDA
throughput when a GPU is available. The last stdout line is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GTZAN = REPO.parent / "shared" / "data" / "gtzan-mini-dev" / "genres"
SR = 22050


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_clips(n: int) -> tuple[np.ndarray, str]:
    from datamodules.audio import load_audio

    files = sorted(GTZAN.glob("*/*.wav")) if GTZAN.is_dir() else []
    if files:
        # spread over genres: round-robin through the sorted genre folders
        by_genre: dict[str, list[Path]] = {}
        for f in files:
            by_genre.setdefault(f.parent.name, []).append(f)
        order = [g[i] for i in range(max(map(len, by_genre.values())))
                 for g in by_genre.values() if i < len(g)]
        waves = [load_audio(f, SR, 30.0).wave for f in order[:n]]
        source = f"real GTZAN clips from {GTZAN}"
    else:
        rng = np.random.default_rng(0)
        waves = [(0.1 * rng.standard_normal(SR * 30)).astype(np.float32) for _ in range(n)]
        source = "synthetic noise (../shared absent)"
    reps = (n + len(waves) - 1) // len(waves)
    waves = (waves * reps)[:n]
    return np.stack(waves), f"{len(waves)} x 30 s {source}"


def librosa_features(y: np.ndarray):
    import librosa

    mel = librosa.power_to_db(librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=2048, hop_length=512, n_mels=128, power=2.0), ref=1.0, amin=1e-10,
        top_db=None)
    chroma = librosa.feature.chroma_stft(y=y, sr=SR, n_fft=2048, hop_length=512, tuning=0)
    return mel, chroma


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def stft_variants(waves, repeats: int) -> list[tuple[str, float]]:
    """ms per clip for the power spectrogram of one batch of 16 clips, one torch thread."""
    import torch

    from datamodules.features import FeatureParams, frame_signal, power_spectrogram, stft_window

    p = FeatureParams()
    x = torch.from_numpy(waves[:16])
    win = stft_window(p, "cpu")
    b = x.shape[0]

    def torch_stft():
        s = torch.stft(x, 2048, 512, window=win, center=True, pad_mode="constant",
                       return_complex=True)
        return s.real ** 2 + s.imag ** 2

    def unfold_whole():
        s = torch.fft.rfft(frame_signal(x, p) * win, dim=-1)
        return s.real ** 2 + s.imag ** 2

    buf = torch.empty(b, p.num_frames(x.shape[1]), p.n_freqs)

    def chunked():
        return power_spectrogram(x, p, out=buf)

    out = []
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # the algorithm, not OpenMP barriers (the extractor runs clip
    # groups in parallel threads, each with one torch thread)
    for name, fn in (("torch.stft, whole batch, |X|^2 as re^2+im^2", torch_stft),
                     ("unfold + rfft, whole batch", unfold_whole),
                     ("unfold + rfft in 512-frame chunks, reused buffer (chosen)", chunked)):
        fn()
        ts = [timed(fn) for _ in range(repeats)]
        out.append((name, 1000 * statistics.median(ts) / b))
    torch.set_num_threads(prev)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda too if present)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = cores)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import librosa
    import torch

    from datamodules.features import FeatureExtractor

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.threads or cores)
    waves, source = load_clips(args.clips)
    n = len(waves)
    log(f"clips: {source}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"librosa {librosa.__version__}")

    ex = FeatureExtractor({"names": ["mel", "chroma"], "batch_size": 16})
    log("warming up (librosa's numba compilation, filterbanks) ...")
    t_warm = timed(lambda: librosa_features(waves[0]))
    ex(waves[:16])

    # correctness guard: the benchmark compares like with like
    ref_mel, ref_chroma = librosa_features(waves[0])
    ours = ex(waves[:1])
    mel_err = float(np.abs(ours["mel"][0].numpy() - ref_mel)[ref_mel > -100].max())
    chroma_err = float(np.abs(ours["chroma"][0].numpy() - ref_chroma).max())

    threads = [torch.get_num_threads()] + ([1] if torch.get_num_threads() > 1 else [])
    t_ours: dict[int, list[float]] = {th: [] for th in threads}
    t_ref: list[float] = []
    load_before = os.getloadavg()[0]
    for r in range(args.repeats):
        for th in threads:
            torch.set_num_threads(th)
            t_ours[th].append(timed(lambda: ex(waves)))
        torch.set_num_threads(threads[0])
        t_ref.append(timed(lambda: [librosa_features(y) for y in waves]))
        log(f"  repeat {r + 1}: " + ", ".join(f"ours {th} thr {n / t_ours[th][-1]:.1f}"
                                              for th in threads)
            + f", librosa {n / t_ref[-1]:.1f} clips/s")
    load_after = os.getloadavg()[0]
    ours_cps = {th: n / statistics.median(v) for th, v in t_ours.items()}
    ref_cps = n / statistics.median(t_ref)
    ratios = [tr / to for to, tr in zip(t_ours[threads[0]], t_ref)]

    cuda_cps = None
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        exc = FeatureExtractor({"names": ["mel", "chroma"], "batch_size": 16, "device": "cuda"})
        exc(waves[:16])
        torch.cuda.synchronize()
        tc = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = exc(torch.from_numpy(waves))  # includes the host -> device copy
            _ = {k: v.cpu() for k, v in out.items()}  # and the copy back
            torch.cuda.synchronize()
            tc.append(time.perf_counter() - t0)
        cuda_cps = n / statistics.median(tc)
    elif args.device == "cuda":
        log("CUDA requested but not available")

    variants = stft_variants(waves, args.repeats)

    print(f"\nFeature extraction: mel (128) + chroma (12), n_fft 2048, hop 512, {n} clips "
          f"({source})")
    print(f"median of {args.repeats} repeats, {cores} cores, load average {load_before:.1f} "
          f"before / {load_after:.1f} after (the machine is shared)\n")
    print(f"| {'pipeline':58s} | {'clips/s':>8s} | {'ms/clip':>8s} | {'vs librosa':>10s} |")
    print(f"|{'-' * 60}|{'-' * 10}|{'-' * 10}|{'-' * 12}|")
    rows = [("librosa per clip: melspectrogram+power_to_db+chroma_stft", ref_cps),
            *((f"FeatureExtractor cpu, batch 16, one STFT, {th} thread(s)", ours_cps[th])
              for th in threads)]
    if cuda_cps:
        rows.append((f"FeatureExtractor cuda ({torch.cuda.get_device_name()})", cuda_cps))
    for name, cps in rows:
        print(f"| {name:58s} | {cps:8.1f} | {1000 / cps:8.2f} | {cps / ref_cps:9.2f}x |")
    print("\nPower spectrogram only (batch of 16 clips), CPU, 1 torch thread:\n")
    print(f"| {'STFT variant':58s} | {'ms/clip':>8s} |")
    print(f"|{'-' * 60}|{'-' * 10}|")
    for name, ms in variants:
        print(f"| {name:58s} | {ms:8.2f} |")
    print(f"\nagreement on clip 0: mel max |err| {mel_err:.4f} dB (bins > -100 dB), chroma "
          f"{chroma_err:.2e}; librosa warm-up (numba) {t_warm:.1f} s")
    summary = {
        "benchmark": "features", "clips": n, "source": "gtzan" if GTZAN.is_dir() else "noise",
        "torch_threads": threads[0], "repeats": args.repeats,
        "extractor_clips_per_s": round(ours_cps[threads[0]], 2),
        "extractor_clips_per_s_1_thread": round(ours_cps[threads[-1]], 2),
        "librosa_clips_per_s": round(ref_cps, 2),
        "speedup": round(ours_cps[threads[0]] / ref_cps, 2),
        "speedup_1_thread": round(ours_cps[threads[-1]] / ref_cps, 2),
        "speedup_per_repeat": [round(x, 2) for x in ratios],
        "cuda_clips_per_s": round(cuda_cps, 2) if cuda_cps else None,
        "stft_ms_per_clip": {name.split(",")[0].split(" (")[0]: round(ms, 2)
                             for name, ms in variants},
        "mel_max_abs_err_db": round(mel_err, 5), "chroma_max_abs_err": chroma_err,
        "loadavg_1min": [round(load_before, 2), round(load_after, 2)],
        "target_speedup": 5.0, "target_met": ours_cps[threads[0]] / ref_cps >= 5.0,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
