"""The dataset stage: decode every clip once, compute its features, write the versioned shards.

It writes `data/spectrograms/` in the format of `deepfake_audio.dataset.shards` (manifests,
bounded feature shards, training waves, stats.json), through that module's writers.

Features are computed once here, in worker processes, and streamed to shards
of bounded size, so memory stays flat however many clips there are.

With `augment.enabled` (audio kinds), the training split also keeps each clip's wave up to
`features.max_seconds`, from which the training batches cut a random window every epoch
(`dataset.train_batches`), and gets `augment.codec_copies` extra copies of every clip through
the codecs of `augment.codecs` (an MP3 or OGG/Vorbis round trip, level-matched to the
source). A copy is a manifest row of its own (`copy_of` names its source, `augmentation`
the codec and level) with the source's speaker, label and sha256, so it can only ever sit in
its source's split. Validation and test are built exactly as without augmentation.

With `data.validation_codec` (mp3 or ogg), each validation clip's row holds its features
after one round trip through that codec (its `augmentation` column says which level), so
both classes of validation share a codec history and choices made there cannot reward a
codec shortcut of the training data. Test is never touched.

With `data.preprocess` on (`auto`: real corpora), every clip is preprocessed
(`dsp.preprocess.prepare`: DC, silence, level, short clips) between decoding and the cut, and
the settings are stored in stats.json's features section, so the served model does the same.
A clip too short after trimming (``short: drop``) is listed in bad_files.csv whatever
`data.on_bad_file` says: it is a filter, not a broken file.

With `data.vocoded.vocoders`, every bona fide training clip also gives one fake clip per
vocoder (`dsp.vocoders`), attack ``vocoded_<name>``, a clip of its own (``copy_of`` empty,
``augmentation`` ``vocoded:<name>``), made from the preprocessed source and cut as it is.
Training only: validation and test measure the corpus's own attacks.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from deepfake_audio.config.params import AugmentParams, FeaturesParams, Params
from deepfake_audio.core.errors import UserError
from deepfake_audio.core.io import write_dict_rows, write_json
from deepfake_audio.dataset.shards import (
    CUE_VIEWS,
    MANIFEST_COLUMNS,
    Moments,
    ShardWriter,
    WaveWriter,
    cue_column,
    encode_waves,
    moments,
    stored_features,
    write_stats,
)
from deepfake_audio.dsp.audio import fix_length
from deepfake_audio.dsp.cues import CUE_NAMES, CUES, clip_cues
from deepfake_audio.dsp.features import clip_features
from deepfake_audio.dsp.preprocess import Preprocess, ShortClip, prepare
from deepfake_audio.scoring import shortcuts
from deepfake_audio.sources import HELDOUT_SPLITS, LABELS, SPLITS, Clip


@dataclass(frozen=True)
class _Job:
    """What every worker of one build needs, inherited through fork rather than pickled with
    each clip: tasks are then bare indices into `clips`."""

    clips: list[Clip]
    root: str
    features: FeaturesParams
    augment: AugmentParams = AugmentParams()
    seed: int = 0
    validation_codec: str | None = None  # data.validation_codec
    preprocess: Preprocess | None = None  # data.preprocess, resolved for the source
    vocoders: tuple[str, ...] = ()  # data.vocoded.vocoders

    @property
    def keeps_waves(self) -> bool:
        """Whether training waves are stored (augmentation on, an audio kind)."""
        return self.augment.applies_to(self.features.feature_kind)

    @property
    def copies(self) -> int:
        """Codec copies made of each training clip."""
        return self.augment.codec_copies if self.keeps_waves else 0


# Set by `extraction_pool` for the lifetime of its pool (the workers are forked from it).
_JOB: _Job | None = None


class BadFile(Exception):
    """A clip the stage cannot use; its message is the one-line reason. `dropped`: left out
    by a rule ("short": preprocess ``short: drop``), not broken: listed, never fatal."""

    def __init__(self, message: str, dropped: str | None = None) -> None:
        super().__init__(message)
        self.dropped = dropped


def file_features(
    path: Path, fp: FeaturesParams, keep_wave: bool = False, prep: Preprocess | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Features of one file plus its manifest metadata; `BadFile` if it is unusable.

    The dataset stage and `predict` both come through here, so a file is decoded,
    cut and transformed the same way in training and at serving time. With `keep_wave`
    the metadata also holds the whole conditioned recording under "wave" (what a
    training clip's stored wave is cut from). An audio file's metadata holds its one-number
    cues (`dsp.cues`) as manifest columns: `raw_<cue>` of the decoded recording at its own
    rate, `as_fed_<cue>` of the cut clip its features are computed from. `prep` (the
    dataset's resolved `data.preprocess`) runs between conditioning and the cut, as in serving.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadFile(f"{path}: cannot read ({exc.strerror})") from None
    sha = hashlib.sha256(raw).hexdigest()
    if not fp.feature_kind.audio:
        from deepfake_audio.dsp.images import ImageError, load_image

        try:
            image, _ = load_image(path, fp.image_size)
        except ImageError as exc:
            raise BadFile(str(exc)) from None
        return image, {"duration_s": "", "sample_rate": "", "sha256": sha}

    from deepfake_audio.dsp.audio import AudioError, condition, decode

    n_samples = int(round(fp.clip_seconds * fp.sample_rate))
    try:
        # Decode the bytes already read for the sha256: one read of each file, not two.
        decoded, rate = decode(raw, name=str(path))
        duration = decoded.size / rate
        wave = condition(decoded, rate, fp.sample_rate, str(path))
        wave = prepare(wave, fp.sample_rate, prep, n_samples, str(path))
        fitted = fix_length(wave, n_samples, crop=fp.crop, pad=fp.pad)
        feats = clip_features(fitted, fp)
        cues = {**cue_cells("raw", decoded, rate), **cue_cells("as_fed", fitted, fp.sample_rate)}
    except ShortClip as exc:
        raise BadFile(str(exc), dropped="short") from None
    except (AudioError, ValueError) as exc:
        raise BadFile(str(exc)) from None
    meta: dict[str, Any] = {"duration_s": round(duration, 4), "sample_rate": rate, "sha256": sha}
    meta.update(cues)
    if keep_wave:
        meta["wave"] = wave
    return feats, meta


def cue_cells(view: str, wave: np.ndarray, sample_rate: int) -> dict[str, float]:
    """A wave's cues as manifest cells of one view (`raw_rms`: ...), six significant digits."""
    return {
        cue_column(view, name): float(f"{value:.6g}")
        for name, value in clip_cues(wave, sample_rate).items()
    }


def _demo_features(
    clip: Clip, fp: FeaturesParams, keep_wave: bool = False, prep: Preprocess | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """A demo clip's features (and, with `keep_wave`, its wave under meta "wave").

    Every demo clip is generated `features.clip_seconds` long, training clips too: the
    generator plans its utterance over the length asked for, so longer training clips would
    differ from validation and test ones in more than length (a split mismatch the model
    would pay for). The demo corpus has no durations to randomise: a random window of a
    demo clip is the clip. For the same reason its raw cues are its as-fed ones, unless
    `prep` (``data.preprocess.enabled: true``; `auto` leaves the demo alone) changed it.
    """
    from deepfake_audio.sources.demo import DemoClip, generate_clip

    demo = DemoClip(
        clip_id=clip.clip_id,
        split=clip.split,
        label=clip.label,
        speaker=clip.speaker,
        attack=clip.attack,
        seed=clip.demo_seed,  # type: ignore[arg-type]
    )
    wave = generate_clip(demo, sample_rate=fp.sample_rate, clip_seconds=fp.clip_seconds)
    digest = hashlib.sha256(np.ascontiguousarray(wave).tobytes()).hexdigest()
    meta: dict[str, Any] = {
        "duration_s": fp.clip_seconds,
        "sample_rate": fp.sample_rate,
        "sha256": digest,
    }
    raw = cue_cells("raw", wave, fp.sample_rate)
    meta.update(raw)
    if prep is not None:
        from deepfake_audio.dsp.audio import AudioError

        try:
            wave = prepare(wave, fp.sample_rate, prep, fp.n_samples, clip.clip_id)
        except ShortClip as exc:
            raise BadFile(str(exc), dropped="short") from None
        except AudioError as exc:
            raise BadFile(str(exc)) from None
        fitted = fix_length(wave, fp.n_samples, crop=fp.crop, pad=fp.pad)
        meta.update(cue_cells("as_fed", fitted, fp.sample_rate))
    else:
        fitted = wave
        as_fed = {cue_column("as_fed", name): raw[cue_column("raw", name)] for name in CUE_NAMES}
        meta.update(as_fed)
    if keep_wave:
        meta["wave"] = wave
    return clip_features(fitted, fp), meta


# One row of the build as a worker returns it: (copy number, stored features or None on
# error, manifest metadata or {"error": reason}, normalisation moments or None).
_Row = tuple[int, np.ndarray | None, dict[str, Any], Moments | None]


def _extract(index: int) -> tuple[int, list[_Row]]:
    """Runs in a worker process: clip `index` of the build in, its rows out.

    The first row is the clip itself (copy 0): its stored features (float16, or int16 for
    waveforms) and their moments, or its error. A training clip of a build that keeps waves
    also brings its int16 wave (meta "wave", at most max_samples long) and length, and
    then one row per codec copy, made from the same decoded wave (decoding or generating a
    clip costs more than the round trip itself).
    """
    assert _JOB is not None, "_extract runs only in an extraction_pool worker"
    clip, fp, root = _JOB.clips[index], _JOB.features, _JOB.root
    keep = _JOB.keeps_waves and clip.split == "train"
    codec = _JOB.validation_codec if clip.split == "validation" else None
    vocode = bool(_JOB.vocoders) and clip.split == "train" and clip.target == 1
    source_wave = None
    try:
        wave_too = keep or codec is not None or vocode
        if clip.demo_seed is not None:
            feats, meta = _demo_features(clip, fp, keep_wave=wave_too, prep=_JOB.preprocess)
        elif wave_too:
            path = Path(root) / clip.path
            feats, meta = file_features(path, fp, keep_wave=True, prep=_JOB.preprocess)
        else:
            feats, meta = file_features(Path(root) / clip.path, fp, prep=_JOB.preprocess)
        if vocode:
            source_wave = meta["wave"]
        if codec is not None:
            feats, meta["augmentation"], as_fed = _validation_copy(meta.pop("wave"), clip, codec)
            meta.update(as_fed)
        stored = None
        if keep:
            wave = meta.pop("wave")
            length = min(int(wave.size), fp.max_samples)
            stored = fix_length(wave, fp.max_samples, crop=fp.crop, pad=fp.pad)[:length]
            meta["wave"] = encode_waves(stored)
            meta["wave_samples"] = length
        rows = [_row(0, feats, meta, clip, fp)]
    except BadFile as exc:
        error = {"error": _relative(str(exc), clip, root), "dropped": exc.dropped}
        return index, [(0, None, error, None)]
    if stored is not None:
        rows.extend(_copy_row(stored, clip, copy, meta) for copy in range(1, _JOB.copies + 1))
    if source_wave is not None:
        for name in _JOB.vocoders:
            rows.extend(_vocoded_rows(source_wave, clip, name, meta))
    return index, rows


VOCODED_ATTACK = "vocoded_"  # + the vocoder's name: the attack id of a vocoded clip


def _vocoded_rows(wave: np.ndarray, clip: Clip, name: str, source: dict[str, Any]) -> list[_Row]:
    """The fake clip vocoder `name` makes of bona fide training clip `clip` (its preprocessed
    recording `wave`), and its codec copies when the build keeps waves.

    The copy is made of the part of the recording its source's rows hold (the stored wave,
    or the model's window), so it is as long as what it stands beside; it is then cut and
    featurised as its source was. A row of its own (meta "_clip" is its `Clip`: label spoof,
    attack ``vocoded_<name>``, the source's speaker and path), seeded by `seed` and its id.
    A copy that cannot be made is listed, never fatal (meta "dropped").
    """
    from deepfake_audio.dsp.vocoders import vocode

    assert _JOB is not None
    fp = _JOB.features
    made = replace(
        clip, clip_id=f"{clip.clip_id}+{name}", label="spoof", attack=VOCODED_ATTACK + name
    )
    keep = _JOB.keeps_waves
    length = fp.max_samples if keep else fp.n_samples
    part = wave if wave.size <= length else fix_length(wave, length, crop=fp.crop)
    seed = int(np.random.default_rng([_JOB.seed, _stable_hash(made.clip_id)]).integers(2**31))
    try:
        vocoded = vocode(part, fp.sample_rate, name, seed=seed)
        fitted = fix_length(vocoded, fp.n_samples, crop=fp.crop, pad=fp.pad)
        meta: dict[str, Any] = {
            "duration_s": source.get("duration_s", ""),
            "sample_rate": source.get("sample_rate", ""),
            "sha256": hashlib.sha256(vocoded.tobytes()).hexdigest(),
            "augmentation": f"vocoded:{name}",
            **cue_cells("raw", vocoded, fp.sample_rate),
            **cue_cells("as_fed", fitted, fp.sample_rate),
            "_clip": made,
        }
        if keep:
            meta["wave"] = encode_waves(vocoded)
            meta["wave_samples"] = int(vocoded.size)
        rows = [_row(0, clip_features(fitted, fp), meta, made, fp)]
    except (BadFile, ValueError) as exc:
        message = f"{clip.path}: vocoder {name} failed ({exc})"
        return [(0, None, {"error": message, "dropped": "vocoder"}, None)]
    if keep:
        rows.extend(_copy_row(vocoded, made, copy, meta) for copy in range(1, _JOB.copies + 1))
    return rows


def _row(
    copy: int, feats: np.ndarray, meta: dict[str, Any], clip: Clip, fp: FeaturesParams
) -> _Row:
    """A computed row, checked: features that are not finite make the clip a bad file."""
    if not np.all(np.isfinite(feats)):
        raise BadFile(f"{clip.path}: features are not finite")
    return copy, stored_features(feats, fp), meta, moments(feats)


def _copy_row(stored: np.ndarray, clip: Clip, copy: int, source: dict[str, Any]) -> _Row:
    """Codec copy `copy` of a training clip's stored wave, as a row (or its error)."""
    assert _JOB is not None
    fp = _JOB.features
    try:
        wave, augmentation = _codec_copy(stored, clip, copy)
        feats = clip_features(fix_length(wave, fp.n_samples, fp.crop, fp.pad), fp)
        meta = {k: v for k, v in source.items() if k not in ("wave", "augmentation")}
        meta["augmentation"] = augmentation
        meta["wave"] = encode_waves(wave)
        return _row(copy, feats, meta, clip, fp)
    except (BadFile, UserError, ValueError) as exc:
        return copy, None, {"error": _relative(f"{clip.path}: {exc}", clip, _JOB.root)}, None


def _relative(message: str, clip: Clip, root: str) -> str:
    """Name the file relative to data.path, as the manifests and bad_files.csv do."""
    return message.replace(str(Path(root) / clip.path), clip.path)


def _stable_hash(text: str) -> int:
    """A 64-bit number from a clip id, the same in every process (unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


# Compression levels drawn for codec copies (soundfile's 0 = best, 1 = smallest): MP3 at
# 16 kHz from about 190 down to 25 kbit/s (dsp.augment.codec_round_trip).
CODEC_LEVELS = (0.0, 0.9)


def _codec_copy(wave: np.ndarray, clip: Clip, copy: int) -> tuple[np.ndarray, str]:
    """Codec copy number `copy` of a training wave: (the copy, "codec@level").

    A clip's copies cycle through `augment.codecs` from a start drawn per clip, so one copy
    per clip splits the clips between the codecs and len(codecs) copies give each clip one of
    each. The copy is scaled back to the source's RMS: serving normalises the level of what
    it decodes, so a copy must not carry the codec's small level change as a cue. Seeded by
    `seed`, the clip id and the copy number: the same copy in every build and worker.
    """
    assert _JOB is not None
    codecs = _JOB.augment.codecs
    key = _stable_hash(clip.clip_id)
    start = int(np.random.default_rng([_JOB.seed, key]).integers(len(codecs)))
    codec = codecs[(start + copy - 1) % len(codecs)]
    return _round_trip(wave, codec, np.random.default_rng([_JOB.seed, key, copy]))


def _round_trip(wave: np.ndarray, codec: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """`wave` through `codec` at a level drawn from `rng`, back at the source's RMS: serving
    normalises the level of what it decodes, so a copy must not carry the codec's small level
    change as a cue."""
    from deepfake_audio.dsp.augment import codec_round_trip

    assert _JOB is not None
    level = float(rng.uniform(*CODEC_LEVELS))
    copied = codec_round_trip(wave, _JOB.features.sample_rate, codec, compression_level=level)
    before = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    after = float(np.sqrt(np.mean(np.square(copied, dtype=np.float64))))
    if after > 0:
        copied = copied * np.float32(before / after)
    return np.clip(copied, -1.0, 1.0).astype(np.float32), f"{codec}@{level:.2f}"


# Copy numbers of training clips start at 1; a validation clip's one round trip draws its
# level from a stream no training copy uses.
_VALIDATION_STREAM = 0


def _validation_copy(
    wave: np.ndarray, clip: Clip, codec: str
) -> tuple[np.ndarray, str, dict[str, float]]:
    """A validation clip's features after one round trip through `codec` (data.validation_codec),
    the augmentation label for its manifest row and its as-fed cues (of the round trip).

    The row replaces the clip's own (no extra rows): validation keeps its clips and size, and
    every clip of both classes carries the same codec history, so a model that learned "was
    once an MP3" from a corpus where only fakes were loses on validation, where it is chosen.
    Seeded by `seed` and the clip id, like the training copies.
    """
    assert _JOB is not None
    fp = _JOB.features
    rng = np.random.default_rng([_JOB.seed, _stable_hash(clip.clip_id), _VALIDATION_STREAM])
    try:
        copied, label = _round_trip(wave, codec, rng)
    except (UserError, ValueError) as exc:
        raise BadFile(f"{clip.path}: {codec} round trip failed ({exc})") from None
    fitted = fix_length(copied, fp.n_samples, fp.crop, fp.pad)
    return clip_features(fitted, fp), label, cue_cells("as_fed", fitted, fp.sample_rate)


@contextlib.contextmanager
def extraction_pool(
    clips: list[Clip],
    root: str,
    fp: FeaturesParams,
    augment: AugmentParams | None = None,
    seed: int = 0,
    validation_codec: str | None = None,
    preprocess: Preprocess | None = None,
    vocoders: tuple[str, ...] = (),
) -> Iterator[Callable[[], Iterator[tuple[int, list[_Row]]]]]:
    """A worker pool over `clips`; yields a function that streams `_extract` of every clip
    (its row and its codec copies' rows), in order, each time it is called (the benchmark
    calls it repeatedly on a warm pool).

    Everything a worker needs is in place before the fork, so a task is one integer and each
    message back carries 16 clips: per-clip pickling in the parent was what kept two workers
    from going twice as fast as one.

    A `ProcessPoolExecutor`, not a `multiprocessing.Pool`: leaving a Pool early (the first
    bad file under `on_bad_file: fail`, Ctrl-C) calls `Pool.terminate`, which can kill a
    worker while it holds the result pipe's lock and then wait for that lock forever; CI
    hung there. The executor instead cancels the chunks no worker has started, lets the
    running ones finish, and reports a worker that died (the OOM killer) as an error where
    a Pool would wait for its results forever.
    """
    global _JOB
    # Import what the workers run before forking them, so each worker inherits it instead of
    # importing it again on its first clip (a fixed cost that dominated small datasets).
    from deepfake_audio.dsp import features  # noqa: F401

    if not fp.feature_kind.audio:
        from deepfake_audio.dsp import images  # noqa: F401
    workers = _workers(fp)
    # Large chunks save parent CPU; small datasets still get every worker busy.
    chunk = max(1, min(16, len(clips) // (4 * workers)))
    _JOB = _Job(
        clips,
        str(root),
        fp,
        augment or AugmentParams(),
        seed,
        validation_codec,
        preprocess,
        tuple(vocoders),
    )
    # With fork, the executor starts every worker on the first map, before its own thread.
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_worker
    )
    try:
        yield lambda: _worker_results(pool.map(_extract, range(len(clips)), chunksize=chunk))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _JOB = None


def _worker_results(results: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from results
    except BrokenProcessPool:
        raise UserError(
            "dataset: a feature worker process died (killed, perhaps for lack of memory); "
            "lower features.workers or free memory, then rerun"
        ) from None


def _workers(fp: FeaturesParams) -> int:
    return fp.workers or os.cpu_count() or 1


def _init_worker() -> None:
    """One BLAS thread per worker process: the pool already uses every core."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _keep_freed_memory()


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel.

    Each clip allocates and frees a few arrays of ~0.4 MB. By default glibc maps such blocks
    fresh and unmaps (or trims) them on free, so every clip paid for page faults on memory it
    had just released: about a third of the feature time. Keeping up to 64 MB per worker
    removes that. A no-op where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)
    mallopt(_M_MMAP_THRESHOLD, 8 << 20)


class _Progress:
    """A progress bar with clips/s on stderr; plain lines every 10 % when not a terminal."""

    def __init__(self, split: str, total: int) -> None:
        self.split, self.total = split, total
        self.started = self.shown = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.step = max(total // 10, 1)

    def update(self, done: int) -> None:
        now = time.monotonic()
        last = done == self.total
        if self.tty and not last and now - self.shown < 0.2:
            return
        if not self.tty and not last and done % self.step:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        filled = int(24 * done / max(self.total, 1))
        bar = "#" * filled + "." * (24 - filled)
        line = (
            f"{self.split:>10} [{bar}] {done}/{self.total} clips, {rate:.0f} clips/s, "
            f"eta {eta:.0f} s"
        )
        if self.tty:
            print("\r" + line, end="\n" if last else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


# Per split: the source clips' targets and {view: {cue: values}}, what the audit reads.
_CueTable = dict[str, tuple[list[int], dict[str, dict[str, list[float]]]]]


def _write_splits(
    params: Params, clips: list[Clip], tmp: Path
) -> tuple[
    dict[str, dict[str, int]],
    dict[str, Any],
    list[dict[str, str]],
    float,
    int,
    _CueTable,
    dict[str, int],
]:
    """Shards and manifests of every split into `tmp`: (counts of source clips, train stats,
    bad files, seconds, codec copies written, the source clips' cues). Vocoded clips and
    clips dropped as too short are counted in `extras` (keys "vocoded", "dropped_short")."""
    fp = params.features
    # With data.corpora, a clip's path already starts with its corpus's path.
    root = "." if params.data.corpora else (params.data.path or ".")
    keeps_waves = params.augment.applies_to(fp.feature_kind)
    bad: list[dict[str, str]] = []
    counts: dict[str, dict[str, int]] = {}
    stats: dict[str, Any] = {}
    copies = 0
    extras = {"vocoded": 0, "dropped_short": 0}
    seconds = 0.0  # duration of the source audio kept, before crop/pad
    cues: _CueTable = {}
    # The held-out corpora's splits exist only when data.corpora has such corpora.
    splits = (*SPLITS, *(s for s in HELDOUT_SPLITS.values() if any(c.split == s for c in clips)))
    by_split = {split: [c for c in clips if c.split == split] for split in splits}
    ordered = [c for split in splits for c in by_split[split]]
    # sha256 (raw 32 bytes) -> index in `ordered`: finds the same audio in two splits.
    first_seen: dict[bytes, int] = {}
    with extraction_pool(
        ordered,
        root,
        fp,
        params.augment,
        params.seed,
        params.data.validation_codec,
        preprocess_of(params),
        params.data.vocoded.vocoders,
    ) as stream:
        # One ordered stream over all splits, so the workers never idle at a split boundary;
        # each split below takes its own clips' results off it, in order.
        results = stream()
        for split in splits:
            split_clips = by_split[split]
            writer = ShardWriter(tmp, split, params.data.shard_size, fp.feature_shape)
            keep = keeps_waves and split == "train"
            waves = WaveWriter(tmp, params.data.shard_size) if keep else None
            per_label: Counter[str] = Counter()
            short_by_label: Counter[str] = Counter()  # dropped as too short, this split
            targets: list[int] = []
            views: dict[str, dict[str, list[float]]] = {
                view: {name: [] for name in CUE_NAMES} for view in CUE_VIEWS
            }
            cues[split] = (targets, views)
            held_out: list[str] = []  # each source clip's corpus (held-out splits' audit)
            progress = _Progress(split, len(split_clips))
            with open(tmp / f"manifest_{split}.csv", "w", newline="") as handle:
                manifest = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
                manifest.writeheader()
                for done in range(1, len(split_clips) + 1):
                    index, rows = next(results)
                    progress.update(done)
                    clip = ordered[index]
                    for copy, feats, meta, clip_moments in rows:
                        # A vocoded clip (and its codec copies) brings its own Clip record.
                        row_clip = meta.pop("_clip", clip)
                        made = row_clip is not clip
                        if feats is None:
                            dropped = meta.get("dropped")  # "short", "vocoder" or None
                            if params.data.on_bad_file == "fail" and not dropped:
                                raise UserError(f"{meta['error']} (data.on_bad_file: fail)")
                            reason = meta["error"]
                            bad.append({"path": clip.path, "split": split, "reason": reason})
                            if dropped == "short":
                                extras["dropped_short"] += 1
                                short_by_label[clip.label] += 1
                            continue
                        if not copy and not made:
                            key = bytes.fromhex(meta["sha256"])
                            other = ordered[first_seen.setdefault(key, index)]
                            if other.split != split:
                                raise UserError(
                                    f"{clip.path} ({split}) has the same audio as {other.path} "
                                    f"({other.split}): the same clip in two splits leaks the test"
                                )
                        shard, row = writer.add_clip(feats, clip_moments)
                        wave = meta.pop("wave", None)
                        if waves is not None and waves.add(wave) != (shard, row):
                            raise AssertionError("wave shards out of step with feature shards")
                        if copy:
                            copies += 1
                        elif made:
                            extras["vocoded"] += 1
                        else:
                            per_label[clip.label] += 1
                            seconds += float(meta["duration_s"] or 0.0)
                            targets.append(int(clip.target))
                            held_out.append(clip.corpus)
                            for view, table in views.items():
                                for name, values in table.items():
                                    values.append(meta.get(cue_column(view, name), np.nan))
                        manifest.writerow(
                            {
                                "clip_id": _copy_id(row_clip, copy, meta),
                                "path": clip.path,
                                "split": split,
                                "label": row_clip.label,
                                "target": row_clip.target,
                                "speaker": row_clip.speaker,
                                "attack": row_clip.attack,
                                "corpus": row_clip.corpus,
                                **meta,
                                "shard": shard,
                                "row": row,
                                "copy_of": row_clip.clip_id if copy else "",
                            }
                        )
            writer.flush()
            if waves is not None:
                waves.flush()
            counts[split] = {label: per_label.get(label, 0) for label in LABELS}
            if split not in SPLITS:
                _check_dropped(split, per_label, short_by_label, fp)
                _check_held_out(split, held_out, targets)
                cues.update(_per_corpus(cues.pop(split), held_out))
                continue
            _check_dropped(split, per_label, short_by_label, fp)
            if not sum(per_label.values()):
                raise UserError(f"split {split!r} is empty after decoding: no usable clips")
            missing = [label for label in LABELS if per_label.get(label, 0) == 0]
            if missing:
                raise UserError(
                    f"split {split!r} has no {missing[0]} clips: EER needs both classes"
                )
            if split == "train":
                stats = writer.statistics()
    return counts, stats, bad, seconds, copies, cues, extras


def preprocess_of(params: Params) -> Preprocess | None:
    """`data.preprocess` resolved for this build's source (None: off)."""
    from deepfake_audio.dsp.preprocess import resolve

    return resolve(
        params.data.preprocess, params.data.audio_source(), params.features.feature_kind.audio
    )


# A class that loses more than this share of a split to ``short: drop`` is warned about: the
# drop is then a selection by length, which can be by class; above `DROPPED_FAIL_SHARE` the
# split no longer measures anything and the build stops (the FoR sample at 2 s windows would
# keep 1 of its 28 test fakes; docs/data.md).
DROPPED_WARN_SHARE = 0.1
DROPPED_FAIL_SHARE = 0.5


def _check_dropped(
    split: str, kept: Counter[str], dropped: Counter[str], fp: FeaturesParams
) -> None:
    """Warn for each class of `split` that ``short: drop`` thinned out; fail for one it gutted."""
    for label in LABELS:
        total = kept.get(label, 0) + dropped.get(label, 0)
        if not total or dropped.get(label, 0) <= DROPPED_WARN_SHARE * total:
            continue
        what = (
            f"data.preprocess.short: drop leaves {kept.get(label, 0)} of {total} {label} clips "
            f"in {split} (the others are shorter than features.clip_seconds "
            f"{fp.clip_seconds:g} s after trimming silence)"
        )
        fix = "use a shorter features.clip_seconds or data.preprocess.short: pad"
        if dropped.get(label, 0) > DROPPED_FAIL_SHARE * total:
            raise UserError(f"{what}: the split would no longer measure that class; {fix}")
        print(f"warning: {what}; {fix} keeps them", file=sys.stderr)


def _check_held_out(split: str, corpora: list[str], targets: list[int]) -> None:
    """Every held-out corpus needs both classes after decoding: its EER is reported alone."""
    for name in dict.fromkeys(corpora):
        labels = {t for c, t in zip(corpora, targets, strict=True) if c == name}
        if labels != {0, 1}:
            missing = "bonafide" if 1 not in labels else "spoof"
            raise UserError(
                f"data.corpora: corpus {name!r} ({split}) has no {missing} clips after "
                "decoding: its cross-corpus EER needs both classes"
            )


def _per_corpus(
    table: tuple[list[int], dict[str, dict[str, list[float]]]], corpora: list[str]
) -> _CueTable:
    """A held-out split's cues as one audit entry per corpus (`xcorpus.<name>`): a held-out
    corpus is scored alone, so its shortcuts are audited alone."""
    targets, views = table
    out: _CueTable = {}
    for name in dict.fromkeys(corpora):
        keep = [i for i, c in enumerate(corpora) if c == name]
        out[f"xcorpus.{name}"] = (
            [targets[i] for i in keep],
            {
                view: {cue: [values[i] for i in keep] for cue, values in table.items()}
                for view, table in views.items()
            },
        )
    return out


def _copy_id(clip: Clip, copy: int, meta: dict[str, Any]) -> str:
    """A copy's clip id: its source's, the codec and the copy number (``id+mp3.1``)."""
    if not copy:
        return clip.clip_id
    codec = str(meta.get("augmentation", "")).split("@")[0]
    return f"{clip.clip_id}+{codec}.{copy}"


def build(params: Params, clips: list[Clip], out: Path, reports: Path) -> dict[str, Any]:
    """Decode, featurise and shard every clip; write manifests, stats and reports.

    Streams: features go to bounded shards and manifest rows straight to disk,
    so memory does not grow with the corpus (the clip list itself is a few
    hundred bytes a clip). Writes into a temporary folder next to `out` and
    renames it at the end, so a crash or Ctrl-C never leaves a half-built
    dataset where DVC would cache it.
    """
    fp = params.features
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        counts, stats, bad, seconds, copies, cues, extras = _write_splits(params, clips, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-built dataset left behind
        raise
    prep = preprocess_of(params)
    write_stats(
        tmp,
        fp,
        # The preprocessing goes with the features: what a served model reads them from.
        params.section("features") | ({"preprocess": prep.to_dict()} if prep else {}),
        source="corpora" if params.data.corpora else params.data.source,
        counts=counts,
        codec_copies=copies,
        validation_codec=params.data.validation_codec,
        statistics=stats,
        augment=params.augment,
        keeps_waves=params.augment.applies_to(fp.feature_kind),
    )
    # Renames only, so an interruption leaves either the old dataset or the new one whole
    # (at worst beside `<out>.old`), never a half-deleted folder.
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.replace(old)
    tmp.replace(out)
    shutil.rmtree(old, ignore_errors=True)
    summary = _write_reports(reports, counts, bad, clips, fp, seconds, copies, extras)
    write_shortcut_audit(Path(reports) / SHORTCUTS_REPORT, cues, fp)
    return summary


SHORTCUTS_REPORT = "shortcuts.json"


def write_shortcut_audit(path: Path, cues: _CueTable, fp: FeaturesParams) -> dict[str, Any]:
    """`reports/shortcuts.json`: every cue of every split used alone as a score
    (`scoring.shortcuts.audit`), and a warning on stderr for each cue at 30 % EER or less.

    Source clips only: a codec copy is its source's audio again. Pictures have no audio:
    their report says the audit was skipped.
    """
    if not fp.feature_kind.audio:
        report: dict[str, Any] = {
            "skipped": f"features.kind {fp.kind}: the clips are pictures, no audio cues"
        }
    else:
        report = shortcuts.audit(
            {
                split: (
                    np.asarray(targets),
                    {
                        view: {name: np.asarray(v, dtype=np.float64) for name, v in table.items()}
                        for view, table in views.items()
                    },
                )
                for split, (targets, views) in cues.items()
            }
        )
        report["units"] = dict(CUES)
    write_json(path, report)
    for line in shortcuts.warnings(report, str(path)):
        print(line, file=sys.stderr)
    return report


def _write_reports(
    reports: Path,
    counts: dict[str, dict[str, int]],
    bad: list[dict[str, str]],
    clips: list[Clip],
    fp: FeaturesParams,
    seconds: float,
    copies: int = 0,
    extras: dict[str, int] | None = None,
) -> dict[str, Any]:

    reports = Path(reports)
    reports.mkdir(parents=True, exist_ok=True)
    write_dict_rows(reports / "bad_files.csv", ("path", "split", "reason"), bad)
    kept = sum(sum(c.values()) for c in counts.values())
    summary: dict[str, Any] = {"clips": kept, "rejected": len(bad)}
    if fp.feature_kind.audio:
        summary["duration_s"] = round(seconds, 1)
        summary["duration_s_in_features"] = round(kept * fp.clip_seconds, 1)
    summary["per_split"] = counts
    if copies:
        summary["train_codec_copies"] = copies
    for key, value in (extras or {}).items():
        if value:  # train_vocoded, dropped_short: only when there are any (the demo has none)
            summary["train_vocoded" if key == "vocoded" else key] = value
    write_json(reports / "dataset.json", summary)
    if bad:
        reasons = Counter(_reason_kind(row["reason"]) for row in bad)
        print(
            f"skipped {len(bad)} of {len(clips)} files (data.on_bad_file: skip): "
            + ", ".join(f"{n} {why}" for why, n in reasons.most_common())
            + f"; each listed in {reports / 'bad_files.csv'}",
            file=sys.stderr,
        )
    return summary


def _reason_kind(reason: str) -> str:
    """The reason without the file name, for the one-line summary ('too short', ...)."""
    text = reason.split(": ", 1)[-1]
    return text.split(" (", 1)[0]


# --- reading -----------------------------------------------------------------
