"""A synthetic, seed-deterministic demo corpus of bona fide and spoofed speech.

The pipeline has to run end to end on a laptop with nothing downloaded, so this
module invents its own data. It is deliberately not a toy: a detector that
only learned "synthetic vs. silence" or "loud vs. quiet" would make the tuning,
evaluation and model registry stages meaningless. So:

* **Bona fide** speech comes from a source-filter model with the variation real
  voices have: F0 contours with declination, pitch accents and slow wander;
  jitter and shimmer; breathiness; formant transitions between vowels;
  fricatives, stop bursts, nasals and pauses; and a fixed set of synthetic
  speakers that differ in F0, vocal-tract length, breathiness, speaking rate
  and glottal pulse shape.
* **Spoofed** speech is the same kind of utterance passed through one of the
  "attack" systems in `ATTACKS`, each leaving a trace of the kind real TTS and
  voice conversion leave (phase reconstruction, over-smoothed envelopes, too
  regular excitation, band-limited upsampling, phase-vocoder processing).
  Attack strength is random per clip, so some spoofs are subtle.
* Both classes then go through the *same* random channel (reverberation,
  coloured noise at a random SNR, RMS normalisation, random gain), and every
  clip has exactly the requested length, so neither the channel, the loudness
  nor the duration gives the label away.

Everything is numpy + scipy (no TensorFlow import) and vectorised (no
per-sample Python loops), so a 2 s clip at 16 kHz takes about 15 ms of one CPU
core to make. A clip is a pure function of
its `DemoClip` record and the requested rate and length: the planner only hands
out seeds, and `generate_clip` derives every random draw from the clip's own
seed, so clips can be generated in any order, in any process, and come out
bit-for-bit identical.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft as sp_fft
from scipy import signal, sparse
from scipy.ndimage import gaussian_filter1d

__all__ = [
    "ATTACKS",
    "BONAFIDE",
    "NO_ATTACK",
    "SPEAKERS",
    "SPLITS",
    "SPOOF",
    "UNSEEN_ATTACKS",
    "DemoClip",
    "generate_clip",
    "plan_corpus",
]

ATTACKS: dict[str, str] = {
    "A01": "griffin_lim",
    "A02": "smoothed_envelope",
    "A03": "buzzy_excitation",
    "A04": "upsampling",
    "A05": "phase_vocoder",
}
# A05 never appears in training or validation, so the test EER also measures
# how well the detector generalises to an attack it has not seen.
UNSEEN_ATTACKS: frozenset[str] = frozenset({"A05"})
SPLITS = ("train", "validation", "test")

BONAFIDE = "bonafide"
SPOOF = "spoof"
NO_ATTACK = "-"

# Twenty speakers, alternating male (even index) and female (odd index), so that
# every split can be given both sexes and a test speaker is never a training one.
SPEAKERS: tuple[str, ...] = tuple(f"spk{i:02d}" for i in range(20))
_SPEAKERS_PER_SPLIT = {"train": 12, "validation": 4, "test": 4}

_SEEN_ATTACKS: tuple[str, ...] = tuple(a for a in ATTACKS if a not in UNSEEN_ATTACKS)

# Control tracks (F0, amplitudes, formants) live at this frame rate,
# independent of the audio rate, so the same utterance can be rendered at any
# sample rate (the upsampling attack renders it at 8 or 11.025 kHz).
_CTRL_RATE = 400.0
# Before the random gain every clip is brought to this RMS; the gain then
# spreads loudness identically for both classes.
_TARGET_RMS = 0.05
_GAIN_DB = (-10.0, 4.0)
_PEAK_LIMIT = 0.999


@dataclass(frozen=True)
class DemoClip:
    """One planned clip; `generate_clip` turns it into audio.

    The record carries everything needed to make the waveform (the per-clip
    `seed` plus label, speaker and attack), so the plan can be written to a
    manifest and clips generated later, lazily, or in parallel.
    """

    clip_id: str
    split: str
    label: str
    speaker: str
    attack: str
    seed: int


# ---------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------


def _split_speakers(seed: int) -> dict[str, tuple[str, ...]]:
    """Deal speakers to splits, disjointly and with both sexes in each split.

    Disjoint speakers mean a detector cannot score well by recognising voices;
    dealing males and females separately keeps a small split from being, say,
    all male, which would make its EER depend on the sex of the voices.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    males = [SPEAKERS[i] for i in rng.permutation(range(0, len(SPEAKERS), 2))]
    females = [SPEAKERS[i] for i in rng.permutation(range(1, len(SPEAKERS), 2))]
    out: dict[str, tuple[str, ...]] = {}
    for split in SPLITS:
        half = _SPEAKERS_PER_SPLIT[split] // 2
        chosen = males[:half] + females[:half]
        del males[:half], females[:half]
        out[split] = tuple(sorted(chosen))
    return out


def _cycled(items: tuple[str, ...], n: int, rng: np.random.Generator) -> list[str]:
    """`n` items taken round-robin then shuffled, so each item is used equally often."""
    seq = [items[i % len(items)] for i in range(n)]
    return [seq[i] for i in rng.permutation(n)]


def plan_corpus(seed: int, counts: dict[str, int]) -> list[DemoClip]:
    """Deterministic list of clips; counts e.g. {"train": 600, "validation": 200, "test": 400}.

    Each split is half bona fide, half spoof (for an odd count bona fide gets
    the extra clip), so an EER or accuracy is not skewed by class priors.
    Speakers are disjoint between splits; training and validation spoofs use
    the seen attacks A01-A04 in equal shares, test spoofs use A01-A05 with the
    unseen A05 getting the first (hence largest) share, i.e. at least 20 %.
    Each split's clips depend only on `seed` and that split's count, so
    resizing the test set does not change the training set.

    Raises ValueError on an unknown split, a count < 2, or a negative seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    unknown = sorted(set(counts) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {list(SPLITS)}")
    for split, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 2:
            raise ValueError(
                f"count for split {split!r} must be an integer >= 2 (one clip per class), "
                f"got {count!r}"
            )

    speakers = _split_speakers(int(seed))
    clips: list[DemoClip] = []
    for split_index, split in enumerate(SPLITS):
        if split not in counts:
            continue
        n = int(counts[split])
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(split_index + 1,)))
        n_spoof = n // 2
        n_bona = n - n_spoof
        attacks = ("A05", *_SEEN_ATTACKS) if split == "test" else _SEEN_ATTACKS
        spk = speakers[split]
        rows = [(BONAFIDE, s, NO_ATTACK) for s in _cycled(spk, n_bona, rng)]
        rows += [
            (SPOOF, s, a)
            for s, a in zip(_cycled(spk, n_spoof, rng), _cycled(attacks, n_spoof, rng), strict=True)
        ]
        order = rng.permutation(n)
        clip_seeds = rng.integers(0, 2**62, size=n)
        for i, row_index in enumerate(order):
            label, speaker, attack = rows[row_index]
            clips.append(
                DemoClip(
                    clip_id=f"demo_{split}_{i:06d}",
                    split=split,
                    label=label,
                    speaker=speaker,
                    attack=attack,
                    seed=int(clip_seeds[i]),
                )
            )
    return clips


# ---------------------------------------------------------------------------
# Speakers and utterance plans (sample-rate independent)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Speaker:
    """Voice parameters; fixed per speaker so a speaker sounds the same in every clip."""

    f0: float  # median F0 in Hz
    f0_range: float  # multiplier on prosodic excursions (semitones)
    vtl: float  # formant scale: >1 is a shorter vocal tract
    breath: float  # aspiration noise relative to the voiced excitation
    rate: float  # speaking-rate multiplier (>1 is faster)
    jitter: float  # relative period-to-period F0 perturbation (std)
    shimmer: float  # period-to-period amplitude perturbation (std of log amplitude)
    open_q: float  # open quotient of the glottal pulse
    skew: float  # share of the open phase that is opening
    bw: float  # formant bandwidth multiplier


@functools.lru_cache(maxsize=256)
def _speaker(name: str) -> _Speaker:
    """Voice of `name`, from a stable hash of the name alone.

    `generate_clip` may only use the clip's fields, and the voice must not
    depend on the corpus seed or call order, so it is derived from the name
    (crc32, not Python's salted `hash`).
    """
    rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    suffix = name.removeprefix("spk")
    female = int(suffix) % 2 == 1 if suffix.isdigit() else bool(rng.random() < 0.5)
    if female:
        f0 = rng.uniform(175.0, 245.0)
        vtl = rng.uniform(1.10, 1.22)
        open_q = rng.uniform(0.55, 0.75)
    else:
        f0 = rng.uniform(92.0, 140.0)
        vtl = rng.uniform(0.92, 1.04)
        open_q = rng.uniform(0.4, 0.6)
    return _Speaker(
        f0=f0,
        f0_range=rng.uniform(0.6, 1.4),
        vtl=vtl,
        breath=rng.uniform(0.03, 0.25) * (1.5 if female else 1.0),
        rate=rng.uniform(0.85, 1.2),
        jitter=rng.uniform(0.004, 0.015),
        shimmer=rng.uniform(0.03, 0.09),
        open_q=open_q,
        skew=rng.uniform(0.6, 0.8),
        bw=rng.uniform(0.85, 1.3),
    )


# (F1, F2, F3) in Hz for an adult male vocal tract; scaled by `_Speaker.vtl`.
_VOWELS = np.array(
    [
        [730, 1090, 2440],  # a
        [270, 2290, 3010],  # i
        [300, 870, 2240],  # u
        [530, 1840, 2480],  # e
        [570, 840, 2410],  # o
        [660, 1720, 2410],  # ae
        [490, 1350, 1690],  # er
        [390, 1990, 2550],  # ih
        [520, 1190, 2390],  # uh
        [440, 1020, 2240],  # uh (book)
    ],
    dtype=float,
)
_NASAL = np.array([280.0, 1300.0, 2300.0])
_F45 = np.array([3400.0, 4300.0])
_BANDWIDTHS = np.array([70.0, 95.0, 140.0, 220.0, 300.0])
# Fricative noise bands (Hz) for s, sh, f: a coarse but audible place contrast.
_FRICATIVE_BANDS = ((3800.0, 7800.0), (2200.0, 6000.0), (900.0, 7500.0))
_FRICATIVE_LEVELS = np.array([0.55, 0.5, 0.22])


@dataclass(frozen=True)
class _Utterance:
    """Control tracks at `_CTRL_RATE`: what is said and how, but no audio yet."""

    voice: np.ndarray  # voicing amplitude
    aspiration: np.ndarray  # /h/-like noise amplitude into the vocal tract
    fricative: np.ndarray  # (3, frames) fricative noise amplitudes
    burst: np.ndarray  # stop-release burst amplitude
    st_prosody: np.ndarray  # F0 in semitones re. the speaker's F0: slow part
    st_micro: np.ndarray  # F0 microvariation in semitones (flattened by A03)
    formants: np.ndarray  # (frames, 5) formant frequencies in Hz
    bandwidths: np.ndarray  # (5,) formant bandwidths in Hz
    render_seed: int  # seed for the sample-level noise (jitter, aspiration, ...)


def _plan_utterance(rng: np.random.Generator, spk: _Speaker, seconds: float) -> _Utterance:
    """Invent a random phrase sequence that fills `seconds`.

    Syllables are (onset)(vowel or diphthong)(coda) with fricatives, stops,
    nasals and /h/; words are grouped into phrases separated by pauses. F0
    gets a declination line per phrase, a Gaussian accent on every stressed
    vowel, a phrase-final fall or rise, slow wander and fast microvariation.
    Formant targets sit on vowel and nasal steady states and are interpolated
    and smoothed in between, which gives vowel-to-vowel transitions and
    coarticulation through the consonants.
    """
    nf = int(math.ceil(seconds * _CTRL_RATE)) + 2
    voice = np.zeros(nf)
    aspiration = np.zeros(nf)
    fricative = np.zeros((3, nf))
    burst = np.zeros(nf)
    accent = np.zeros(nf)
    decl = np.zeros(nf)
    frames = np.arange(nf, dtype=float)
    t_points: list[float] = []
    f_points: list[np.ndarray] = []
    rate = spk.rate * rng.uniform(0.9, 1.12)

    def span(t0: float, t1: float) -> slice:
        return slice(min(nf, round(t0 * _CTRL_RATE)), min(nf, round(t1 * _CTRL_RATE)))

    def target(t: float, f123: np.ndarray) -> None:
        t_points.append(t)
        f_points.append(f123 * spk.vtl * (1.0 + 0.04 * rng.standard_normal(3)))

    def vowel(t: float, stressed: bool, gain: float) -> float:
        dur = (rng.uniform(0.1, 0.2) if stressed else rng.uniform(0.05, 0.11)) / rate
        first = _VOWELS[rng.integers(len(_VOWELS))]
        second = _VOWELS[rng.integers(len(_VOWELS))] if rng.random() < 0.25 else first
        target(t + 0.25 * dur, first)
        target(t + 0.75 * dur, second)
        voice[span(t, t + dur)] = gain * (1.0 if stressed else rng.uniform(0.55, 0.85))
        if stressed:
            width = max(0.3 * dur, 0.03) * _CTRL_RATE
            centre = (t + 0.5 * dur) * _CTRL_RATE
            height = rng.uniform(0.8, 3.5) * spk.f0_range
            accent[:] += height * np.exp(-0.5 * ((frames - centre) / width) ** 2)
        return t + dur

    def consonant(t: float, coda: bool) -> float:
        u = rng.random()
        scale = 0.8 if coda else 1.0
        if u < 0.4:  # fricative s / sh / f
            kind = int(rng.integers(3))
            dur = rng.uniform(0.06, 0.13) * scale / rate
            fricative[kind, span(t, t + dur)] = rng.uniform(0.6, 1.0)
            return t + dur
        if u < 0.7:  # stop: closure, burst, aspiration
            closure = rng.uniform(0.03, 0.065) / rate
            t += closure
            burst[span(t, t + rng.uniform(0.006, 0.015))] = rng.uniform(0.5, 1.0)
            asp = rng.uniform(0.01, 0.045) / rate
            aspiration[span(t + 0.005, t + 0.005 + asp)] = rng.uniform(0.4, 0.8)
            return t + 0.005 + asp
        if u < 0.9:  # nasal: weak voicing with a low murmur formant pattern
            dur = rng.uniform(0.04, 0.085) * scale / rate
            voice[span(t, t + dur)] = rng.uniform(0.25, 0.4)
            target(t + 0.5 * dur, _NASAL)
            return t + dur
        dur = rng.uniform(0.04, 0.08) / rate  # /h/
        aspiration[span(t, t + dur)] = rng.uniform(0.5, 0.9)
        return t + dur

    cursor = rng.uniform(0.02, 0.25)
    while cursor < seconds:
        phrase_start = cursor
        n_words = int(rng.integers(2, 6))
        for _ in range(n_words):
            n_syll = int(rng.integers(1, 4))
            stressed = int(rng.integers(n_syll))
            for s in range(n_syll):
                if rng.random() < 0.75:
                    cursor = consonant(cursor, coda=False)
                progress = min(1.0, (cursor - phrase_start) / 1.5)
                cursor = vowel(cursor, s == stressed, gain=1.0 - 0.35 * progress)
                if rng.random() < 0.3:
                    cursor = consonant(cursor, coda=True)
            if rng.random() < 0.15:
                cursor += rng.uniform(0.03, 0.08) / rate
        sl = span(phrase_start, cursor)
        length = sl.stop - sl.start
        if length > 0:
            drop = rng.uniform(1.5, 4.5) * spk.f0_range
            line = np.linspace(0.5 * drop, -0.5 * drop, length)
            tail = min(length, int(0.15 * _CTRL_RATE))
            final = rng.uniform(-2.5, 3.0) * spk.f0_range  # fall, or question-like rise
            line[length - tail :] += final * np.linspace(0.0, 1.0, tail) ** 2
            decl[sl] = line
        pause_end = cursor + rng.uniform(0.12, 0.4) / rate
        # Hold the last phrase's pitch through the pause, so the next phrase
        # resets from there (as a speaker does) and there is no F0 step.
        if sl.stop > 0:
            decl[span(cursor, pause_end)] = decl[sl.stop - 1]
        cursor = pause_end

    wander = gaussian_filter1d(rng.standard_normal(nf), 0.12 * _CTRL_RATE)
    wander *= 0.8 * spk.f0_range / max(float(np.std(wander)), 1e-9)
    micro = gaussian_filter1d(rng.standard_normal(nf), 0.012 * _CTRL_RATE)
    micro *= rng.uniform(0.12, 0.3) / max(float(np.std(micro)), 1e-9)
    st_prosody = gaussian_filter1d(decl, 0.02 * _CTRL_RATE) + accent + wander

    if not t_points:  # nothing fitted before the clip ended: a neutral vocal tract
        target(0.0, _VOWELS[8])
    tp = np.asarray(t_points) * _CTRL_RATE
    fp = np.asarray(f_points)
    f123 = np.stack([np.interp(frames, tp, fp[:, j]) for j in range(3)], axis=1)
    f45 = np.broadcast_to(_F45 * spk.vtl * rng.uniform(0.97, 1.03, 2), (nf, 2))
    formants = gaussian_filter1d(np.concatenate([f123, f45], axis=1), 0.012 * _CTRL_RATE, axis=0)
    bandwidths = _BANDWIDTHS * spk.bw * rng.uniform(0.9, 1.1, 5)

    sigma = 0.006 * _CTRL_RATE
    return _Utterance(
        voice=gaussian_filter1d(voice, sigma),
        aspiration=gaussian_filter1d(aspiration, sigma),
        fricative=gaussian_filter1d(fricative, sigma, axis=1),
        burst=gaussian_filter1d(burst, 0.4 * sigma),
        st_prosody=st_prosody,
        st_micro=micro,
        formants=formants,
        bandwidths=bandwidths,
        render_seed=int(rng.integers(0, 2**62)),
    )


# ---------------------------------------------------------------------------
# Rendering (source-filter synthesis at a given sample rate)
# ---------------------------------------------------------------------------


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


@functools.lru_cache(maxsize=64)
def _fricative_filters(sample_rate: int) -> tuple[np.ndarray, ...]:
    """Band-pass SOS filters for the fricative places, clipped to the rate's Nyquist."""
    nyq = 0.5 * sample_rate
    filters = []
    for lo, hi in _FRICATIVE_BANDS:
        hi_c = min(hi, 0.9 * nyq)
        lo_c = min(lo, 0.6 * hi_c)
        filters.append(
            signal.butter(2, [lo_c, hi_c], btype="bandpass", fs=sample_rate, output="sos")
        )
    filters.append(
        signal.butter(2, min(600.0, 0.4 * nyq), btype="highpass", fs=sample_rate, output="sos")
    )
    return tuple(filters)


def _vocal_tract(
    x: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray, sample_rate: int
) -> np.ndarray:
    """Filter `x` through a time-varying cascade of formant resonators.

    The formants are updated every 5 ms (as in Klatt-style synthesisers). The
    resonators of a block are multiplied into a single all-pole polynomial
    (built for all blocks at once) and each block is one `lfilter` call that
    carries the filter state over from the previous block, so the output is
    continuous across updates. One call per block rather than one per
    resonator per block keeps a 2 s clip to a few milliseconds.
    """
    n = len(x)
    block = max(8, round(0.005 * sample_rate))
    n_blocks = math.ceil(n / block)
    centres = (np.arange(n_blocks) * block + 0.5 * block) * (_CTRL_RATE / sample_rate)
    ctrl = np.arange(len(formants), dtype=float)
    denominator = np.ones((n_blocks, 1))
    gain = np.ones(n_blocks)
    for j in range(formants.shape[1]):
        f = np.interp(centres, ctrl, formants[:, j])
        if f.max() >= 0.46 * sample_rate:  # resonance would sit at/above Nyquist
            continue
        r = math.exp(-math.pi * bandwidths[j] / sample_rate)
        a1 = -2.0 * r * np.cos(2.0 * np.pi * f / sample_rate)
        a2 = r * r
        grown = np.zeros((n_blocks, denominator.shape[1] + 2))
        grown[:, :-2] += denominator
        grown[:, 1:-1] += a1[:, None] * denominator
        grown[:, 2:] += a2 * denominator
        denominator = grown
        gain *= 1.0 + a1 + a2  # unity gain at DC for every resonator
    if denominator.shape[1] == 1:
        return x.copy()
    out = np.empty(n)
    state = np.zeros(denominator.shape[1] - 1)
    for b in range(n_blocks):
        s = b * block
        out[s : s + block], state = signal.lfilter(
            gain[b : b + 1], denominator[b], x[s : s + block], zi=state
        )
    return out


def _upsample_tracks(tracks: np.ndarray, n: int, sample_rate: int) -> np.ndarray:
    """Linearly interpolate control tracks (rows) onto the first `n` samples.

    When the sample rate is a whole multiple of the control rate (16 kHz and
    8 kHz are) this is a broadcast ramp between neighbouring frames, several
    times faster than `np.interp`, which is the fallback for other rates.
    """
    n_ctrl = tracks.shape[1]
    ratio = sample_rate / _CTRL_RATE
    if ratio == int(ratio) and (n_ctrl - 1) * int(ratio) >= n:
        step = int(ratio)
        ramp = np.arange(step) / step
        lo = tracks[:, :-1, None]
        out = lo + (tracks[:, 1:, None] - lo) * ramp
        return out.reshape(len(tracks), -1)[:, :n]
    pos = np.minimum(np.arange(n) / ratio, n_ctrl - 1.0)
    grid = np.arange(n_ctrl, dtype=float)
    return np.stack([np.interp(pos, grid, row) for row in tracks])


def _render(
    utt: _Utterance,
    spk: _Speaker,
    sample_rate: int,
    n: int,
    *,
    irregularity: float = 1.0,
    micro: float = 1.0,
    breath: float = 1.0,
    prosody: float = 1.0,
    closure: float = 1.0,
) -> np.ndarray:
    """Synthesise the utterance: glottal source -> vocal tract, plus noise sources.

    The glottal source is a Rosenberg pulse evaluated on a running phase, so
    F0 can change every sample without a per-sample loop: jitter perturbs the
    frequency of each period, shimmer its amplitude, and aspiration noise is
    modulated by the glottal flow (breathy voices). The keyword factors let
    the buzzy-excitation attack (A03) flatten exactly those natural
    irregularities, and sharpen the glottal closure, while keeping everything
    else.
    """
    rng = np.random.default_rng(utt.render_seed)
    tracks = np.vstack(
        [
            prosody * utt.st_prosody + micro * utt.st_micro,
            utt.voice,
            utt.aspiration,
            utt.burst,
            utt.fricative,
        ]
    )
    up = _upsample_tracks(tracks, n, sample_rate)
    st, voice, aspiration, burst_env = up[0], up[1], up[2], up[3]

    f0 = np.minimum(spk.f0 * np.exp2(st / 12.0), 0.45 * sample_rate)
    # Draw per-period perturbations for more periods than can occur, so the
    # number of draws (hence every later draw) does not depend on the result.
    n_periods = int(np.sum(f0) / sample_rate * 1.3) + 8
    jitter = np.clip(rng.standard_normal(n_periods) * spk.jitter * irregularity, -0.2, 0.2)
    shimmer = np.exp(rng.standard_normal(n_periods) * spk.shimmer * irregularity)
    phase = np.cumsum(f0 / sample_rate)
    period = np.minimum(phase.astype(np.intp), n_periods - 1)
    phase = np.cumsum(f0 * (1.0 + jitter[period]) / sample_rate)
    period = np.minimum(phase.astype(np.intp), n_periods - 1)
    frac = phase - period

    opening = spk.open_q * spk.skew
    closing = (spk.open_q - opening) * closure
    flow = np.zeros(n)
    rising = frac < opening
    flow[rising] = 0.5 - 0.5 * np.cos((np.pi / opening) * frac[rising])
    falling = ~rising & (frac < opening + closing)
    flow[falling] = np.cos((0.5 * np.pi / closing) * (frac[falling] - opening))
    # Flow derivative = glottal source with lip radiation folded in.
    source = np.diff(flow, prepend=0.0) * shimmer[period]
    voiced = voice > 0.5
    source *= voice / (_rms(source[voiced]) if voiced.any() else _rms(source))

    noise = rng.standard_normal(n)
    source += noise * (spk.breath * breath * voice * (0.3 + flow) + 0.35 * aspiration)
    speech = _vocal_tract(source, utt.formants, utt.bandwidths, sample_rate)
    speech /= _rms(speech[voiced]) if voiced.any() else _rms(speech)

    filters = _fricative_filters(sample_rate)
    white = rng.standard_normal(n)
    for kind in range(3):
        band = signal.sosfilt(filters[kind], white)
        speech += (_FRICATIVE_LEVELS[kind] / _rms(band)) * up[4 + kind] * band
    burst = signal.sosfilt(filters[3], rng.standard_normal(n))
    speech += 1.2 / _rms(burst) * burst_env * burst
    return speech


# ---------------------------------------------------------------------------
# STFT helpers for the attacks
# ---------------------------------------------------------------------------


def _fft_size(sample_rate: int, seconds: float = 0.032) -> int:
    return 1 << max(6, round(math.log2(seconds * sample_rate)))


@functools.lru_cache(maxsize=32)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (cached: the attacks ask for it on every STFT)."""
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    window.flags.writeable = False
    return window


def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Centred STFT, frames x bins."""
    pad = n_fft // 2
    n_frames = len(x) // hop + 1
    padded = np.concatenate([np.zeros(pad), x, np.zeros(n_frames * hop + n_fft - len(x) - pad)])
    frames = sliding_window_view(padded, n_fft)[::hop][:n_frames]
    return sp_fft.rfft(frames * _hann(n_fft), axis=1)


def _overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """Sum frames placed `hop` apart: a few strided adds when the hop divides
    the frame length (the usual case), a `bincount` scatter-add otherwise."""
    n_frames, size = frames.shape
    total = (n_frames - 1) * hop + size
    if size % hop == 0:
        ratio = size // hop
        out = np.zeros((n_frames + ratio - 1) * hop)
        parts = frames.reshape(n_frames, ratio, hop)
        for k in range(ratio):
            out[k * hop : (k + n_frames) * hop] += parts[:, k, :].reshape(-1)
        return out
    index = (np.arange(n_frames) * hop)[:, None] + np.arange(size)
    return np.bincount(index.ravel(), weights=frames.ravel(), minlength=total)


@functools.lru_cache(maxsize=32)
def _ola_norm(n_fft: int, hop: int, n_frames: int) -> np.ndarray:
    """Reciprocal of the summed squared windows, floored where frames barely overlap."""
    window_sq = np.broadcast_to(_hann(n_fft) ** 2, (n_frames, n_fft))
    norm = _overlap_add(np.ascontiguousarray(window_sq), hop)
    inverse = 1.0 / np.maximum(norm, 1e-3 * norm.max())
    inverse.flags.writeable = False
    return inverse


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Least-squares inverse of `_stft` (weighted overlap-add) for any hop."""
    frames = sp_fft.irfft(spec, n=n_fft, axis=1) * _hann(n_fft)
    out = _overlap_add(frames, hop) * _ola_norm(n_fft, hop, frames.shape[0])
    pad = n_fft // 2
    out = out[pad : pad + length]
    if len(out) < length:
        out = np.concatenate([out, np.zeros(length - len(out))])
    return out


# ---------------------------------------------------------------------------
# Attacks
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _mel_round_trip(
    sample_rate: int, n_fft: int, n_mels: int, fmax: float
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Sparse triangular mel filterbank for a magnitude round trip through mel bands.

    Returns (analysis, synthesis): analysis is mels x bins, each band a
    weighted *mean* of its bins (so the round trip keeps the spectral tilt);
    synthesis is bins x mels and spreads band values back over the bins.
    Sparse, because each bin touches at most two bands, and because a dense
    matmul would wake up multi-threaded BLAS, which oversubscribes the CPU
    when clips are generated in a process pool.
    """

    def to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    edges_mel = np.linspace(0.0, to_mel(np.array(fmax)), n_mels + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    freqs = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (freqs - lower) / np.maximum(centre - lower, 1e-9)
    fall = (upper - freqs) / np.maximum(upper - centre, 1e-9)
    bank = np.maximum(0.0, np.minimum(rise, fall))
    analysis = bank / np.maximum(bank.sum(axis=1, keepdims=True), 1e-9)
    synthesis = bank / np.maximum(bank.sum(axis=0, keepdims=True), 1e-9)
    return sparse.csr_matrix(analysis), sparse.csr_matrix(synthesis.T)


def _griffin_lim(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A01: a TTS-style mel magnitude, with the phase rebuilt by Griffin-Lim.

    Early neural TTS (Tacotron 1) predicted a mel spectrogram and inverted it
    with Griffin-Lim. So the magnitude is first squeezed through a mel
    filterbank (random size and upper edge: harmonics are smeared at high
    frequencies, the top band may go missing) and spread back, then the
    phase is rebuilt from random with few iterations (random per clip), which
    leaves phase incoherence: smeared harmonics, "phasey" reverberant texture
    and pre-echo. More bands and iterations = subtler.
    """
    n_fft = _fft_size(sample_rate)
    hop = n_fft // 4
    mag = np.abs(_stft(x, n_fft, hop))
    n_mels = int(rng.integers(40, 129))
    fmax = 0.5 * sample_rate * rng.uniform(0.85, 1.0)
    analysis, synthesis = _mel_round_trip(sample_rate, n_fft, n_mels, round(fmax))
    mag = np.asarray(synthesis @ (analysis @ mag.T)).T
    n_iter = int(round(math.exp(rng.uniform(math.log(1), math.log(16)))))
    phase = np.exp(1j * rng.uniform(-np.pi, np.pi, mag.shape))
    for _ in range(n_iter):
        est = _stft(_istft(mag * phase, n_fft, hop, len(x)), n_fft, hop)
        phase = est / np.maximum(np.abs(est), 1e-12)
    return _istft(mag * phase, n_fft, hop, len(x))


def _smoothed_envelope(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A02: over-smoothed spectral envelope, as statistical vocoders produce.

    The log-magnitude is split by cepstral liftering into envelope and fine
    structure; the envelope is smoothed across time, its formant peaks are
    flattened towards the frame mean (broader bandwidths, muffled transitions),
    and the fine structure above a random cutoff is averaged away. The
    original phase is reused, so timing and pitch are intact and only the
    spectral shape gives it away. Strength is random per clip.
    """
    n_fft = _fft_size(sample_rate)
    hop = n_fft // 4
    spec = _stft(x, n_fft, hop)
    mag = np.abs(spec)
    log_mag = np.log(mag + 1e-5 * (mag.max() + 1e-12))
    strength = rng.uniform(0.3, 1.0)
    ceps = sp_fft.irfft(log_mag, n=n_fft, axis=1)
    keep = max(8, round((40 - 25 * strength) * n_fft / 512))
    ceps[:, keep : n_fft - keep + 1] = 0.0
    envelope = sp_fft.rfft(ceps, axis=1).real
    fine = log_mag - envelope
    frames_smooth = 1.0 + 6.0 * strength * 16000.0 / sample_rate * 512.0 / n_fft
    smoothed = gaussian_filter1d(envelope, frames_smooth, axis=0)
    mean = smoothed.mean(axis=1, keepdims=True)
    smoothed = mean + (1.0 - 0.35 * strength) * (smoothed - mean)
    cutoff_hz = rng.uniform(3000.0, 6500.0)
    cutoff_bin = min(mag.shape[1], round(cutoff_hz / sample_rate * n_fft))
    fine[:, cutoff_bin:] *= 1.0 - 0.7 * strength
    new_mag = np.exp(smoothed + fine)
    return _istft(new_mag * spec / np.maximum(mag, 1e-12), n_fft, hop, len(x))


def _phase_vocoder(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A05 (unseen): phase-vocoder pitch shift plus frame-wise phase noise.

    Voice conversion systems often shift pitch with a phase vocoder: stretch
    time by alpha with phase propagation (no phase locking), then resample
    back to the original duration. That leaves "phasiness" and transient
    smearing; extra random phase per bin (random amount) adds the frame-wise
    incoherence of a cheap overlap-add vocoder. Neither artefact is shaped
    exactly like any seen attack.
    """
    n = len(x)
    n_fft = _fft_size(sample_rate)
    hop_a = n_fft // 4
    sign = 1.0 if rng.random() < 0.5 else -1.0
    alpha = math.exp(sign * rng.uniform(0.04, 0.2))
    hop_s = max(1, round(hop_a * alpha))
    spec = _stft(x, n_fft, hop_a)
    mag = np.abs(spec)
    phase = np.angle(spec)
    omega = 2.0 * np.pi * hop_a * np.arange(mag.shape[1]) / n_fft
    delta = np.diff(phase, axis=0) - omega
    delta = np.mod(delta + np.pi, 2.0 * np.pi) - np.pi
    advance = (omega + delta) * (hop_s / hop_a)
    out_phase = np.concatenate([phase[:1], phase[:1] + np.cumsum(advance, axis=0)], axis=0)
    out_phase += rng.uniform(0.2, 1.0) * rng.uniform(-np.pi, np.pi, out_phase.shape)
    stretched_len = (mag.shape[0] - 1) * hop_s + 1
    y = _istft(mag * np.exp(1j * out_phase), n_fft, hop_s, stretched_len)
    y = y[: max(1, round(n * hop_s / hop_a))]
    return signal.resample(y, n)


def _upsampled(
    utt: _Utterance, spk: _Speaker, rng: np.random.Generator, sample_rate: int, n: int
) -> np.ndarray:
    """A04: synthesise at 8 or 11.025 kHz and upsample crudely.

    Zero-order hold or linear interpolation, without a proper anti-imaging
    filter, leaves spectral images above the low rate's Nyquist frequency and
    an otherwise empty high band, like a low-rate TTS model served at 16 kHz.
    """
    candidates = [r for r in (8000, 11025) if r < 0.8 * sample_rate]
    low = candidates[int(rng.integers(len(candidates)))] if candidates else sample_rate // 2
    n_low = math.ceil(n * low / sample_rate) + 2
    y = _render(utt, spk, low, n_low)
    pos = np.arange(n) * (low / sample_rate)
    if rng.random() < 0.5:
        return y[np.minimum(pos.astype(np.int64), n_low - 1)]  # zero-order hold
    return np.interp(pos, np.arange(n_low, dtype=float), y)


# ---------------------------------------------------------------------------
# Channel and the public generator
# ---------------------------------------------------------------------------


def _coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown)."""
    spec = sp_fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spec), dtype=float)
    freqs[0] = 1.0
    noise = sp_fft.irfft(spec * freqs ** (-0.5 * exponent), n=n)
    return noise / _rms(noise)


def _channel(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Room, noise, level: applied identically (in distribution) to both classes.

    The RMS is normalised *before* the random gain, so loudness carries no
    label information; reverberation and noise are drawn from the same
    distributions for bona fide and spoofed clips, so the channel does not
    either. The peak limit only rarely engages (high gain on a peaky clip).
    """
    n = len(x)
    x = x / _rms(x)
    if rng.random() < 0.5:
        rt60 = rng.uniform(0.1, 0.5)
        length = max(2, int(min(rt60, 0.5) * sample_rate))
        t = np.arange(length) / sample_rate
        tail = rng.standard_normal(length) * np.exp(-6.9078 * t / rt60)
        tail[: max(1, int(0.002 * sample_rate))] = 0.0  # first reflections after 2 ms
        drr_db = rng.uniform(2.0, 15.0)  # direct-to-reverberant ratio
        rir = tail * (10.0 ** (-drr_db / 20.0) / math.sqrt(float(np.sum(tail**2)) + 1e-20))
        rir[0] += 1.0
        x = signal.fftconvolve(x, rir)[:n]
    snr_db = rng.uniform(15.0, 45.0)
    noise = _coloured_noise(rng, n, rng.uniform(0.0, 2.0))
    x = x + noise * (_rms(x) * 10.0 ** (-snr_db / 20.0))
    x = x * (_TARGET_RMS * 10.0 ** (rng.uniform(*_GAIN_DB) / 20.0) / _rms(x))
    peak = float(np.max(np.abs(x)))
    if peak > _PEAK_LIMIT:
        x *= _PEAK_LIMIT / peak
    return x


def generate_clip(
    clip: DemoClip, sample_rate: int = 16000, clip_seconds: float = 2.0
) -> np.ndarray:
    """float32 mono waveform of exactly round(sample_rate*clip_seconds) samples, peak <= 1.0.

    Deterministic: the same output bit-for-bit for the same inputs, in any
    process and any order of calls, because every random draw comes from
    generators seeded by `clip.seed` (split into independent streams for the
    content, the attack and the channel) and the speaker's voice comes from
    its name. Raises ValueError on an inconsistent clip or bad rate/length.
    """
    if clip.label not in (BONAFIDE, SPOOF):
        raise ValueError(f"clip {clip.clip_id}: label must be {BONAFIDE!r} or {SPOOF!r}")
    if clip.label == BONAFIDE and clip.attack != NO_ATTACK:
        raise ValueError(f"clip {clip.clip_id}: a bona fide clip must have attack {NO_ATTACK!r}")
    if clip.label == SPOOF and clip.attack not in ATTACKS:
        raise ValueError(
            f"clip {clip.clip_id}: unknown attack {clip.attack!r}; expected one of {list(ATTACKS)}"
        )
    if not isinstance(sample_rate, int | np.integer) or sample_rate < 4000:
        raise ValueError(f"sample_rate must be an integer >= 4000, got {sample_rate!r}")
    n = round(sample_rate * clip_seconds)
    if not math.isfinite(clip_seconds) or n < 256:
        raise ValueError(f"clip_seconds={clip_seconds!r} gives fewer than 256 samples")
    sample_rate = int(sample_rate)

    content_ss, attack_ss, channel_ss = np.random.SeedSequence(clip.seed).spawn(3)
    spk = _speaker(clip.speaker)
    utt = _plan_utterance(np.random.default_rng(content_ss), spk, n / sample_rate)
    rng = np.random.default_rng(attack_ss)

    if clip.attack == "A03":
        # Near-perfectly periodic, steady, clean pulse train: little jitter,
        # shimmer and breath, flattened F0 microvariation and prosody, and an
        # abrupt glottal closure (more high-frequency "buzz").
        strength = rng.uniform(0.4, 1.0)
        x = _render(
            utt,
            spk,
            sample_rate,
            n,
            irregularity=0.25 * (1.0 - strength),
            micro=0.3 * (1.0 - strength),
            breath=1.0 - 0.9 * strength,
            prosody=1.0 - 0.4 * strength,
            closure=1.0 - 0.85 * strength,
        )
    elif clip.attack == "A04":
        x = _upsampled(utt, spk, rng, sample_rate, n)
    else:
        x = _render(utt, spk, sample_rate, n)
        if clip.attack == "A01":
            x = _griffin_lim(x, rng, sample_rate)
        elif clip.attack == "A02":
            x = _smoothed_envelope(x, rng, sample_rate)
        elif clip.attack == "A05":
            x = _phase_vocoder(x, rng, sample_rate)

    out = _channel(x, np.random.default_rng(channel_ss), sample_rate).astype(np.float32)
    return np.clip(out, -1.0, 1.0)
