"""A recording in blocks: decoded, down-mixed, resampled and scaled without holding it whole.

`audio.load_wave` returns a whole recording, which is right for a clip and for the served
score of a file of a few minutes, but not for a timeline of an hour of audio: its memory
grows with the length. This module gives the same samples block by block, so a caller that
keeps only a window's worth of them (`serving.timeline`) runs in flat memory:

- `Resampler` resamples a stream with `scipy.signal.resample_poly`, each block with enough
  neighbouring input on both sides that the polyphase filter sees what it would see in the
  whole signal, and with block edges on multiples of the rate ratio's denominator so the
  output samples fall on the same instants. The blocks' output, joined, equals
  `audio.resample` of the whole (tests hold them to 1e-6), edge effects included.
- `measure` is a first pass: the length, the silence checks and `load_wave`'s gain (the
  RMS of the whole resampled recording). `conditioned_blocks`, a second pass, hands out
  `load_wave`'s scaled blocks; the timeline instead levels each window on its own
  (`window_level`, as a served clip of that window would be) and keeps the whole's gain for
  its plot and for windows of digital silence. Reading twice costs decoding time, never
  memory.

The checks are `audio.decode`'s and `audio.condition`'s (rate range, header length and the
cap, NaN samples, too short, silent), with their messages: a bad file fails the same way
whichever path reads it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import soundfile as sf

from deepfake_audio.dsp import audio
from deepfake_audio.dsp.audio import (
    CUT_IT,
    MAX_SECONDS,
    SILENCE_PEAK,
    TARGET_RMS,
    AudioError,
    Source,
)

# Frames decoded per read: ~4 s at 16 kHz, the block size `audio.decode` uses.
BLOCK_FRAMES = 1 << 16


class Resampler:
    """`orig_sr` -> `target_sr` over a stream of blocks: `feed` them, then `flush`.

    Output sample j of the whole signal sits at input instant j * down / up. A segment of
    input that starts on a multiple of `down` therefore maps onto whole output samples, and
    its `resample_poly` equals the whole signal's there, provided the filter (half length
    `10 * max(up, down)` upsampled taps, scipy's default) sees the real neighbours: each
    segment is resampled with `context` input samples on either side, which are then cut.
    """

    def __init__(self, orig_sr: int, target_sr: int) -> None:
        if orig_sr <= 0 or target_sr <= 0:
            raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
        ratio = Fraction(int(target_sr), int(orig_sr)).limit_denominator(
            audio._MAX_RATIO_DENOMINATOR
        )
        self.up, self.down = ratio.numerator, ratio.denominator
        self.identity = orig_sr == target_sr or (self.up == 1 and self.down == 1)
        reach = math.ceil(10 * max(self.up, self.down) / self.up) + 2
        self.context = math.ceil(reach / self.down) * self.down
        self._buffer = np.zeros(0, dtype=np.float32)  # input from absolute index _start
        self._start = 0  # a multiple of down
        self._next = 0  # next input index whose output is not yet given (multiple of down)

    def _resample(self, x: np.ndarray) -> np.ndarray:
        from scipy.signal import resample_poly

        return resample_poly(x, self.up, self.down).astype(np.float32, copy=False)

    def _emit(self, end: int, final: bool) -> np.ndarray:
        """Output for input [self._next, end); `end` a multiple of down unless `final`."""
        left = max(self._start, self._next - self.context)
        right = self._start + len(self._buffer)
        segment = self._buffer[left - self._start : right - self._start]
        out = self._resample(segment)
        first = (self._next - left) * self.up // self.down
        if final:
            count = math.ceil((end - left) * self.up / self.down) - first
        else:
            count = (end - self._next) * self.up // self.down
        return out[first : first + count]

    def feed(self, block: np.ndarray) -> np.ndarray:
        """The output that `block` (and the input before it) now fully determines."""
        block = np.asarray(block, dtype=np.float32)
        if self.identity:
            return block
        self._buffer = np.concatenate([self._buffer, block])
        available = self._start + len(self._buffer)
        end = (available - self.context) // self.down * self.down
        if end <= self._next:
            return np.zeros(0, dtype=np.float32)
        out = self._emit(end, final=False)
        self._next = end
        keep_from = self._next - self.context  # the left context of the next segment
        if keep_from > self._start:
            self._buffer = self._buffer[keep_from - self._start :]
            self._start = keep_from
        return out

    def flush(self) -> np.ndarray:
        """The rest of the output, once the input has ended."""
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        total = self._start + len(self._buffer)
        if total == 0:
            return np.zeros(0, dtype=np.float32)
        out = self._emit(total, final=True)
        self._next = total
        self._buffer = np.zeros(0, dtype=np.float32)
        return out


def _open(source: Source, name: str) -> sf.SoundFile:
    """libsndfile's handle for a path or bytes, after `audio.decode`'s checks of the file."""
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise AudioError(name, "empty input (0 bytes)")
        return sf.SoundFile(audio._BytesReader(bytes(source)))
    return sf.SoundFile(audio.checked_path(source, name))


def mono_blocks(
    source: Source,
    name: str | None = None,
    max_seconds: float | None = None,
    cap_note: str = CUT_IT,
    block_frames: int = BLOCK_FRAMES,
) -> Iterator[tuple[np.ndarray, int]]:
    """`(block, sample_rate)`: float32 mono blocks at the file's own rate, checked as decoded.

    The checks and messages of `audio.decode`; whatever libsndfile raises becomes an
    `AudioError` naming the source.
    """
    name = audio._source_name(source) if name is None else name
    cap = MAX_SECONDS if max_seconds is None else float(max_seconds)
    try:
        with _open(source, name) as handle:
            rate, channels, limit = audio.check_header(handle, name, cap, cap_note)
            blocks = audio.checked_blocks(
                handle, name, channels, limit, cap, cap_note, block_frames
            )
            for block in blocks:
                yield np.ascontiguousarray(block, dtype=np.float32), rate
    except AudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure is this file's
        raise audio.unreadable(name, exc) from None


def resampled_blocks(
    source: Source,
    sample_rate: int,
    name: str | None = None,
    max_seconds: float | None = None,
    cap_note: str = CUT_IT,
    block_frames: int = BLOCK_FRAMES,
) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `sample_rate` (unscaled), in order; empty blocks skipped."""
    resampler: Resampler | None = None
    for block, rate in mono_blocks(source, name, max_seconds, cap_note, block_frames):
        if resampler is None:
            resampler = Resampler(rate, sample_rate)
        out = resampler.feed(block)
        if out.size:
            yield out
    if resampler is not None:
        out = resampler.flush()
        if out.size:
            yield out


class Level:
    """What the first pass learns: input duration, peak and the gain `load_wave` applies."""

    def __init__(self, seconds: float, samples: int, peak: float, gain: float) -> None:
        self.seconds, self.samples, self.peak, self.gain = seconds, samples, peak, gain


def measure(
    source: Source,
    sample_rate: int,
    name: str | None = None,
    min_seconds: float = 0.1,
    max_seconds: float | None = None,
    cap_note: str = CUT_IT,
) -> Level:
    """The first pass: `audio.condition`'s checks and its gain, from the stream.

    Energy is summed block by block in float64 (`condition` takes one float32 dot product
    over the whole; the gains differ in the 7th digit at most).
    """
    name = audio._source_name(source) if name is None else name
    input_frames = 0
    input_rate = sample_rate
    for block, rate in mono_blocks(source, name, max_seconds, cap_note):
        input_frames += block.size
        input_rate = rate
    if input_frames == 0:
        raise AudioError(name, "contains no audio samples")
    duration = input_frames / input_rate
    if duration < min_seconds:
        raise AudioError(name, f"too short ({duration:.3f} s, need at least {min_seconds:g} s)")
    samples, peak, energy = 0, 0.0, 0.0
    for block in resampled_blocks(source, sample_rate, name, max_seconds, cap_note):
        samples += block.size
        peak = max(peak, float(np.max(np.abs(block))))
        wide = block.astype(np.float64)
        energy += float(np.dot(wide, wide))
    if not math.isfinite(peak):
        raise AudioError(name, "sample values out of range (overflow when resampling)")
    if peak < SILENCE_PEAK:
        raise AudioError(name, f"silent (peak amplitude {peak:.2g} < {SILENCE_PEAK:g})")
    gain = TARGET_RMS / math.sqrt(energy / samples)
    return Level(duration, samples, peak, gain)


def window_level(window: np.ndarray, fallback: float) -> np.ndarray:
    """`window` scaled and clipped as `audio.condition` scales a clip of its own.

    The timeline scores each window as the served model would score that window cut to a
    file of its own (`load_clip`: the gain from the clip's own RMS), which is how every
    training clip was levelled; one gain for a whole long recording would put a quiet or
    loud stretch at a level no training clip had. A window of digital silence (peak below
    `SILENCE_PEAK`: a served clip of it would be refused) keeps `fallback`, the whole
    recording's gain, rather than amplifying rounding noise.
    """
    wide = window.astype(np.float64)
    peak = float(np.max(np.abs(wide))) if wide.size else 0.0
    if peak < SILENCE_PEAK:
        gain = fallback
    else:
        gain = TARGET_RMS / math.sqrt(float(np.dot(wide, wide)) / wide.size)
    scaled = window * np.float32(gain)
    return np.clip(scaled, -1.0, 1.0, out=scaled)


def conditioned_blocks(
    source: Source,
    sample_rate: int,
    level: Level,
    name: str | None = None,
    max_seconds: float | None = None,
    cap_note: str = CUT_IT,
) -> Iterator[np.ndarray]:
    """The second pass: the blocks of `load_wave`'s waveform (scaled by `level.gain`, clipped)."""
    gain = np.float32(level.gain)
    for block in resampled_blocks(source, sample_rate, name, max_seconds, cap_note):
        scaled = block * gain
        yield np.clip(scaled, -1.0, 1.0, out=scaled)
