"""The benchmark's data: demo clips as WAV files, the dataset built from them, PNG renderings.

Everything lives in one temporary work folder and is made at most once per run, lazily,
so `--only` pays only for what its sections need. Clips come from the project's own
synthetic demo corpus (`deepfake_audio.sources.demo`): every number computed on them says
so (`synthetic_demo_corpus: true` in the figure's details).

Order matters in one respect: the dataset stage forks worker processes, and forking a
process that has TensorFlow's thread pools running is asking for a deadlock. The runner
therefore prepares every forked artefact (clips, datasets) before any section imports
TensorFlow; see `Workspace.prepare`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import multiprocessing
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.common import log

PROJECT = Path(__file__).resolve().parents[1]
# The folders source's split layout (the notebook's and the Fake-or-Real corpus's).
SPLIT_DIRS = {"train": "training", "validation": "validation", "test": "testing"}
CLASS_DIRS = {"bonafide": "real", "spoof": "fake"}
# --quick: the corpus of tests/test_pipeline.py's small pipeline.
QUICK_COUNTS = {"train": 48, "validation": 24, "test": 32}
IMAGE_SIZE = 224


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """params.yaml mapping `base` with the nested keys of `over` replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def project_params_raw() -> dict[str, Any]:
    return yaml.safe_load((PROJECT / "params.yaml").read_text())


def _init_worker() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _write_clip(job: tuple[Any, str, int, float]) -> None:
    import soundfile

    from deepfake_audio.sources.demo import generate_clip

    demo, path, sample_rate, seconds = job
    wave = generate_clip(demo, sample_rate=sample_rate, clip_seconds=seconds)
    # 16-bit PCM: what a real corpus holds, so decoding does real work (int -> float).
    soundfile.write(path, wave, sample_rate, subtype="PCM_16")


class Workspace:
    """One benchmark run's data, made on first use."""

    def __init__(self, root: Path, quick: bool) -> None:
        self.root = Path(root)
        self.quick = quick
        # The features benchmarks are about the log-mel front end, whatever params.yaml picks.
        self.raw = merge(project_params_raw(), {"features": {"kind": "logmel"}})
        demo = self.raw.get("data", {}).get("demo", {})
        self.counts = (
            dict(QUICK_COUNTS)
            if quick
            else {
                "train": int(demo.get("train_clips", 400)),
                "validation": int(demo.get("validation_clips", 160)),
                "test": int(demo.get("test_clips", 320)),
            }
        )

    # --- parameters -------------------------------------------------------------

    def params(self, over: dict[str, Any] | None = None):
        """The project's params.yaml (validated), with `over` applied."""
        from deepfake_audio.config.params import parse_params

        return parse_params(merge(self.raw, over or {}))

    @property
    def features(self):
        return self.params().features

    def folder_params(self, workers: int = 0):
        """params.yaml, reading the WAV corpus through the `folders` source."""
        return self.params(
            {
                # Preprocessing off: the figures time the decoding and features they always
                # have, and a demo clip is the window long (trimmed, it would be dropped).
                "data": {
                    "source": "folders",
                    "path": str(self.corpus_dir),
                    "preprocess": {"enabled": False},
                },
                "features": {"workers": workers},
            }
        )

    # --- clips ------------------------------------------------------------------

    @property
    def corpus_dir(self) -> Path:
        return self.root / "corpus"

    @cached_property
    def clips(self) -> list[Any]:
        """Every corpus clip as a `Clip` of the folders source; WAV files written on first use."""
        from deepfake_audio.sources import Clip
        from deepfake_audio.sources.demo import plan_corpus

        fp = self.features
        seed = int(self.raw.get("seed", 42))
        plan = plan_corpus(seed, self.counts)
        clips, jobs = [], []
        for demo in plan:
            rel = f"{SPLIT_DIRS[demo.split]}/{CLASS_DIRS[demo.label]}/{demo.clip_id}.wav"
            path = self.corpus_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((demo, str(path), fp.sample_rate, fp.clip_seconds))
            clips.append(
                Clip(
                    clip_id=demo.clip_id,
                    split=demo.split,
                    label=demo.label,
                    path=rel,
                    speaker=demo.speaker,
                    attack=demo.attack,
                )
            )
        log(f"writing {len(jobs)} demo clips as 16-bit WAV to {self.corpus_dir}")
        context = multiprocessing.get_context("fork")
        with context.Pool(os.cpu_count() or 1, initializer=_init_worker) as pool:
            pool.map(_write_clip, jobs, chunksize=8)
        return clips

    def feature_clips(self) -> list[Any]:
        """Half of the corpus (every other clip of each split and class): ~440 by default."""
        chosen = []
        for split in SPLIT_DIRS:
            for label in CLASS_DIRS:
                group = [c for c in self.clips if c.split == split and c.label == label]
                chosen.extend(group[::2])
        return chosen

    # --- the built dataset ---------------------------------------------------------

    def build(self, clips: list[Any], out: Path, workers: int = 0) -> dict[str, Any]:
        """`stages.dataset.build` (the dataset stage's function), progress silenced."""
        from deepfake_audio.stages import dataset

        with contextlib.redirect_stderr(io.StringIO()):
            return dataset.build(self.folder_params(workers), clips, out, out.parent / "reports")

    @cached_property
    def dataset_dir(self) -> Path:
        """The whole corpus built into a spectrogram dataset (train/validation/test)."""
        out = self.root / "dataset" / "spectrograms"
        out.parent.mkdir(parents=True, exist_ok=True)
        log(f"building the spectrogram dataset of {len(self.clips)} clips")
        self.build(self.clips, out)
        return out

    def prepare(self, sections: list[str]) -> None:
        """Make everything that forks before anything imports TensorFlow."""
        if {"features", "input_pipeline", "train"} & set(sections):
            _ = self.clips
        if {"input_pipeline", "train"} & set(sections):
            _ = self.dataset_dir

    # --- PNG renderings (the notebook's input) -----------------------------------------

    def images_dir(self, split: str) -> Path:
        """PNG renderings of a split, `<dir>/{fake,real}/<clip>.png`, made on first use."""
        out = self.root / "images" / split
        done = out / ".done"
        if done.exists():
            return out
        from deepfake_audio.dataset.shards import SpectrogramDataset

        data = SpectrogramDataset(self.dataset_dir)
        manifest = data.manifest(split).sort_values(["shard", "row"])
        rows = iter(manifest.itertuples(index=False))
        for folder in CLASS_DIRS.values():
            (out / folder).mkdir(parents=True, exist_ok=True)
        lut = colour_lut()
        from PIL import Image

        n = 0
        for features, _targets in data.iter_shards(split):
            for logmel in features:
                row = next(rows)
                image = render(logmel, lut)
                Image.fromarray(image).save(out / CLASS_DIRS[row.label] / f"{row.clip_id}.png")
                n += 1
        done.write_text(f"{n}\n")
        log(f"rendered {n} {split} spectrograms as {IMAGE_SIZE}x{IMAGE_SIZE} RGB PNGs")
        return out

    def load_images(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images N x 224 x 224 x 3, float32 targets 1 = bona fide), manifest order."""
        from PIL import Image

        from deepfake_audio.dataset.shards import SpectrogramDataset

        folder = self.images_dir(split)
        manifest = SpectrogramDataset(self.dataset_dir).manifest(split)
        images = np.empty((len(manifest), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        for i, row in enumerate(manifest.itertuples(index=False)):
            with Image.open(folder / CLASS_DIRS[row.label] / f"{row.clip_id}.png") as image:
                images[i] = np.asarray(image.convert("RGB"))
        return images, manifest["target"].to_numpy(dtype=np.float32)


def colour_lut(name: str = "magma") -> np.ndarray:
    """256 x 3 uint8 colours of a matplotlib colour map."""
    from matplotlib import colormaps

    rgba = colormaps[name](np.linspace(0.0, 1.0, 256))
    return (rgba[:, :3] * 255.0).round().astype(np.uint8)


def render(logmel: np.ndarray, lut: np.ndarray, top_db: float = 80.0) -> np.ndarray:
    """A log-mel (dB) as the notebook stored spectrograms: a 224 x 224 RGB picture.

    As `librosa.display.specshow` of `power_to_db(ref=np.max, top_db=80)` draws it: the top
    80 dB of the clip over the colour map (magma, specshow's choice for non-positive data),
    low frequencies at the bottom, then resized (bilinear) to the network's 224 x 224.
    """
    from PIL import Image

    db = np.asarray(logmel, dtype=np.float32)
    top = float(db.max())
    level = np.clip((db - (top - top_db)) / top_db, 0.0, 1.0)
    rgb = lut[(level[::-1] * 255.0).round().astype(np.uint8)]
    image = Image.fromarray(rgb).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)
