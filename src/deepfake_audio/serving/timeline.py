"""Where in a recording the fake is: every window's calibrated probability, and the ranges.

A served score is one number per file, the mean bona fide logit over windows of the
training clip's length; a few synthetic sentences in a long interview are diluted in it
(pyfunc.py says why the mean is still the right file score). The timeline keeps the
windows apart:

    windows   one per window of `features.clip_seconds`, starting every `hop` seconds
              (plus one aligned with the end, so every sample is scored): its start and
              end, the raw bona fide logit `score`, the calibrated `fake_probability`
              (the model's own calibration, fitted on validation clips, applied to that
              window alone) and `fake` (that window alone at or below the served threshold)
    ranges    the merged fake stretches (below): "fake from 12.5 s to 19.0 s"

A moment's score is the median logit of the windows that hear it (every window covering
it), and it is fake when that median is at or below the served threshold: when most of the
windows around it say fake. The recording is cut at every window start and end into short
stretches, each with that median; fake stretches, after a running median over `smooth`
stretches (3 by default, an odd number: it drops a single stray stretch - a cough, a door -
and moves no step edge), are merged into the ranges. A median rather than the mean: a
window that is mostly fake has a very low logit (-5 to -7 on the demo corpus, where genuine
speech sits near +3), and in a mean one such window outvotes the genuine ones around it, so
ranges grew past the splice; with a median the edge falls where half the windows hearing a
moment are fake.

The hop defaults to an eighth of a window (0.25 s for the default 2 s window): each moment
is heard by eight windows, and an edge can fall every quarter second. Chosen on the demo
corpus's *validation* speakers (a 10 s splice of each seen attack into five minutes of one
speaker, the default detector; never the test speakers): the largest edge error was 1.3 s
at half a window (the served windows) and with the mean, 0.95 s at an eighth with the
median. Rechecked after per-window levelling (below) on two validation recordings (plan
seeds 42 and 7), hops 0.125/0.25/0.5 s, smoothing 1/3/5 and the threshold moved by +-1 and
+-2 logits: no setting placed every passage within 1 s on both; where the detector hears a
passage the defaults do (seed 42: all four within 0.95 s), where it does not (seed 7: A01
heard from 7.7 s in, A03 not at all) none does. The price is four times the windows of the
served score, and the served windows again for the file's score (a benchmark figure,
docs/serving.md).

Each window is levelled as a served clip of its own (`levelled_windows`): the gain from
that window's RMS, as `audio.load_clip` levels a file of 2 s and as every training clip was
levelled, and not from the whole recording's RMS, which would put a quiet or loud stretch
at a level no training clip had. So a window's score is exactly `predict`'s score of that
window cut to its own file (tests/test_timeline.py holds them equal; resampled input can
differ at the cut, where the timeline's filter sees the neighbouring samples). The file's
own score stays `predict`'s (`served_score`: the served windows at the whole recording's
level, streamed), so a verdict does not depend on whether a timeline was asked for; the
mean of the window scores can differ from it where the level changes. Per-window
levelling was tried because it is the faithful input, not to move edges: on the spliced
test recording it moved A02's edges by +0.25 s and A01's start by -0.25 s, nothing else.

Memory is flat in the recording's length: the audio comes through `dsp.stream` in blocks
(decoded and resampled as `audio.load_wave` would; one pass for the length, the checks and
the whole recording's gain, one to score the windows, one for the file's served score), at
most one window plus one block of it is held, windows go through the network `BATCH` at a
time, and the waveform for the plot is kept as a fixed number of min/max columns. What
grows is the table itself: a few numbers per window (an hour at a 1 s hop: 3,600 rows).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from deepfake_audio.dsp.audio import CUT_IT, Source, fix_length

# Windows through the network per call: the serving batch.
BATCH = 64
DEFAULT_SMOOTH = 3
# The default hop, in windows (the module docstring says why a quarter).
DEFAULT_HOP = 0.125
# Stretches whose medians are taken at once (`coverage`): bounds its table.
CHUNK = 4096
# Columns of the waveform envelope kept for the plot: a figure's width in pixels, about.
ENVELOPE_COLUMNS = 2000
CSV_COLUMNS = ("start_s", "end_s", "score", "fake_probability", "fake")


@dataclasses.dataclass(frozen=True)
class Timeline:
    """A recording's windows and fake ranges (seconds), and the file's own result."""

    duration: float  # seconds, at the model's rate
    window: float  # seconds
    hop: float  # seconds
    smooth: int
    threshold: float  # raw bona fide logit: a window is fake at or below it (smoothed)
    threshold_probability: float  # the calibrated probability at that logit
    starts: np.ndarray  # (n,) window starts, seconds
    scores: np.ndarray  # (n,) raw bona fide logits
    probabilities: np.ndarray  # (n,) calibrated P(spoof)
    fake: np.ndarray  # (n,) bool: the window alone at or below the threshold
    edges: np.ndarray  # (m + 1,) the stretches' edges, seconds
    stretch_scores: np.ndarray  # (m,) median logit of the windows hearing each stretch
    stretch_fake: np.ndarray  # (m,) bool: smoothed stretch score at or below the threshold
    stretch_probabilities: np.ndarray  # (m,) calibrated P(spoof) of the stretch scores
    ranges: list[tuple[float, float]]
    envelope: np.ndarray  # (2, columns): min and max of the waveform per column
    score: float  # the file's served score (`served_score`), not the windows' mean
    fake_probability: float
    label: str

    def rows(self) -> list[dict[str, Any]]:
        """One dict per window, the CSV's columns."""
        return [
            {
                "start_s": round(float(start), 3),
                "end_s": round(float(min(start + self.window, self.duration)), 3),
                "score": round(float(score), 6),
                "fake_probability": round(float(prob), 6),
                "fake": bool(fake),
            }
            for start, score, prob, fake in zip(
                self.starts, self.scores, self.probabilities, self.fake, strict=True
            )
        ]

    def summary(self) -> list[str]:
        """The ranges in words: "fake from 12.5 s to 19.0 s"."""
        return [f"fake from {a:.1f} s to {b:.1f} s" for a, b in self.ranges]

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_s": round(self.duration, 3),
            "window_s": self.window,
            "hop_s": self.hop,
            "smooth_windows": self.smooth,
            "threshold": self.threshold,
            "threshold_probability": round(self.threshold_probability, 6),
            "score": round(self.score, 6),
            "fake_probability": round(self.fake_probability, 6),
            "label": self.label,
            "ranges": [{"start_s": round(a, 3), "end_s": round(b, 3)} for a, b in self.ranges],
            "summary": self.summary(),
            "windows": self.rows(),
        }


# --- pure parts ------------------------------------------------------------------


def window_starts(total: int, n_samples: int, hop: int) -> list[int]:
    """`audio.sliding_windows`' starts for `total` samples (one window when it is short)."""
    if total <= n_samples:
        return [0]
    last = total - n_samples
    starts = list(range(0, last + 1, hop))
    if starts[-1] != last:
        starts.append(last)
    return starts


def stream_windows(
    blocks: Iterator[np.ndarray], total: int, n_samples: int, hop: int, pad: str = "repeat"
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, window) over blocks of a `total`-sample signal, as `sliding_windows` cuts it.

    Holds at most one window plus one block: samples before the next window's start are
    dropped as soon as no window needs them.
    """
    starts = window_starts(total, n_samples, hop)
    if total <= n_samples:  # one padded window: the whole (short) signal
        parts = list(blocks)
        wave = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        yield 0, fix_length(wave, n_samples, pad=pad)  # type: ignore[arg-type]
        return
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0  # absolute index of buffer[0]
    index = 0
    for block in blocks:
        buffer = np.concatenate([buffer, block]) if buffer.size else block
        while index < len(starts) and starts[index] + n_samples <= offset + buffer.size:
            start = starts[index]
            yield start, buffer[start - offset : start - offset + n_samples].copy()
            index += 1
        if index < len(starts):
            drop = starts[index] - offset
            if drop > 0:
                buffer = buffer[drop:]
                offset += drop
    if index < len(starts):  # the stream was shorter than the first pass said
        raise ValueError(f"the audio ended at {offset + buffer.size} of {total} samples")


def median_smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Running median over `width` (odd) values, the ends repeating the edge values."""
    values = np.asarray(values, dtype=np.float64)
    if width <= 1 or values.size <= 1:
        return values.copy()
    if width % 2 == 0:
        raise ValueError(f"smoothing width must be odd, got {width}")
    half = width // 2
    padded = np.concatenate([np.repeat(values[:1], half), values, np.repeat(values[-1:], half)])
    view = np.lib.stride_tricks.sliding_window_view(padded, width)
    return np.median(view, axis=1)


def coverage(
    starts: np.ndarray, window: float, duration: float, logits: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The stretches between window edges, and each one's median logit over the windows
    that hear it (the two middle ones averaged for an even count).

    Returns `(edges, medians)`: `edges` (m + 1,) from 0 to `duration`, `medians` (m,).
    The windows of a stretch are a run of the sorted starts (found by binary search), so
    the work is a (stretches x windows-per-moment) table, built `CHUNK` stretches at a time:
    bounded memory whatever the hop and the length.
    """
    starts = np.asarray(starts, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    order = np.argsort(starts, kind="stable")
    starts, logits = starts[order], logits[order]
    window = min(window, duration)
    ends = np.minimum(starts + window, duration)
    edges = np.unique(np.concatenate([[0.0, duration], starts, ends]))
    mids = (edges[:-1] + edges[1:]) / 2
    first = np.searchsorted(starts, mids - window, side="right")  # start > mid - window
    last = np.maximum(np.searchsorted(starts, mids, side="right"), first + 1)  # start <= mid
    first = np.minimum(first, len(starts) - 1)
    medians = np.empty(mids.size, dtype=np.float64)
    for a in range(0, mids.size, CHUNK):
        lo, hi = first[a : a + CHUNK], last[a : a + CHUNK]
        width = int((hi - lo).max())
        index = lo[:, None] + np.arange(width)[None, :]
        values = logits[np.minimum(index, len(logits) - 1)]
        values[index >= hi[:, None]] = np.nan
        medians[a : a + CHUNK] = np.nanmedian(values, axis=1)
    return edges, medians


def merge_ranges(edges: np.ndarray, fake: np.ndarray) -> list[tuple[float, float]]:
    """Consecutive fake stretches (between `edges`) joined into (start, end) ranges."""
    ranges: list[tuple[float, float]] = []
    edges = np.asarray(edges, dtype=np.float64)
    spans = zip(edges[:-1], edges[1:], strict=True)
    for (a, b), flag in zip(spans, np.asarray(fake, dtype=bool), strict=True):
        if not flag:
            continue
        if ranges and abs(ranges[-1][1] - a) < 1e-9:
            ranges[-1] = (ranges[-1][0], float(b))
        else:
            ranges.append((float(a), float(b)))
    return ranges


class Envelope:
    """Min and max of a signal in `columns` equal stretches, fed block by block."""

    def __init__(self, total: int, columns: int = ENVELOPE_COLUMNS) -> None:
        self.total = max(1, total)
        self.columns = max(1, min(columns, self.total))
        self.low = np.zeros(self.columns, dtype=np.float32)
        self.high = np.zeros(self.columns, dtype=np.float32)
        self.offset = 0

    def feed(self, block: np.ndarray) -> None:
        if block.size == 0:
            return
        index = (np.arange(self.offset, self.offset + block.size) * self.columns) // self.total
        index = np.minimum(index, self.columns - 1)
        np.minimum.at(self.low, index, block)
        np.maximum.at(self.high, index, block)
        self.offset += block.size

    def array(self) -> np.ndarray:
        return np.stack([self.low, self.high])


# --- scoring ---------------------------------------------------------------------


def hop_samples(hop_seconds: float | None, n_samples: int, sample_rate: int, default: float) -> int:
    """The hop in samples: `hop_seconds`, or `default` windows; between 10 ms and a window."""
    if hop_seconds is None or hop_seconds == 0:
        return max(1, int(round(n_samples * default)))
    if not math.isfinite(hop_seconds) or hop_seconds < 0.01:
        raise ValueError(f"hop {hop_seconds!r} s: expected at least 0.01 s")
    hop = int(round(hop_seconds * sample_rate))
    if hop > n_samples:
        raise ValueError(
            f"hop {hop_seconds:g} s is longer than the model's window "
            f"({n_samples / sample_rate:g} s): parts of the recording would go unscored"
        )
    return hop


def levelled_windows(
    source: Source,
    fp: Any,
    level: Any,
    hop: int,
    name: str | None = None,
    max_seconds: float | None = None,
    cap_note: str = CUT_IT,
    envelope: Envelope | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, window) as the model takes them: each window levelled as a served clip of
    its own would be (`stream.window_level`), or, for a recording no longer than one
    window, the recording's own gain before the padding (`audio.load_clip`'s order).

    `level` is `stream.measure`'s; `envelope`, when given, is fed the waveform at the whole
    recording's level (the plot's: per-window gains would make it jump at every hop).
    """
    from deepfake_audio.dsp import stream

    gain = np.float32(level.gain)

    def blocks() -> Iterator[np.ndarray]:  # unscaled: each window gets its own level
        for block in stream.resampled_blocks(source, fp.sample_rate, name, max_seconds, cap_note):
            if envelope is not None:
                envelope.feed(np.clip(block * gain, -1.0, 1.0))
            yield block

    n = fp.n_samples
    for start, window in stream_windows(blocks(), level.samples, n, hop, pad=fp.pad):
        if level.samples <= n:
            yield start, np.clip(window * gain, -1.0, 1.0)
        else:
            yield start, stream.window_level(window, level.gain)


def compute(
    detector: Any,
    source: Source,
    name: str,
    hop_seconds: float | None = None,
    smooth: int = DEFAULT_SMOOTH,
    max_seconds: float | None = None,
    cap_note: str = CUT_IT,
) -> Timeline:
    """The timeline of one recording under a `pyfunc.Detector` (audio models only).

    `source` is a path or the file's bytes; `name` is how errors call it. Raises
    `AudioError` (a `UserError`) for a file that cannot be scored, ValueError for a bad
    hop or smoothing width, or a model that does not take audio.
    """
    from deepfake_audio.dsp import stream

    fp = detector.features
    if not fp.feature_kind.audio:
        raise ValueError(f"a timeline needs an audio model; this one takes {fp.kind} pictures")
    if smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"smoothing over {smooth} windows: expected an odd number >= 1")
    rate, n = fp.sample_rate, fp.n_samples
    hop = hop_samples(hop_seconds, n, rate, DEFAULT_HOP)
    level = stream.measure(source, rate, name, max_seconds=max_seconds, cap_note=cap_note)
    envelope = Envelope(level.samples)
    windows = levelled_windows(source, fp, level, hop, name, max_seconds, cap_note, envelope)
    starts: list[int] = []
    scores: list[np.ndarray] = []
    for batch_starts, batch_logits in _scored(detector, windows, name):
        starts.extend(batch_starts)
        scores.append(batch_logits)
    logits = np.concatenate(scores)
    rule = detector.rule
    duration = level.samples / rate
    window_s = n / rate
    begin = np.asarray(starts, dtype=np.float64) / rate
    edges, means = coverage(begin, window_s, duration, logits)
    stretch_fake = median_smooth(means, smooth) <= rule.threshold
    ranges = merge_ranges(edges, stretch_fake)
    file_score = served_score(detector, source, level, name, max_seconds, cap_note)
    return Timeline(
        duration=duration,
        window=window_s,
        hop=hop / rate,
        smooth=smooth,
        threshold=float(rule.threshold),
        threshold_probability=float(rule.fake_probability(np.array([rule.threshold]))[0]),
        starts=begin,
        scores=logits,
        probabilities=np.asarray(rule.fake_probability(logits), dtype=np.float64),
        fake=logits <= rule.threshold,
        edges=edges,
        stretch_scores=means,
        stretch_fake=stretch_fake,
        stretch_probabilities=np.asarray(rule.fake_probability(means), dtype=np.float64),
        ranges=ranges,
        envelope=envelope.array(),
        score=file_score,
        fake_probability=float(rule.fake_probability(np.array([file_score]))[0]),
        label=rule.label(file_score),
    )


def served_score(
    detector: Any,
    source: Source,
    level: Any,
    name: str,
    max_seconds: float | None = None,
    cap_note: str = CUT_IT,
) -> float:
    """The file's served score, streamed: the mean logit of the served windows (the
    detector's hop) of the recording at the whole recording's level, as `Detector.score`
    computes it from `load_wave`. The timeline's windows are levelled one by one, so their
    mean would differ where the level changes; the file's verdict must not depend on
    whether a timeline was asked for. A third read of the file and a quarter more windows
    at the default hop (a benchmark figure); memory stays flat.
    """
    from deepfake_audio.dsp import stream

    fp = detector.features
    blocks = stream.conditioned_blocks(source, fp.sample_rate, level, name, max_seconds, cap_note)
    windows = stream_windows(blocks, level.samples, fp.n_samples, detector.hop, fp.pad)
    total, count = 0.0, 0
    for _, logits in _scored(detector, windows, name):
        total += float(np.sum(logits, dtype=np.float64))
        count += logits.size
    return total / count


def _scored(
    detector: Any, windows: Iterable[tuple[int, np.ndarray]], name: str
) -> Iterator[tuple[list[int], np.ndarray]]:
    """(starts, bona fide logits) of `windows`, BATCH at a time through one reused buffer:
    memory stays flat in the recording's length."""
    from deepfake_audio.dsp.features import clip_features

    fp = detector.features
    batch = np.empty((BATCH, *fp.input_shape), dtype=np.float32)
    starts: list[int] = []
    for start, window in windows:
        batch[len(starts)] = clip_features(window, fp).reshape(fp.input_shape)
        starts.append(start)
        if len(starts) == BATCH:
            yield starts, _logits(detector, batch, len(starts), name)
            starts = []
    if starts:
        yield starts, _logits(detector, batch, len(starts), name)


def _logits(detector: Any, batch: np.ndarray, rows: int, name: str) -> np.ndarray:
    inputs = batch[:rows]
    if not np.all(np.isfinite(inputs)):  # the dataset stage and `Detector` refuse these too
        raise ValueError(f"{name}: features are not finite")
    return detector.logits(inputs)


# --- the picture -----------------------------------------------------------------


def figure(timeline: Timeline, title: str = "") -> Any:
    """The timeline over the waveform: a matplotlib Figure (Agg), ranges shaded red.

    Top: the waveform's envelope, the fake ranges shaded. Bottom: the calibrated fake
    probability of each stretch (its median window logit through the calibration), and the
    probability the served threshold stands for (a dashed line), on one time axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), dpi=100)
    wave_ax, prob_ax = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.3))
    columns = timeline.envelope.shape[1]
    times = (np.arange(columns) + 0.5) * timeline.duration / columns
    wave_ax.fill_between(times, timeline.envelope[0], timeline.envelope[1], color="#4a6fa5", lw=0)
    wave_ax.set_yticks([])
    wave_ax.set_ylabel("audio")
    for a, b in timeline.ranges:
        for ax in (wave_ax, prob_ax):
            ax.axvspan(a, b, color="#d62728", alpha=0.18, lw=0)
    probabilities = timeline.stretch_probabilities
    prob_ax.stairs(probabilities, timeline.edges, color="#222222", lw=1.2)
    line = timeline.threshold_probability
    prob_ax.axhline(line, color="#d62728", ls="--", lw=1)
    prob_ax.set_ylim(-0.02, 1.02)
    prob_ax.set_xlim(0, timeline.duration)
    prob_ax.set_ylabel("P(fake)")
    prob_ax.set_xlabel("time (s)")
    verdict = ", ".join(timeline.summary()) or "no fake range"
    fig.suptitle(f"{title}  {verdict}".strip(), fontsize=10)
    fig.tight_layout()
    return fig


def write_png(timeline: Timeline, path: Any, title: str = "") -> None:
    """The figure as a PNG, written atomically (temporary name, then rename)."""
    from deepfake_audio.core.io import replacing

    fig = figure(timeline, title)
    with replacing(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, format="png")
