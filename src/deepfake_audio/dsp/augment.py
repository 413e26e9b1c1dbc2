"""Training-time augmentations that take away the shortcuts a spoof detector would learn.

On real corpora (FoR in particular) bona fide and spoofed clips differ in things that have
nothing to do with synthesis artefacts: duration, loudness, noise floor and codec history. A
detector happily learns those instead. The functions here randomise each of them on training
batches only; evaluation and serving never call them.

Conventions shared by every function:

- waves are float32 mono in [-1, 1]; a 1-D array is one clip, a 2-D array ``(clips, samples)``
  is a batch and every random quantity is drawn per clip;
- every random choice comes from the ``numpy.random.Generator`` passed in, so a seed fixes the
  result; nothing reads global random state;
- the functions are pure: they return new float32 arrays and never modify their input;
- a bad argument raises `UserError` with a one-line message.

Only numpy, soundfile and the standard library are imported here (``core`` must stay light);
nothing in this module needs ``scipy.signal``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import soundfile as sf

from deepfake_audio.core.errors import UserError

__all__ = [
    "CODECS",
    "NOISE_COLOURS",
    "Step",
    "add_noise",
    "codec_round_trip",
    "compose",
    "loudness_normalise",
    "random_crop",
    "random_crop_batch",
    "random_gain",
    "sometimes",
    "spec_augment",
]

NOISE_COLOURS = ("white", "pink", "brown")
CODECS = ("mp3", "ogg")
_BITRATE_MODES = ("VARIABLE", "CONSTANT", "AVERAGE")

# A clip whose peak stays below this is digital silence (the same threshold `dsp.audio` uses to
# refuse silent uploads): scaling it to a target level would only amplify rounding noise.
_SILENCE_PEAK = 1e-5

# libsndfile 1.2.2 refuses compression_level == 1.0 for MP3 ("Error set compression level")
# although 0.999 works; MP3 levels are capped here so the documented [0, 1] range always works.
_MP3_MAX_LEVEL = 0.99

# LAME's encoder delay at 16 kHz (MPEG-2 layer III), measured: used only when the decoded copy
# is longer than the source and cross-correlation cannot find the offset (a silent clip).
_MP3_FALLBACK_DELAY = 1105

# Largest codec offset searched for when a decoded copy comes back longer than its source
# (encoder delay plus up to one frame of padding at any MP3 rate is well below this).
_MAX_CODEC_DELAY = 4096

Step = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""One augmentation with its parameters bound: ``step(waves, rng) -> waves``."""


# --------------------------------------------------------------------------------------------
# helpers


def _waves(wave: np.ndarray, name: str = "wave") -> tuple[np.ndarray, bool]:
    """``(batch, was_1d)``: ``wave`` as a float32 2-D view, after the checks every caller needs."""
    arr = np.asarray(wave)
    if arr.ndim not in (1, 2):
        raise UserError(f"{name} must be 1-D (samples) or 2-D (clips, samples), got {arr.ndim}-D")
    if arr.shape[-1] == 0:
        raise UserError(f"{name} is empty (0 samples)")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise UserError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise UserError(f"{name} contains NaN or infinite samples")
    return (arr[None, :], True) if arr.ndim == 1 else (arr, False)


def _back(batch: np.ndarray, was_1d: bool) -> np.ndarray:
    """Undo `_waves`' promotion of a single clip to a batch of one."""
    out = batch.astype(np.float32, copy=False)
    return out[0] if was_1d else out


def _check_range(low: float, high: float, what: str) -> tuple[float, float]:
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"{what} range must be finite, got [{low}, {high}]")
    if low > high:
        raise UserError(f"{what} range is empty: min {low} > max {high}")
    return low, high


def _rms(batch: np.ndarray) -> np.ndarray:
    """Per-clip RMS in float64 (a float32 sum of squares loses digits on long clips)."""
    wide = batch.astype(np.float64)
    return np.sqrt(np.mean(wide * wide, axis=-1))


# --------------------------------------------------------------------------------------------
# duration


def random_crop(wave: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random contiguous window of ``n_samples`` from each clip; short clips are tiled.

    Random rather than fixed (start or centre) windows stop the model from keying on where
    speech starts in a clip, and a fixed output length hides the corpus' duration differences.
    A clip shorter than ``n_samples`` is repeated from its start until it is long enough (as in
    the ASVspoof baselines): zero padding would tell the model how long the original was.

    Works on one clip (1-D) or a batch of equal-length clips (2-D, one offset per clip); for
    clips of different lengths use `random_crop_batch`.
    """
    batch, was_1d = _waves(wave)
    n = _positive_int(n_samples, "n_samples")
    length = batch.shape[1]
    if length < n:
        reps = -(-n // length)
        return _back(np.tile(batch, (1, reps))[:, :n].copy(), was_1d)
    starts = rng.integers(0, length - n + 1, size=batch.shape[0])
    out = np.stack([row[start : start + n] for row, start in zip(batch, starts, strict=True)])
    return _back(out, was_1d)


def random_crop_batch(
    clips: Sequence[np.ndarray], n_samples: int, rng: np.random.Generator
) -> np.ndarray:
    """`random_crop` for clips of different lengths: returns a ``(len(clips), n_samples)`` batch."""
    n = _positive_int(n_samples, "n_samples")
    if len(clips) == 0:
        raise UserError("random_crop_batch needs at least one clip")
    out = np.empty((len(clips), n), dtype=np.float32)
    for i, clip in enumerate(clips):
        if np.ndim(clip) != 1:
            raise UserError(f"clip {i} must be 1-D, got {np.ndim(clip)}-D")
        out[i] = random_crop(clip, n, rng)
    return out


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# level


def loudness_normalise(
    wave: np.ndarray,
    target_dbfs: float = -26.0,
    peak: Literal["clip", "scale"] = "clip",
) -> np.ndarray:
    """Scale each clip to an RMS of ``target_dbfs`` (dB relative to full scale, RMS 1.0).

    Removes loudness as a cue. Digital silence (peak below 1e-5) is returned unchanged, so it
    stays finite zeros instead of turning into amplified rounding noise or NaN.

    Peaks that the gain pushes past full scale are handled by ``peak``:

    - ``"clip"`` (default): hard-clip to [-1, 1], exactly what `dsp.audio.condition` does to
      every loaded clip, so augmented and plain clips go through the same path. At -26 dBFS a
      speech peak needs a crest factor above 26 dB to clip, so few samples are touched; the
      RMS of those clips ends slightly below target.
    - ``"scale"``: scale the whole clip down until its peak is exactly 1.0. No distortion, but
      such a clip ends below the target RMS.
    """
    batch, was_1d = _waves(wave)
    target = float(target_dbfs)
    if not math.isfinite(target) or target > 0.0:
        raise UserError(f"target_dbfs must be a finite level <= 0 dBFS, got {target_dbfs!r}")
    if peak not in ("clip", "scale"):
        raise UserError(f"peak must be 'clip' or 'scale', got {peak!r}")
    peaks = np.max(np.abs(batch), axis=1)
    silent = peaks < _SILENCE_PEAK
    gain = np.where(silent, 1.0, 10.0 ** (target / 20.0) / np.where(silent, 1.0, _rms(batch)))
    out = batch * gain[:, None].astype(np.float32)
    if peak == "clip":
        np.clip(out, -1.0, 1.0, out=out)
    else:
        top = np.max(np.abs(out), axis=1)
        over = top > 1.0
        out[over] /= top[over, None]
    return _back(out, was_1d)


def random_gain(
    wave: np.ndarray,
    rng: np.random.Generator,
    min_db: float = -6.0,
    max_db: float = 6.0,
    clip: bool = True,
) -> np.ndarray:
    """Multiply each clip by a gain drawn uniformly in dB from ``[min_db, max_db]``.

    Jitters level around whatever normalisation came before, so the model cannot rely on an
    exact level. With ``clip`` (default) the result is hard-clipped to [-1, 1] like every loaded
    clip; only clips already near full scale with a positive gain are affected.
    """
    batch, was_1d = _waves(wave)
    low, high = _check_range(min_db, max_db, "gain dB")
    gains_db = rng.uniform(low, high, size=batch.shape[0])
    out = batch * (10.0 ** (gains_db / 20.0)).astype(np.float32)[:, None]
    if clip:
        np.clip(out, -1.0, 1.0, out=out)
    return _back(out, was_1d)


# --------------------------------------------------------------------------------------------
# noise floor


def _coloured_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Unit-power noise of ``n`` samples whose power spectrum falls as 1/f**k (k = 0, 1, 2)."""
    white = rng.standard_normal(n)
    exponent = NOISE_COLOURS.index(colour)
    if exponent and n > 2:
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n)
        shape = np.zeros_like(freqs)
        shape[1:] = freqs[1:] ** (-exponent / 2.0)  # amplitude ~ f**(-k/2); no DC offset
        shaped = np.fft.irfft(spectrum * shape, n)
        if np.any(shaped):
            white = shaped
    power = np.mean(white * white)
    return white / math.sqrt(power) if power > 0 else white


def add_noise(
    wave: np.ndarray,
    rng: np.random.Generator,
    min_snr_db: float = 10.0,
    max_snr_db: float = 40.0,
    colour: str | Sequence[str] = "white",
    clip: bool = True,
) -> np.ndarray:
    """Add Gaussian noise at an SNR drawn uniformly per clip, relative to the clip's own power.

    Puts a random noise floor under every clip, so a clean floor (typical of TTS output) or a
    corpus-specific one stops separating the classes. ``colour`` is ``"white"``, ``"pink"``
    (power ~ 1/f) or ``"brown"`` (~ 1/f**2), or a sequence of those to draw one from per clip.

    The noise is scaled so that ``10 log10(P_clip / P_noise)`` equals the drawn SNR exactly
    (before clipping). A silent clip (power 0) has no level to be relative to and stays silent.
    With ``clip`` (default) the sum is hard-clipped to [-1, 1]; keep input peaks below full
    scale (e.g. by `loudness_normalise` first) if the SNR must hold exactly.
    """
    batch, was_1d = _waves(wave)
    low, high = _check_range(min_snr_db, max_snr_db, "SNR dB")
    colours = (colour,) if isinstance(colour, str) else tuple(colour)
    if not colours or any(c not in NOISE_COLOURS for c in colours):
        raise UserError(f"colour must be one of {', '.join(NOISE_COLOURS)}, got {colour!r}")
    clips, n = batch.shape
    snrs = rng.uniform(low, high, size=clips)
    picks = rng.integers(0, len(colours), size=clips)
    power = _rms(batch) ** 2
    out = batch.astype(np.float64)
    for i in range(clips):
        noise = _coloured_noise(rng, n, colours[picks[i]])
        out[i] += noise * math.sqrt(power[i] / 10.0 ** (snrs[i] / 10.0))
    if clip:
        np.clip(out, -1.0, 1.0, out=out)
    return _back(out, was_1d)


# --------------------------------------------------------------------------------------------
# spectral


def spec_augment(
    features: np.ndarray,
    rng: np.random.Generator,
    time_masks: int = 2,
    time_width: int = 20,
    freq_masks: int = 2,
    freq_width: int = 8,
    fill: float | None = None,
) -> np.ndarray:
    """SpecAugment time and frequency masking (Park et al., Interspeech 2019), no time warp.

    ``features`` is ``(rows, frames)`` for one clip or ``(clips, rows, frames)`` for a batch;
    rows are frequency bands (mel bins, LFCC coefficients), columns are frames. For each clip,
    ``time_masks`` times a width ``t`` is drawn uniformly from ``0..time_width`` and frames
    ``[t0, t0 + t)`` are set to ``fill`` with ``t0`` uniform in ``0..frames - t``; likewise
    ``freq_masks`` bands of ``0..freq_width`` rows. Widths are capped at the axis length and
    masks may overlap, as in the paper.

    ``fill`` defaults to each clip's own mean (taken before masking), so masking does not shift
    the statistics of features that were normalised to zero mean (the paper masks with zero,
    which is that mean for normalised inputs). Forces the model to use the whole spectrum
    and the whole clip rather than one narrow band or moment.
    """
    arr = np.asarray(features)
    if arr.ndim not in (2, 3):
        raise UserError(
            f"features must be 2-D (rows, frames) or 3-D (clips, rows, frames), got {arr.ndim}-D"
        )
    if arr.size == 0:
        raise UserError(f"features are empty (shape {arr.shape})")
    counts = {"time_masks": time_masks, "time_width": time_width}
    counts |= {"freq_masks": freq_masks, "freq_width": freq_width}
    for name, value in counts.items():
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise UserError(f"{name} must be a non-negative integer, got {value!r}")
    if fill is not None and not math.isfinite(float(fill)):
        raise UserError(f"fill must be a finite number, got {fill!r}")
    was_2d = arr.ndim == 2
    batch = arr[None] if was_2d else arr
    clips, rows, frames = batch.shape
    time_mask = _mask_1d(rng, clips, frames, int(time_masks), int(time_width))
    freq_mask = _mask_1d(rng, clips, rows, int(freq_masks), int(freq_width))
    masked = freq_mask[:, :, None] | time_mask[:, None, :]
    if fill is None:
        values = batch.mean(axis=(1, 2), dtype=np.float64).astype(batch.dtype)[:, None, None]
    else:
        values = np.asarray(fill, dtype=batch.dtype)
    out = np.where(masked, values, batch)
    return out[0] if was_2d else out


def _mask_1d(
    rng: np.random.Generator, clips: int, length: int, masks: int, width: int
) -> np.ndarray:
    """``(clips, length)`` booleans: the union of ``masks`` random spans of ``0..width`` each."""
    width = min(width, length)
    widths = rng.integers(0, width + 1, size=(clips, masks))
    starts = rng.integers(0, length - widths + 1)
    pos = np.arange(length)[None, None, :]
    inside = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])
    return inside.any(axis=1)


# --------------------------------------------------------------------------------------------
# codec history


def codec_round_trip(
    wave: np.ndarray,
    sample_rate: int = 16000,
    codec: Literal["mp3", "ogg"] = "mp3",
    rng: np.random.Generator | None = None,
    compression_level: float | None = None,
    level_range: tuple[float, float] = (0.0, 0.9),
    bitrate_mode: Literal["VARIABLE", "CONSTANT", "AVERAGE"] | None = None,
) -> np.ndarray:
    """Encode each clip to MP3 or OGG/Vorbis in memory and decode it back (lossy copy).

    Gives every training clip a codec history, so "was once an MP3" (common among one class
    of a scraped corpus) stops being a label. ``compression_level`` in [0, 1] is soundfile's
    (0 = best quality, 1 = smallest file; MP3 is capped at 0.99, see below); with ``rng`` and
    no level, one is drawn per clip uniformly from ``level_range``; with neither,
    libsndfile's default is used. ``bitrate_mode`` (MP3 only) is soundfile's: libsndfile
    defaults to VBR; with this libsndfile (1.2.2) MP3 levels 0-0.9 at 16 kHz give about
    190-25 kbit/s VBR or 170-25 kbit/s CBR, OGG levels 0-1 about 85-40 kbit/s.

    Time alignment: the result is float32 with exactly the input's length, time-aligned with
    the source. libsndfile writes a LAME/Xing info tag and its mpg123 decoder uses it to drop
    the encoder delay and padding (gapless decoding), and Ogg stores the exact length, so the
    decoded copy normally has the source's length with no offset (the tests check lag 0 by
    cross-correlation). When the encoder cannot write the tag (very low constant bitrates,
    whose first frame is too small) the copy comes back longer by the encoder delay (1105
    samples at 16 kHz) plus padding: then the delay is measured by cross-correlating the copy
    with the source over lags 0..4096 and the aligned window is cut out (LAME's 1105 is used
    for a silent clip). Decoded samples are clipped to [-1, 1] (codecs overshoot on peaks).
    """
    batch, was_1d = _waves(wave)
    if codec not in CODECS:
        raise UserError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
    rate = _positive_int(sample_rate, "sample_rate")
    if bitrate_mode is not None and (codec != "mp3" or bitrate_mode not in _BITRATE_MODES):
        raise UserError(
            f"bitrate_mode must be None or, for mp3 only, one of {', '.join(_BITRATE_MODES)};"
            f" got {bitrate_mode!r} for {codec}"
        )
    if compression_level is not None:
        level = float(compression_level)
        if not 0.0 <= level <= 1.0:
            raise UserError(f"compression_level must be in [0, 1], got {compression_level!r}")
        levels: list[float | None] = [level] * batch.shape[0]
    elif rng is not None:
        low, high = _check_range(*level_range, "compression level")
        if low < 0.0 or high > 1.0:
            raise UserError(f"level_range must lie within [0, 1], got {level_range!r}")
        levels = list(rng.uniform(low, high, size=batch.shape[0]))
    else:
        levels = [None] * batch.shape[0]
    out = np.empty_like(batch)
    for i, clip in enumerate(batch):
        out[i] = _round_trip_one(clip, rate, codec, levels[i], bitrate_mode)
    return _back(out, was_1d)


def _round_trip_one(
    clip: np.ndarray, rate: int, codec: str, level: float | None, bitrate_mode: str | None
) -> np.ndarray:
    """One clip through the codec and back, aligned and cut to the clip's length."""
    kwargs: dict[str, object] = (
        {"format": "MP3"} if codec == "mp3" else {"format": "OGG", "subtype": "VORBIS"}
    )
    if bitrate_mode is not None:
        kwargs["bitrate_mode"] = bitrate_mode
    if level is not None:
        kwargs["compression_level"] = min(level, _MP3_MAX_LEVEL) if codec == "mp3" else level
    buf = io.BytesIO()
    try:
        sf.write(buf, clip, rate, **kwargs)
        buf.seek(0)
        decoded, decoded_rate = sf.read(buf, dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as exc:  # LibsndfileError is a RuntimeError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{codec} round trip failed at {rate} Hz: {reason}") from exc
    if decoded_rate != rate:
        raise UserError(f"{codec} decoder returned {decoded_rate} Hz for a {rate} Hz clip")
    copy = decoded.mean(axis=1) if decoded.shape[1] > 1 else decoded[:, 0]
    n = clip.shape[0]
    if copy.shape[0] > n:
        delay = _codec_delay(clip, copy)
        copy = copy[delay : delay + n]
    if copy.shape[0] < n:
        copy = np.pad(copy, (0, n - copy.shape[0]))
    return np.clip(copy, -1.0, 1.0)


def _codec_delay(source: np.ndarray, copy: np.ndarray) -> int:
    """Offset of ``source`` inside the longer ``copy``, by FFT cross-correlation."""
    n = source.shape[0]
    max_lag = min(copy.shape[0] - n, _MAX_CODEC_DELAY)
    if not np.any(source):
        return min(_MP3_FALLBACK_DELAY, max_lag)
    size = 1 << int(math.ceil(math.log2(copy.shape[0] + n)))
    spectrum = np.fft.rfft(copy.astype(np.float64), size)
    spectrum *= np.conj(np.fft.rfft(source.astype(np.float64), size))
    xcorr = np.fft.irfft(spectrum, size)[: max_lag + 1]  # xcorr[k] = sum copy[t + k] source[t]
    return int(np.argmax(xcorr))


# --------------------------------------------------------------------------------------------
# composition


def compose(*steps: Step) -> Step:
    """One step that applies ``steps`` in order, all drawing from the same generator."""

    def run(waves: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for step in steps:
            waves = step(waves, rng)
        return waves

    return run


def sometimes(step: Step, p: float) -> Step:
    """``step`` applied to each clip of a batch with probability ``p`` (the others pass through).

    Augmenting every clip every time would teach the model a world where all audio is noisy or
    coded; a probability keeps clean clips in the mix.
    """
    if not 0.0 <= float(p) <= 1.0:
        raise UserError(f"probability must be in [0, 1], got {p!r}")

    def run(waves: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        batch, was_1d = _waves(waves, "waves")
        chosen = rng.random(batch.shape[0]) < p
        out = batch.copy()
        if chosen.any():
            out[chosen] = step(batch[chosen], rng)
        return _back(out, was_1d)

    return run
