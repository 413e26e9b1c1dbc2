"""Audio decoding and clip preparation: bytes or paths in, float32 mono waveforms out.

The same `load_clip` runs when the training set is built and when the server scores an
upload, so a clip is decoded, resampled, normalised and cut identically in both places; any
difference would be a train/serve skew the model could not see in validation.

Decoding goes through libsndfile (``soundfile``): WAV, FLAC, OGG/Vorbis and, with
libsndfile >= 1.1, MP3. Resampling is polyphase (``scipy.signal.resample_poly``), which is
fast, has a proper anti-aliasing filter and needs no extra dependency.

Anything wrong with the audio itself (unreadable, empty, too short, silent) raises
`AudioError`, a `UserError`: the caller can skip the file or report one line naming it.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from fractions import Fraction
from typing import Literal

import numpy as np
import soundfile as sf

from deepfake_audio.core.errors import UserError

__all__ = [
    "MAX_SECONDS",
    "SAMPLE_RATE_RANGE",
    "SILENCE_PEAK",
    "TARGET_RMS",
    "AudioError",
    "check_header",
    "checked_blocks",
    "checked_path",
    "condition",
    "decode",
    "fix_length",
    "load_clip",
    "load_wave",
    "resample",
    "sliding_windows",
    "unreadable",
]

# Every clip is scaled to this RMS. Corpora often differ in level between bona fide and spoof
# recordings (different pipelines, different normalisation); left alone, loudness would let the
# model learn the corpus rather than the artefacts. 0.05 (about -26 dBFS) leaves headroom for
# peaks, and what still exceeds full scale is clipped.
TARGET_RMS = 0.05

# A clip whose absolute peak stays below this is treated as digital silence: scaling it to
# TARGET_RMS would only amplify dither or rounding noise into a meaningless input.
SILENCE_PEAK = 1e-5

# Untrusted input limits. A header can claim any length and rate: a recording longer than
# this (at its own rate) is refused rather than decoded into gigabytes, and a rate outside
# this range is a corrupt header, not audio (1 Hz upsampled to 16 kHz would be a memory bomb).
MAX_SECONDS = 3600.0
# What the message of a recording over the cap suggests (a served model names its setting).
CUT_IT = "cut it into shorter files"
# libsndfile's frame count for a stream of unknown length (SF_COUNT_MAX): no length stated.
_UNKNOWN_FRAMES = 1 << 62
SAMPLE_RATE_RANGE = (1000, 768_000)
_BLOCK_FRAMES = 1 << 16

# Largest denominator accepted when turning a sample-rate ratio into an up/down pair; keeps the
# polyphase filter small for odd rates, at the cost of a rate error below 0.1 % for them.
_MAX_RATIO_DENOMINATOR = 1000

Crop = Literal["start", "center"]
Pad = Literal["repeat", "zeros"]
Source = str | os.PathLike | bytes

# What a folder of audio may hold: the formats libsndfile decodes here.
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif")


class AudioError(UserError):
    """An audio input that cannot be used, with a one-line message ``<source>: <reason>``.

    Raised as ``AudioError(source, reason)``: ``source`` is the path as given (or
    ``"<bytes>"`` for in-memory data) and ``reason`` says what is wrong, so a dataset build can
    log and skip the file and the server can answer 400. ``AudioError(message)`` with a
    ready-made message is accepted too (``source`` is then None). Either way the message is
    collapsed to one line, whatever libsndfile said.
    """

    def __init__(self, source: str, reason: str | None = None) -> None:
        self.source: str | None = source if reason is not None else None
        self.reason: str | None = None if reason is None else " ".join(str(reason).split())
        message = str(source) if reason is None else f"{source}: {self.reason}"
        super().__init__(" ".join(message.split()))

    def __reduce__(self) -> tuple[type[AudioError], tuple[str, str | None]]:
        # Rebuild from the original arguments so the error survives a trip through a worker
        # process (the default would call __init__ with the formatted message only).
        if self.reason is None:
            return (type(self), (str(self),))
        return (type(self), (str(self.source), self.reason))


def _source_name(source: Source) -> str:
    """How a source is named in messages: the path as given, or ``<bytes>``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return os.fsdecode(source)


class _BytesReader(io.BytesIO):
    """In-memory audio for libsndfile's virtual I/O.

    A corrupt header can make libsndfile seek before the start; `io.BytesIO` raises
    there, inside a cffi callback, which prints a traceback on stderr for every such
    file (and tells libsndfile position 0). Staying put instead lets libsndfile fail
    on the data it then reads, quietly.
    """

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.tell(), io.SEEK_END: len(self.getbuffer())}
        if base.get(whence, 0) + offset < 0:
            return self.tell()
        return super().seek(offset, whence)


def decode(
    source: Source,
    name: str | None = None,
    max_seconds: float | None = None,
    cap_note: str = CUT_IT,
) -> tuple[np.ndarray, int]:
    """Decode a file path or in-memory bytes into a float32 mono waveform.

    ``name`` is how messages call the source (default: the path, or ``<bytes>``); a caller
    that already read a file's bytes passes its path, so errors still name the file.

    Multi-channel audio is down-mixed by averaging the channels (no channel is privileged:
    which side a stereo recording put the voice on is not a cue). Integer PCM is scaled to
    [-1, 1) by libsndfile.

    The input is untrusted: it is read in blocks, so memory follows the audio actually
    present rather than the length a (possibly corrupt) header claims, and recordings
    longer than ``max_seconds`` (default `MAX_SECONDS`) or at a rate outside
    `SAMPLE_RATE_RANGE` are refused. The length is checked first from the header, where
    the format states one, so an over-long file is refused before a block is decoded;
    then block by block, for a header that understates it. ``cap_note`` ends the message
    of a recording over the cap: ``audio is 612.0 s long, above the 600 s cap (<note>)``.
    Whatever libsndfile or numpy raise on a bad input becomes an `AudioError`.

    Returns:
        ``(waveform, sample_rate)``: shape ``(n,)``, float32, at the file's own rate.

    Raises:
        AudioError: the input is missing, empty, not audio libsndfile can read, has no
            samples, contains NaN/inf samples, is too long or has an implausible rate.
    """
    name = _source_name(source) if name is None else name
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            what = "input" if name == "<bytes>" else "file"
            raise AudioError(name, f"empty {what} (0 bytes)")
        handle: io.BytesIO | str = _BytesReader(bytes(source))
    else:
        handle = checked_path(source, name)
    try:
        cap = MAX_SECONDS if max_seconds is None else float(max_seconds)
        wave, sample_rate = _read_mono(handle, name, cap, cap_note)
    except AudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure is this file's
        raise unreadable(name, exc) from None
    if wave.size == 0:
        raise AudioError(name, "contains no audio samples")
    return wave, sample_rate


def checked_path(source: str | os.PathLike[str], name: str) -> str:
    """The path of an audio file, after the checks that need no decoding.

    Shared by `decode` and `stream.mono_blocks` so that a missing, empty or odd file gets
    the same message whichever reads it.
    """
    path = os.fsdecode(source)
    if not os.path.exists(path):
        raise AudioError(name, "no such file")
    if os.path.isdir(path):
        raise AudioError(name, "is a directory, not an audio file")
    if not os.path.isfile(path):
        raise AudioError(name, "not a regular file")
    if os.path.getsize(path) == 0:
        raise AudioError(name, "empty file (0 bytes)")
    return path


def unreadable(name: str, exc: Exception) -> AudioError:
    """The `AudioError` for whatever libsndfile (or numpy) raised on untrusted bytes."""
    if isinstance(exc, sf.LibsndfileError):
        return AudioError(name, f"not a readable audio file ({exc.error_string})")
    if isinstance(exc, MemoryError):
        return AudioError(name, "not a readable audio file (too large to decode)")
    detail = str(exc).strip() or type(exc).__name__
    return AudioError(name, f"not a readable audio file ({detail})")


def check_header(
    handle: sf.SoundFile, name: str, max_seconds: float, cap_note: str
) -> tuple[int, int, int]:
    """`(sample_rate, channels, frame_limit)` of an open file, after the header's checks.

    The rate range, the channel count and the length the header states against the cap:
    refused before anything is decoded. Shared by `decode` and `stream.mono_blocks`, so a
    bad header fails the same way on either path.
    """
    sample_rate, channels = int(handle.samplerate), int(handle.channels)
    low, high = SAMPLE_RATE_RANGE
    if not low <= sample_rate <= high:
        raise AudioError(
            name, f"sample rate {sample_rate} Hz is outside {low}-{high} Hz (corrupt header?)"
        )
    if channels < 1:
        raise AudioError(name, "has no audio channels")
    limit = int(max_seconds * sample_rate)
    # The length the header states (libsndfile clamps a WAV's to the bytes present).
    stated = int(handle.frames)
    if limit < stated < _UNKNOWN_FRAMES:
        raise AudioError(
            name,
            f"audio is {stated / sample_rate:.1f} s long, above the {max_seconds:g} s cap "
            f"({cap_note})",
        )
    return sample_rate, channels, limit


def _read_mono(
    handle: io.BytesIO | str, name: str, max_seconds: float, cap_note: str
) -> tuple[np.ndarray, int]:
    """libsndfile's samples, down-mixed block by block; the checks of `decode`."""
    with sf.SoundFile(handle) as audio:
        sample_rate, channels, limit = check_header(audio, name, max_seconds, cap_note)
        blocks = list(checked_blocks(audio, name, channels, limit, max_seconds, cap_note))
    if not blocks:
        return np.zeros(0, dtype=np.float32), sample_rate
    wave = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    return np.ascontiguousarray(wave, dtype=np.float32), sample_rate


def checked_blocks(
    handle: sf.SoundFile,
    name: str,
    channels: int,
    limit: int,
    max_seconds: float,
    cap_note: str,
    block_frames: int = _BLOCK_FRAMES,
) -> Iterator[np.ndarray]:
    """float32 mono blocks of a file `check_header` passed, each checked as it is decoded.

    The cap (`limit` frames) is enforced on what is actually decoded, since a header may
    understate the length; NaN/inf samples are refused. Shared by `decode` (which joins the
    blocks) and `stream.mono_blocks` (which hands them out one by one).
    """
    # 16-bit PCM (most corpora) is read as int16 and scaled here: bit-identical to
    # libsndfile's own float conversion (x / 32768) and about twice as fast.
    pcm16 = handle.subtype == "PCM_16"
    total = 0
    while True:
        if pcm16:
            ints = handle.read(block_frames, dtype="int16", always_2d=True)
            data = np.multiply(ints, np.float32(1.0 / 32768.0), dtype=np.float32)
        else:
            data = handle.read(block_frames, dtype="float32", always_2d=True)
        if data.shape[0] == 0:
            break
        total += data.shape[0]
        if total > limit:
            raise AudioError(name, f"audio is longer than the {max_seconds:g} s cap ({cap_note})")
        if not np.all(np.isfinite(data)):
            raise AudioError(name, "contains NaN or infinite samples")
        mono = data[:, 0] if channels == 1 else data.mean(axis=1, dtype=np.float64)
        yield np.asarray(mono, dtype=np.float32)
        if data.shape[0] < block_frames:  # a short read is the end: skip an empty one
            break


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a 1-D waveform from ``orig_sr`` to ``target_sr`` (polyphase, anti-aliased).

    The rate ratio is approximated by a fraction with denominator <= 1000 so that even odd
    rates give a small filter; every common rate pair (8/11.025/16/22.05/44.1/48 kHz) is exact.
    The output has ``ceil(len(wave) * up / down)`` samples and is float32.
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {wave.shape}")
    if orig_sr == target_sr or wave.size == 0:
        return wave.copy()
    # Imported here: scipy.signal takes about a second to import, and most corpora are
    # already at the model's rate.
    from scipy.signal import resample_poly

    ratio = Fraction(int(target_sr), int(orig_sr)).limit_denominator(_MAX_RATIO_DENOMINATOR)
    out = resample_poly(wave, ratio.numerator, ratio.denominator)
    return np.ascontiguousarray(out, dtype=np.float32)


def fix_length(
    wave: np.ndarray, n_samples: int, crop: Crop = "start", pad: Pad = "repeat"
) -> np.ndarray:
    """Cut or extend a 1-D waveform to exactly ``n_samples`` (the model's fixed input length).

    Args:
        crop: for longer clips, keep the first ``n_samples`` (``"start"``) or the middle ones
            (``"center"``; leading and trailing silence is common in corpora, so the middle is
            more likely to hold speech).
        pad: for shorter clips, tile the clip until it fills the length (``"repeat"``, so the
            model never sees long stretches of artificial silence whose length would reveal the
            original duration) or append zeros (``"zeros"``).

    Returns:
        A new float32 array of shape ``(n_samples,)``.
    """
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    if crop not in ("start", "center"):
        raise ValueError(f"crop must be 'start' or 'center', got {crop!r}")
    if pad not in ("repeat", "zeros"):
        raise ValueError(f"pad must be 'repeat' or 'zeros', got {pad!r}")
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {wave.shape}")
    length = wave.size
    if length >= n_samples:
        start = 0 if crop == "start" else (length - n_samples) // 2
        return wave[start : start + n_samples].copy()
    if pad == "zeros":
        out = np.zeros(n_samples, dtype=np.float32)
        out[:length] = wave
        return out
    if length == 0:
        raise ValueError("cannot repeat-pad an empty waveform")
    return np.tile(wave, math.ceil(n_samples / length))[:n_samples].copy()


def load_wave(
    source: Source,
    sample_rate: int,
    min_seconds: float = 0.1,
    max_seconds: float | None = None,
    cap_note: str = CUT_IT,
) -> np.ndarray:
    """Decode, down-mix, resample, check and loudness-normalise a whole recording.

    Everything `load_clip` does except the final cut to the model's length, so that serving
    can score a long recording in windows with exactly the waveform training would have cut
    its clip from. Steps, in this order: `decode` (mono float32); reject recordings shorter
    than ``min_seconds`` (measured at the file's own rate); `resample` to ``sample_rate``;
    reject silent ones (peak below `SILENCE_PEAK`); scale to RMS `TARGET_RMS` and clip to
    [-1, 1]. The gain depends on the whole recording, never on how it is cut or padded later.
    ``max_seconds`` and ``cap_note`` go to `decode`.

    Returns:
        float32 array of shape ``(n,)`` at ``sample_rate``.

    Raises:
        AudioError: unreadable input (see `decode`), too short, or silent.
    """
    name = _source_name(source)
    wave, orig_sr = decode(source, name, max_seconds=max_seconds, cap_note=cap_note)
    return condition(wave, orig_sr, sample_rate, name, min_seconds=min_seconds)


def condition(
    wave: np.ndarray, orig_sr: int, sample_rate: int, name: str, min_seconds: float = 0.1
) -> np.ndarray:
    """Everything `load_wave` does after `decode`, for a waveform decoded at ``orig_sr``.

    Split out so that the dataset stage, which reads each file's bytes once for its sha256,
    decodes those same bytes instead of reading the file a second time.
    """
    duration = wave.size / orig_sr
    if duration < min_seconds:
        raise AudioError(name, f"too short ({duration:.3f} s, need at least {min_seconds:g} s)")
    wave = resample(wave, orig_sr, sample_rate)
    peak = float(max(wave.max(), -wave.min())) if wave.size else 0.0
    if not math.isfinite(peak):  # finite samples near float32's limit, overflowed by the filter
        raise AudioError(name, "sample values out of range (overflow when resampling)")
    if peak < SILENCE_PEAK:
        raise AudioError(name, f"silent (peak amplitude {peak:.2g} < {SILENCE_PEAK:g})")
    # A float32 dot product (BLAS): ~10x faster than squaring in float64, and its rounding
    # (relative ~1e-6 on the gain) is far below anything audible or learnable. Samples far
    # outside [-1, 1] (broken float files) would overflow it: those take float64.
    if peak <= 1e6:
        energy = float(np.dot(wave, wave))
    else:
        wide = wave.astype(np.float64)
        energy = float(np.dot(wide, wide))
    rms = math.sqrt(energy / wave.size)
    scaled = wave * np.float32(TARGET_RMS / rms)
    return np.clip(scaled, -1.0, 1.0, out=scaled)


def load_clip(
    source: Source,
    sample_rate: int,
    clip_seconds: float,
    crop: Crop = "center",
    pad: Pad = "repeat",
    min_seconds: float = 0.1,
) -> np.ndarray:
    """Decode, down-mix, resample, check, loudness-normalise and cut one clip for the model.

    `load_wave` (decode, length check, resample, silence check, scale to RMS `TARGET_RMS`),
    then `fix_length` to ``round(clip_seconds * sample_rate)`` samples. Normalising before
    padding means the gain depends only on the recording, not on how much zero padding it
    will get.

    Returns:
        float32 array of shape ``(round(clip_seconds * sample_rate),)``.

    Raises:
        AudioError: unreadable input (see `decode`), too short, or silent.
    """
    n_samples = int(round(clip_seconds * sample_rate))
    if n_samples <= 0:
        raise ValueError(f"clip_seconds * sample_rate gives {n_samples} samples; need at least 1")
    wave = load_wave(source, sample_rate, min_seconds=min_seconds)
    return fix_length(wave, n_samples, crop=crop, pad=pad)


def sliding_windows(
    wave: np.ndarray, n_samples: int, hop: int, pad: Pad = "repeat"
) -> list[np.ndarray]:
    """Cut a (normalised) waveform into model-length windows that cover all of it.

    A waveform no longer than ``n_samples`` gives one window, padded exactly as `fix_length`
    pads a training clip. A longer one gives windows starting every ``hop`` samples, plus one
    aligned with the end when the hops do not land there, so no sample is left unscored:
    ``[0, n)``, ``[hop, hop + n)``, ..., ``[len - n, len)``.
    """
    if n_samples <= 0 or hop <= 0:
        raise ValueError(f"n_samples and hop must be positive, got {n_samples} and {hop}")
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {wave.shape}")
    if wave.size <= n_samples:
        return [fix_length(wave, n_samples, pad=pad)]
    last = wave.size - n_samples
    starts = list(range(0, last + 1, hop))
    if starts[-1] != last:
        starts.append(last)
    return [wave[start : start + n_samples].copy() for start in starts]
