"""`features.*`: log-mel extraction speed against librosa, and the dataset stage's memory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.common import Figure, Stopwatch, interleaved, log, median, spread
from benchmarks.corpus import Workspace, merge

REPEATS = 5  # cheap: ~5 s a round at the default size
MEMORY_REPEATS = 2  # ~20 s a pair on a quiet machine; peaks agree within 1 %
MEMORY_CLIPS = 250  # N; the second run has 4N
QUICK_MEMORY_CLIPS = 24
SAMPLE_HZ = 20.0


def _librosa_log_mel(y: np.ndarray, fp: Any) -> np.ndarray:
    import librosa

    power = librosa.feature.melspectrogram(
        y=y,
        sr=fp.sample_rate,
        n_fft=fp.n_fft,
        win_length=fp.win_length,
        hop_length=fp.hop_length,
        n_mels=fp.n_mels,
        fmin=fp.fmin,
        fmax=fp.fmax,
        center=True,
        pad_mode="reflect",
        power=2.0,
    )
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)


def speedup(ws: Workspace) -> list[Figure]:
    import librosa
    from threadpoolctl import threadpool_limits

    from deepfake_audio.dsp.audio import load_clip
    from deepfake_audio.dsp.features import clip_features
    from deepfake_audio.stages import dataset

    fp = ws.features
    params = ws.folder_params(0)
    # Decode + log-mel, the transform itself. The stage's extra per-file work (reading the
    # bytes for the sha256, metadata, IPC, shards) is in the `all_cores` candidates.
    ours_what = "audio.load_clip + features.clip_features + float16"

    def one_clip(path: Path) -> None:
        wave = load_clip(path, fp.sample_rate, fp.clip_seconds, crop=fp.crop, pad=fp.pad)
        clip_features(wave, fp).astype(np.float16)

    clips = ws.feature_clips()
    paths = [ws.corpus_dir / c.path for c in clips]
    n = len(clips)
    runs = ws.root / "features-bench"
    counter = iter(range(1_000_000))
    workers = dataset._workers(fp)

    def stage() -> float:
        out = runs / f"build-{next(counter)}" / "spectrograms"
        out.parent.mkdir(parents=True)
        with Stopwatch() as sw:
            ws.build(clips, out, workers=0)
        shutil.rmtree(out.parent)
        return sw.seconds

    def ours_all_cores() -> float:
        # The stage's own worker pool, started once (warm), running the stage's per-clip
        # function: read, sha256, decode, log-mel, float16, moments, back to this process.
        with Stopwatch() as sw:
            for _ in stream():
                pass
        return sw.seconds

    def ours_single_process() -> float:
        with threadpool_limits(1), Stopwatch() as sw:
            for path in paths:
                one_clip(path)
        return sw.seconds

    def librosa_single_process() -> float:
        with threadpool_limits(1), Stopwatch() as sw:
            for path in paths:
                y, _ = librosa.load(path, sr=fp.sample_rate, mono=True)
                _librosa_log_mel(y, fp)
        return sw.seconds

    log(f"features: decode + log-mel of {n} WAV clips, {REPEATS} interleaved repeats")
    # This process gets the allocator setting the stage's workers use, so that the
    # single-process candidates (ours and librosa) run under the same conditions as the pool.
    dataset._keep_freed_memory()
    with dataset.extraction_pool(clips, str(params.data.path), fp) as stream:
        times = interleaved(
            {
                "ours_all_cores": ours_all_cores,
                "ours_single_process": ours_single_process,
                "librosa_single_process": librosa_single_process,
                "stage_all_cores": stage,
            },
            repeats=REPEATS,
        )
    rate = {name: n / median(t) for name, t in times.items()}

    # The two transforms are the same function: check it on the very same waveforms.
    diffs = []
    for path in paths[:5]:
        wave = load_clip(path, fp.sample_rate, fp.clip_seconds, crop=fp.crop, pad=fp.pad)
        ours = clip_features(wave, fp)
        ref = _librosa_log_mel(wave.astype(np.float64), fp)
        diffs.append(float(np.max(np.abs(ours - ref))))

    details = {
        "synthetic_demo_corpus": True,
        "clips": n,
        "clip_seconds": fp.clip_seconds,
        "input": "16-bit PCM WAV files on disk (page cache warm); time = decode + features",
        "features": ws.params().section("features"),
        "clips_per_second": {name: round(r, 1) for name, r in rate.items()},
        "seconds": {name: spread(t) for name, t in times.items()},
        "workers_all_cores": workers,
        "max_abs_difference_db_on_same_waveform": round(max(diffs), 6),
        "warmup": "one full pass of each candidate, discarded",
        "ours_single_process": ours_what,
        "notes": (
            "ours_all_cores is the dataset stage's per-clip function (dataset._extract: read "
            "the file, sha256, decode, loudness normalisation, log-mel, float16, normalisation "
            "moments) on the stage's own worker pool (dataset._init_worker), started once and "
            "warm, results sent back to this process; "
            "stage_all_cores is the whole dataset stage (deepfake_audio.stages.dataset.build over "
            "the folders source), cold each time: pool start-up, the workers' first clips, "
            "shards, manifests and reports included; "
            "ours_single_process is decoding and features alone, in this process; "
            "librosa_single_process is librosa.load + melspectrogram + power_to_db in this "
            "process. Both single-process candidates run with BLAS limited to one thread "
            "(threadpoolctl) and this process uses the workers' allocator setting "
            "(dataset._keep_freed_memory), so every candidate runs under the same conditions. "
            "librosa computes in float32 from the float32 waveform librosa.load returns; so do "
            "we (max_abs_difference_db_on_same_waveform is against librosa in float64)."
        ),
    }
    settings = (
        f"n_fft={fp.n_fft}, win_length={fp.win_length}, hop_length={fp.hop_length}, "
        f"n_mels={fp.n_mels}, fmin={fp.fmin:g}, fmax={fp.fmax or fp.sample_rate / 2:g}"
    )
    base = (
        f"librosa {librosa.__version__} single process (librosa.load + melspectrogram(center, "
        f"reflect, power 2) + power_to_db(ref 1, amin 1e-10, top_db None)) "
        f"{rate['librosa_single_process']:.0f} clips/s"
    )
    return [
        Figure(
            key="features.speedup_vs_librosa",
            value=rate["ours_all_cores"] / rate["librosa_single_process"],
            unit="x (clips/s ratio)",
            repeats=REPEATS,
            target=">= 3",
            compared=(
                f"decode + log-mel of {n} 16-bit WAV clips ({fp.clip_seconds:g} s, {settings}): "
                f"ours = the dataset stage's per-clip function on its warm pool of {workers} "
                f"worker processes {rate['ours_all_cores']:.0f} clips/s (sha256 and the trip "
                f"back to the parent included) vs {base}"
            ),
            details=details,
        ),
        Figure(
            key="features.speedup_vs_librosa_single_process",
            value=rate["ours_single_process"] / rate["librosa_single_process"],
            unit="x (clips/s ratio)",
            repeats=REPEATS,
            compared=(
                f"same clips and settings, both in one process: ours ({ours_what}) "
                f"{rate['ours_single_process']:.0f} clips/s vs {base}"
            ),
            details={"see": "features.speedup_vs_librosa"},
        ),
        Figure(
            key="features.stage_speedup_vs_librosa",
            value=rate["stage_all_cores"] / rate["librosa_single_process"],
            unit="x (clips/s ratio)",
            repeats=REPEATS,
            compared=(
                f"the whole dataset stage, cold (pool start-up, shards, manifests, reports), "
                f"on {workers} worker processes: {rate['stage_all_cores']:.0f} clips/s for "
                f"{n} clips vs {base}"
            ),
            details={"see": "features.speedup_vs_librosa"},
        ),
    ]


# --- memory -------------------------------------------------------------------------


def _split_counts(total: int) -> dict[str, int]:
    """`total` clips in the default corpus's proportions (400:160:320)."""
    train = round(total * 400 / 880)
    validation = round(total * 160 / 880)
    return {"train": train, "validation": validation, "test": total - train - validation}


def _deepfake_audio() -> str:
    local = Path(sys.executable).parent / "deepfake-audio"
    found = str(local) if local.exists() else shutil.which("deepfake-audio")
    if not found:
        raise RuntimeError("the deepfake-audio command is not installed next to this Python")
    return found


class TreeSampler(threading.Thread):
    """Samples the memory of a process and all its descendants at ~`hz` until it exits."""

    def __init__(self, pid: int, hz: float = SAMPLE_HZ) -> None:
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.period = 1.0 / hz
        self.peak_rss_sum = 0
        self.peak_pss_sum = 0
        self.peak_main_rss = 0
        self.max_processes = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        children: list[Any] = []
        tick = 0
        while not self.done.is_set():
            started = time.perf_counter()
            if tick % 4 == 0:  # listing descendants scans /proc: 5 Hz is enough for a pool
                try:
                    children = self.root.children(recursive=True)
                except psutil.Error:
                    break
            rss = pss = 0
            alive = 0
            for i, proc in enumerate([self.root, *children]):
                try:
                    full = proc.memory_full_info()
                except psutil.Error:
                    if i == 0:
                        self.done.set()
                    continue
                alive += 1
                rss += full.rss
                pss += getattr(full, "pss", full.rss)
                if i == 0:
                    self.peak_main_rss = max(self.peak_main_rss, full.rss)
            if alive:
                self.samples += 1
                self.peak_rss_sum = max(self.peak_rss_sum, rss)
                self.peak_pss_sum = max(self.peak_pss_sum, pss)
                self.max_processes = max(self.max_processes, alive)
            tick += 1
            self.done.wait(max(0.0, self.period - (time.perf_counter() - started)))


def _dataset_peak(ws: Workspace, total: int, run: int) -> dict[str, Any]:
    folder = ws.root / "memory-bench" / f"{total}-{run}"
    folder.mkdir(parents=True)
    counts = _split_counts(total)
    raw = merge(
        ws.raw,
        {
            "data": {
                "source": "demo",
                "demo": {
                    "train_clips": counts["train"],
                    "validation_clips": counts["validation"],
                    "test_clips": counts["test"],
                },
            }
        },
    )
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [
        _deepfake_audio(),
        "--params",
        "params.yaml",
        "dataset",
        "--out",
        "spectrograms",
        "--reports",
        "reports",
    ]
    with open(folder / "output.log", "wb") as output:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=folder, stdout=output, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        rc = proc.wait()
        sampler.done.set()
        sampler.join()
        seconds = time.perf_counter() - started
    if rc != 0:
        tail = (folder / "output.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"deepfake-audio dataset ({total} clips) exited {rc}:\n{tail}")
    shutil.rmtree(folder / "spectrograms", ignore_errors=True)
    mb = 1 / 2**20
    return {
        "rss_sum_mb": sampler.peak_rss_sum * mb,
        "pss_sum_mb": sampler.peak_pss_sum * mb,
        "main_rss_mb": sampler.peak_main_rss * mb,
        "processes": sampler.max_processes,
        "samples": sampler.samples,
        "seconds": seconds,
    }


def memory(ws: Workspace) -> list[Figure]:
    n = QUICK_MEMORY_CLIPS if ws.quick else MEMORY_CLIPS
    repeats = 1 if ws.quick else MEMORY_REPEATS
    sizes = (n, 4 * n)
    log(f"features: peak memory of `deepfake-audio dataset` at {n} and {4 * n} demo clips")
    runs: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    for r in range(repeats):
        for size in sizes if r % 2 == 0 else sizes[::-1]:
            runs[size].append(_dataset_peak(ws, size, r))

    def summary(size: int) -> dict[str, Any]:
        got = runs[size]
        return {
            "clips": size,
            "split_counts": _split_counts(size),
            "peak_rss_sum_mb": spread([g["rss_sum_mb"] for g in got]),
            "peak_pss_sum_mb": spread([g["pss_sum_mb"] for g in got]),
            "peak_main_rss_mb": spread([g["main_rss_mb"] for g in got]),
            "processes": max(g["processes"] for g in got),
            "samples_per_run": [g["samples"] for g in got],
            "wall_seconds": spread([g["seconds"] for g in got]),
        }

    small, large = summary(sizes[0]), summary(sizes[1])
    tree_small = small["peak_rss_sum_mb"]["median"]
    tree_large = large["peak_rss_sum_mb"]["median"]
    main_small = small["peak_main_rss_mb"]["median"]
    main_large = large["peak_main_rss_mb"]["median"]
    details = {
        "synthetic_demo_corpus": True,
        "command": "deepfake-audio --params params.yaml dataset (data.source: demo)",
        "sampling": f"psutil, {SAMPLE_HZ:g} Hz, the process and all its descendants",
        f"at_{sizes[0]}_clips": small,
        f"at_{sizes[1]}_clips": large,
        "main_process_ratio": round(main_large / main_small, 4),
        "pss_sum_ratio": round(
            large["peak_pss_sum_mb"]["median"] / small["peak_pss_sum_mb"]["median"], 4
        ),
        "notes": (
            "RSS summed over forked workers counts their shared copy-on-write pages once per "
            "process; PSS (proportional set size) shares them out and is the closer total."
        ),
    }
    return [
        Figure(
            key="features.peak_memory_mb",
            value=tree_large,
            unit="MB (peak RSS, process tree)",
            repeats=repeats,
            compared=(
                f"`deepfake-audio dataset` on {sizes[1]} demo clips: peak RSS summed over the "
                f"process tree {tree_large:.0f} MB (main process {main_large:.0f} MB); on "
                f"{sizes[0]} clips {tree_small:.0f} MB (main {main_small:.0f} MB)"
            ),
            details=details,
        ),
        Figure(
            key="features.peak_memory_ratio_4n_vs_n",
            value=tree_large / tree_small,
            unit="x (peak at 4N / peak at N)",
            repeats=repeats,
            target="<= 1.25",
            compared=(
                f"peak process-tree RSS at {sizes[1]} clips over that at {sizes[0]} clips "
                f"(flat = 1; main process alone: {main_large / main_small:.2f})"
            ),
            details={"see": "features.peak_memory_mb"},
        ),
    ]


def run(ws: Workspace) -> list[Figure]:
    return speedup(ws) + memory(ws)
