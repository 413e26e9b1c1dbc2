"""The typed, validated view of params.yaml.

Every stage loads its parameters through `load_params` before doing any work,
so a typo in a key or an out-of-range value fails in milliseconds with one line
that names the key, the value and what is allowed - not forty minutes into a
search. The key names are an interface shared with `dvc.yaml`,
`dvc exp run -S key=value` and the MLflow UI: keep them stable.

Defaults: a key params.yaml leaves out takes its dataclass default below, and every such
default is the project params.yaml's value (tests/test_params.py compares them key by key,
so an empty params.yaml means the shipped one). An architecture's search space, when
`tune.search_space` has none for it, is the `SEARCH_SPACE` of its file in `models/`
(`config.architectures`), which the same test holds equal to params.yaml's block.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deepfake_audio.config import architectures, kinds
from deepfake_audio.config.kinds import FeatureKind
from deepfake_audio.core.errors import UserError

SOURCES = ("demo", "folders", "asvspoof", "images")
ON_BAD_FILE = ("skip", "fail")
FEATURE_KINDS = tuple(kinds.KINDS)  # logmel, lfcc, image, waveform, whisper (config/kinds.py)
# features.whisper.model: the names frontends/ctranslate2_weights.py pins (hash-checked:
# tiny.en from the whisper extra, base from the whisper-base extra), or a path to a
# CTranslate2 Whisper model.bin (or its folder) or to OpenAI's own Whisper checkpoint (.pt,
# read without torch).
WHISPER_MODELS = ("tiny.en", "base")
# features.whisper.pooling: how the encoder's frames become one vector for the back end.
WHISPER_POOLING = ("mean_std", "mean")
CROP_POLICIES = ("start", "center")
PAD_POLICIES = ("repeat", "zeros")
TUNERS = ("random", "bayesian", "hyperband")
# xcorpus_eer: the mean EER over the data.corpora of role `select`, every epoch (see CorpusParams).
OBJECTIVES = ("val_eer", "val_accuracy", "xcorpus_eer")
CALIBRATION_METHODS = ("logistic", "isotonic", "none")
THRESHOLD_RULES = ("bayes", "validation_eer")
# Metrics the champion gate may compare: every one is lower-is-better and is written by the
# evaluate stage to reports/metrics.json and to each registry version's tags.
# xcorpus_eer: the mean EER over the data.corpora of role `eval` (held out from everything).
PROMOTE_METRICS = ("test_eer", "test_min_dcf", "test_act_dcf", "test_cllr", "xcorpus_eer")
MONITORS = ("val_loss", "val_accuracy", "val_eer", "xcorpus_eer")
# data.corpora[].role: `train` corpora are split into train/validation/test and pooled;
# `select` corpora are held out of training and scored every epoch for tune.objective (and
# early stopping) when that is xcorpus_eer; `eval` corpora are held out of training and of
# every choice, and only scored by the evaluate stage (xcorpus_eer in reports/metrics.json).
CORPUS_ROLES = ("train", "select", "eval")
CORPUS_SOURCES = ("folders", "asvspoof")
# A corpus name becomes part of metric names (xcorpus.<name>.eer): no dots, no spaces.
CORPUS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
CLASS_WEIGHTS = ("balanced", "none")
# Codecs of the dataset stage's extra training copies (dsp.augment.CODECS).
AUGMENT_CODECS = ("mp3", "ogg")
# data.preprocess (dsp.preprocess): levels, short-clip rules; data.vocoded (dsp.vocoders).
PREPROCESS_LEVELS = ("speech", "clip")
PREPROCESS_SHORT = ("drop", "pad")
VOCODERS = ("world", "griffin_lim", "lpc")
# RawBoost's algorithm numbers (dsp.rawboost.ALGORITHMS): 0 none ... 8 parallel 1,2.
RAWBOOST_ALGOS = tuple(range(9))


class ParamsError(UserError):
    """A bad key or value in params.yaml."""


@dataclass(frozen=True)
class DemoParams:
    train_clips: int = 1200
    validation_clips: int = 160
    test_clips: int = 320


@dataclass(frozen=True)
class SplitParams:
    train: float = 0.7
    validation: float = 0.15
    test: float = 0.15


@dataclass(frozen=True)
class CorpusParams:
    """One entry of `data.corpora`: a named corpus, where it is, and what it is used for.

    `path` is relative to the project root (as `data.path` is) and must lie inside
    `data.path`, the dataset stage's DVC dependency, so that a change to any corpus reruns
    it. `source`, `group_pattern`, `protocols` and `split` mean what the `data.*` keys of the
    same names mean for a single corpus.
    """

    name: str
    path: str
    role: str = "train"
    source: str = "folders"
    group_pattern: str | None = None
    protocols: dict[str, str] = field(default_factory=dict)
    split: SplitParams = field(default_factory=SplitParams)


@dataclass(frozen=True)
class PreprocessParams:
    """data.preprocess: cue removal before features, in the dataset stage and in serving
    alike (dsp/preprocess.py). auto: on for folders and asvspoof, off for the demo corpus."""

    enabled: str | bool = "auto"
    remove_dc: bool = True
    trim_db: float | None = 40.0
    level: str = "speech"
    short: str = "drop"


@dataclass(frozen=True)
class VocodedParams:
    """data.vocoded: fake training clips made from the real ones (dsp/vocoders.py); off
    when `vocoders` is empty."""

    vocoders: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataParams:
    source: str = "demo"
    path: str | None = "data/raw"
    on_bad_file: str = "skip"
    demo: DemoParams = field(default_factory=DemoParams)
    # asvspoof source: one protocol file per split, relative to data.path.
    protocols: dict[str, str] = field(default_factory=dict)
    # Clips written per shard file: bounds memory when reading and writing.
    shard_size: int = 512
    # folders source with a flat {real,fake}/ layout: the share of each split. Files are
    # assigned by group (speaker folder, file-name prefix, or `group_pattern`), never
    # splitting a group, so one speaker's audio never sits in two splits.
    split: SplitParams = field(default_factory=SplitParams)
    # Optional regex on a file's name (no folder): its first group names the speaker/group.
    group_pattern: str | None = None
    # mp3 | ogg | None: give every validation clip one round trip through this codec, so both
    # classes share a codec history where the corpus gave it to one (FoR: most fakes of the
    # training and validation splits were MP3s, no test fake was). Selection on validation
    # then cannot reward a codec shortcut. Test and serving never see it.
    validation_codec: str | None = None
    # Several named corpora (empty: the single corpus of the keys above). See CorpusParams.
    corpora: tuple[CorpusParams, ...] = ()
    preprocess: PreprocessParams = field(default_factory=PreprocessParams)
    vocoded: VocodedParams = field(default_factory=VocodedParams)

    def roles(self) -> set[str]:
        """The roles data.corpora uses (empty for a single corpus)."""
        return {c.role for c in self.corpora}

    def audio_source(self) -> str:
        """The source whose audio the dataset reads: a corpus list's (every corpus is
        recorded speech, folders or asvspoof), else `source`. `data.source` keeps its default
        under a corpus list, where it names nothing; `preprocess: auto` must not read it."""
        return self.corpora[0].source if self.corpora else self.source


@dataclass(frozen=True)
class LfccParams:
    n_coeffs: int = 20  # cepstral coefficients; deltas and double deltas triple the rows
    n_filters: int = 20  # linear-frequency triangular filters
    win_length: int = 320  # 20 ms at 16 kHz
    hop_length: int = 160  # 10 ms


@dataclass(frozen=True)
class WhisperParams:
    model: str = "tiny.en"  # a name in WHISPER_MODELS, or a path to a model.bin or .pt
    layers: int = 1  # encoder blocks kept: the early ones carry the artefacts (issue 20)
    pooling: str = "mean_std"  # each dimension's mean and std over the frames, or the mean


@dataclass(frozen=True)
class FeaturesParams:
    kind: str = "lfcc"
    sample_rate: int = 16000
    clip_seconds: float = 2.0
    # Training clips are stored up to this long when augmentation is on, so that a random
    # window of clip_seconds can be cut from them each epoch (validation and test: clip_seconds).
    max_seconds: float = 4.0
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float | None = None
    crop: str = "center"
    pad: str = "repeat"
    # Processes used for decoding and feature extraction; 0 means every core.
    workers: int = 0
    # kind: lfcc - the ASVspoof baseline front-end (its own frame sizes: 20 ms / 10 ms).
    lfcc: LfccParams = field(default_factory=LfccParams)
    # kind: image - the notebook's spectrogram pictures, resized to [height, width] RGB.
    image_size: tuple[int, int] = (224, 224)
    # kind: whisper - Whisper's frozen encoder inside the model (deepfake_audio.frontends).
    whisper: WhisperParams = field(default_factory=WhisperParams)

    @property
    def n_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def max_samples(self) -> int:
        """Samples of a stored training wave (at least one model window)."""
        return max(self.n_samples, int(round(self.sample_rate * self.max_seconds)))

    @property
    def feature_kind(self) -> FeatureKind:
        """What `kind` names: its shape, storage and normalisation (config/kinds.py)."""
        return kinds.by_name(self.kind)

    @property
    def n_frames(self) -> int:
        return 1 + self.n_samples // self.feature_kind.hop(self)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one clip's features as stored in the shards."""
        return self.feature_kind.feature_shape(self)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The model's input: features with a channel axis ((n_samples, 1) for waveforms)."""
        shape = self.feature_shape
        return shape if len(shape) == 3 else (*shape, 1)


@dataclass(frozen=True)
class ModelParams:
    architecture: str = "tdnn"


@dataclass(frozen=True)
class IntRange:
    min: int
    max: int
    step: int = 1


@dataclass(frozen=True)
class FloatRange:
    min: float
    max: float
    sampling: str = "linear"


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]


Hyperparameter = IntRange | FloatRange | Choice


@dataclass(frozen=True)
class EarlyStoppingParams:
    monitor: str = "val_eer"  # when absent from params.yaml: tune.objective
    patience: int = 5
    restore_best_weights: bool = True


@dataclass(frozen=True)
class ReduceLRParams:
    monitor: str = "val_eer"  # when absent from params.yaml: tune.objective
    factor: float = 0.2
    patience: int = 3
    min_delta: float = 0.005


@dataclass(frozen=True)
class TuneParams:
    tuner: str = "random"
    objective: str = "val_eer"
    max_trials: int = 3
    executions_per_trial: int = 1
    epochs: int = 4
    batch_size: int = 32
    workers: int = 1
    search_space: dict[str, Hyperparameter] = field(default_factory=dict)
    early_stopping: EarlyStoppingParams = field(default_factory=EarlyStoppingParams)
    reduce_lr: ReduceLRParams = field(default_factory=ReduceLRParams)


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 10
    # Loss weights from the training split's class counts (balanced: each class weighs half
    # of the loss) or none. ASVspoof training data is 1 bona fide to 9 spoofed.
    class_weight: str = "balanced"


@dataclass(frozen=True)
class AugmentParams:
    """Training-time augmentation (tune and train; never validation, test or serving).

    Waveform steps run on the stored training waves, then features are computed on the fly;
    codec copies are made once, by the dataset stage, as extra training clips.
    """

    enabled: bool = False
    random_crop: bool = True  # a random clip_seconds window of the stored clip, every epoch
    gain_db: tuple[float, float] = (-6.0, 6.0)  # random gain after level matching
    noise_p: float = 0.5  # share of training clips given additive white noise
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    rawboost_p: float = 0.0  # share of training clips given RawBoost
    rawboost_algo: int = 5  # the reference numbering (dsp.rawboost.ALGORITHMS)
    codecs: tuple[str, ...] = ("mp3", "ogg")  # mp3 | ogg: round trips made by the dataset stage
    codec_copies: int = 1  # extra copies of each training clip, one codec each
    spec_time_masks: int = 2  # SpecAugment (spectral kinds only)
    spec_time_width: int = 20  # frames
    spec_freq_masks: int = 2
    spec_freq_width: int = 8  # mel bins / coefficients

    def applies_to(self, kind: FeatureKind) -> bool:
        """Whether augmentation is on for a feature kind (pictures have no audio to augment)."""
        return self.enabled and kind.audio

    def flat(self) -> dict[str, Any]:
        """`augment.<key>` -> value, the names logged to MLflow."""
        return {f"augment.{k}": v for k, v in _plain(self).items()}


@dataclass(frozen=True)
class MlflowParams:
    experiment_name: str = "deepfake-audio"


@dataclass(frozen=True)
class CalibrationParams:
    """How the served model turns its logit into a fake probability and a label.

    The defaults are the ASVspoof 5 countermeasure operating point (Pspoof 0.05, Cmiss 1,
    Cfa 10), so the served labels are the decisions actDCF scores.
    """

    method: str = "logistic"  # logistic | isotonic | none: score -> LLR map fitted on validation
    target_prior: float = 0.05  # P(spoof) the served fake_probability assumes
    threshold: str = "bayes"  # bayes (from prior and costs) | validation_eer (the old rule)
    c_miss: float = 1.0  # cost of calling a bona fide clip fake
    c_fa: float = 10.0  # cost of letting a fake through as real


@dataclass(frozen=True)
class RegistryParams:
    model_name: str = "deepfake-audio-cnn"
    promote_min_improvement: float = 0.005
    promote_metric: str = "test_eer"


@dataclass(frozen=True)
class BaselineParams:
    """The LFCC-GMM baseline stage (ASVspoof 2019 used 512 components)."""

    components: int = 64  # Gaussians per class model (bona fide, spoof), diagonal covariances
    max_frames: int = 40_000  # training frames per class, subsampled with `seed`


@dataclass(frozen=True)
class Params:
    seed: int = 42
    data: DataParams = field(default_factory=DataParams)
    features: FeaturesParams = field(default_factory=FeaturesParams)
    model: ModelParams = field(default_factory=ModelParams)
    tune: TuneParams = field(default_factory=TuneParams)
    train: TrainParams = field(default_factory=TrainParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    mlflow: MlflowParams = field(default_factory=MlflowParams)
    registry: RegistryParams = field(default_factory=RegistryParams)
    baseline: BaselineParams = field(default_factory=BaselineParams)
    calibration: CalibrationParams = field(default_factory=CalibrationParams)

    def section(self, name: str) -> dict[str, Any]:
        """A section as plain data, e.g. for logging as MLflow params."""
        return _plain(getattr(self, name))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


# --- validation -----------------------------------------------------------


def _fail(key: str, message: str) -> ParamsError:
    return ParamsError(f"{key}: {message}")


def _check_keys(raw: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(key or "params.yaml", f"expected a mapping, got {raw!r}")
    for name in raw:
        if name not in allowed:
            where = f"{key}.{name}" if key else str(name)
            raise _fail(where, f"unknown key (allowed: {', '.join(allowed)})")
    return raw


def _int(raw: dict, key: str, name: str, default: int, lo: int | None = None) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{key}.{name}" if key else name, f"{value!r} is not an integer")
    if lo is not None and value < lo:
        raise _fail(f"{key}.{name}" if key else name, f"{value} is below the minimum {lo}")
    return value


def _float(
    raw: dict,
    key: str,
    name: str,
    default: float | None,
    lo: float | None = None,
    hi: float | None = None,
    optional: bool = False,
) -> float | None:
    value = raw.get(name, default)
    full = f"{key}.{name}"
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(full, f"{value!r} is not a finite number")
    if lo is not None and value < lo:
        raise _fail(full, f"{value} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise _fail(full, f"{value} is above the maximum {hi}")
    return float(value)


def _choice(raw: dict, key: str, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = raw.get(name, default)
    if value not in allowed:
        raise _fail(f"{key}.{name}", f"{value!r} is not allowed (allowed: {', '.join(allowed)})")
    return value


def _optional_choice(raw: dict, key: str, name: str, allowed: tuple[str, ...]) -> str | None:
    """One of ``allowed``, or None (absent or null) for "off"."""
    value = raw.get(name)
    if value is None:
        return None
    return _choice(raw, key, name, "", allowed)


def _str(raw: dict, key: str, name: str, default: str | None, optional: bool = False) -> Any:
    value = raw.get(name, default)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{key}.{name}", f"{value!r} is not a non-empty string")
    return value


def _bool(raw: dict, key: str, name: str, default: bool) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise _fail(f"{key}.{name}", f"{value!r} is not true or false")
    return value


def _either(names: Any) -> str:
    """'a', 'a or b', 'a, b or c'."""
    names = list(names)
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _hyperparameter(raw: Any, key: str) -> Hyperparameter:
    if isinstance(raw, list):
        if not raw or len(set(map(repr, raw))) != len(raw):
            raise _fail(key, "a choice needs a non-empty list of distinct values")
        return Choice(tuple(raw))
    if isinstance(raw, dict):
        raw = _check_keys(raw, key, ("min", "max", "step", "sampling"))
        if "min" not in raw or "max" not in raw:
            raise _fail(key, "a range needs both min and max")
        lo, hi = raw["min"], raw["max"]
        is_int = all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi))
        if is_int and "sampling" not in raw:
            step = _int(raw, key, "step", 1, lo=1)
            if lo > hi:
                raise _fail(key, f"min {lo} is above max {hi}")
            return IntRange(lo, hi, step)
        if "step" in raw:
            raise _fail(f"{key}.step", "step is only allowed for integer ranges")
        lo_f = _float(raw, key, "min", None)
        hi_f = _float(raw, key, "max", None)
        sampling = _choice(raw, key, "sampling", "linear", ("linear", "log"))
        if lo_f >= hi_f:
            raise _fail(key, f"min {lo_f} is not below max {hi_f}")
        if sampling == "log" and lo_f <= 0:
            raise _fail(f"{key}.min", "log sampling needs a positive min")
        return FloatRange(lo_f, hi_f, sampling)
    raise _fail(key, f"{raw!r} is neither a list of choices nor a {{min, max}} range")


def _one_search_space(raw: Any, key: str, architecture: str) -> dict[str, Hyperparameter]:
    names = architectures.catalogue()[architecture].hyperparameters
    raw = _check_keys(raw, key, names)
    missing = [name for name in names if name not in raw]
    if missing:
        raise _fail(key, f"missing {', '.join(missing)} ({architecture} reads them)")
    space = {name: _hyperparameter(raw[name], f"{key}.{name}") for name in names}
    optimizers = space["optimizer"]
    if not isinstance(optimizers, Choice) or not set(optimizers.values) <= {"adam", "rmsprop"}:
        raise _fail(f"{key}.optimizer", "must be a list drawn from: adam, rmsprop")
    if not isinstance(space["learning_rate"], FloatRange):
        raise _fail(f"{key}.learning_rate", "must be a {min, max, sampling} float range")
    integers = ("filters_1", "filters_2", "kernel_size_1", "kernel_size_2", "dense_units")
    for name in (n for n in integers if n in space):
        hp = space[name]
        values = hp.values if isinstance(hp, Choice) else (hp.min, hp.max)
        if isinstance(hp, FloatRange) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values
        ):
            raise _fail(f"{key}.{name}", "must be positive integers (a range or a list)")
    if "dropout" in space:
        hp = space["dropout"]
        values = hp.values if isinstance(hp, Choice) else (hp.min, hp.max)
        if isinstance(hp, IntRange) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1 for v in values
        ):
            raise _fail(f"{key}.dropout", "must be rates in [0, 1) (a float range or a list)")
    return space


def _search_space(raw: Any, architecture: str) -> dict[str, Hyperparameter]:
    """The search space of `architecture`, from `tune.search_space`.

    params.yaml holds one space per architecture (`tune.search_space.<architecture>`), so
    switching `model.architecture` with `dvc exp run -S` searches that architecture's own
    knobs; every space given is checked, not only the one in use. A flat space (the
    format before there were several architectures) is read as the current one's.
    """
    key = "tune.search_space"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail(key, f"expected a mapping, got {type(raw).__name__}")
    catalogue = architectures.catalogue()
    if raw and not set(raw) & set(catalogue):
        return _one_search_space(raw, key, architecture)
    raw = _check_keys(raw, key, tuple(catalogue))
    spaces = {name: _one_search_space(space, f"{key}.{name}", name) for name, space in raw.items()}
    if architecture in spaces:
        return spaces[architecture]
    # The architecture's own default (SEARCH_SPACE in models/<name>.py).
    return _one_search_space(catalogue[architecture].search_space, key, architecture)


def _split(raw: Any, key: str = "data.split") -> SplitParams:
    raw = _check_keys(raw, key, _names(SplitParams))
    default = SplitParams()
    shares = {
        name: _float(raw, key, name, getattr(default, name), lo=0.0, hi=1.0)
        for name in _names(SplitParams)
    }
    if abs(sum(shares.values()) - 1.0) > 1e-6:
        raise _fail(key, f"train + validation + test is {sum(shares.values()):g}, not 1")
    empty = [name for name, share in shares.items() if share <= 0.0]
    if empty:
        raise _fail(f"{key}.{empty[0]}", "must be above 0: every split needs clips")
    return SplitParams(**shares)


def _pattern(raw: dict, key: str, name: str) -> str | None:
    value = _str(raw, key, name, None, optional=True)
    if value is None:
        return None
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise _fail(f"{key}.{name}", f"{value!r} is not a valid regex ({exc})") from None
    if compiled.groups < 1:
        raise _fail(f"{key}.{name}", f"{value!r} needs a capture group (the speaker/group)")
    return value


def _needs_role(data: DataParams, key: str, value: str, role: str) -> None:
    """xcorpus_eer is measured on held-out corpora: a setting that uses it needs one."""
    if value == "xcorpus_eer" and role not in data.roles():
        raise _fail(key, f"xcorpus_eer needs a data.corpora entry with role: {role} (none has)")


def _corpora(raw: Any, data_path: Any, split: Any) -> tuple[CorpusParams, ...]:
    """`data.corpora`: a list of {name, path, role, source, group_pattern, protocols, split}.

    Checked here, lexically, before any work: a missing or duplicate name, an unknown role
    or source, a path outside `data.path` (the DVC dependency that reruns the dataset stage
    when a corpus changes). Whether each path holds a corpus is the dataset stage's check.
    """
    key = "data.corpora"
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise _fail(key, f"expected a list of corpora ({{name, path, role, ...}}), got {raw!r}")
    corpora: list[CorpusParams] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"{key}[{index}]"
        entry = _check_keys(entry, where, _names(CorpusParams))
        if not entry:
            raise _fail(where, "is empty (a corpus needs at least name and path)")
        name = entry.get("name")
        if not isinstance(name, str) or not CORPUS_NAME.match(name):
            raise _fail(
                f"{where}.name",
                f"{name!r} is not a corpus name (letters, digits, _ and -; it names metrics)",
            )
        if name in seen:
            raise _fail(f"{where}.name", f"{name!r} is a duplicate (each corpus once)")
        seen.add(name)
        if "path" not in entry:
            raise _fail(f"{where}.path", f"is required (corpus {name!r})")
        path = _str(entry, where, "path", None)
        if data_path is None or not _lexically_inside(path, str(data_path)):
            raise _fail(
                f"{where}.path",
                f"{path!r} (corpus {name!r}) is not inside data.path {data_path!r}, the dataset "
                "stage's DVC dependency: set data.path to a folder that holds every corpus",
            )
        corpus_split = entry.get("split", split)
        corpora.append(
            CorpusParams(
                name=name,
                path=path,
                role=_choice(entry, where, "role", "train", CORPUS_ROLES),
                source=_choice(entry, where, "source", "folders", CORPUS_SOURCES),
                group_pattern=_pattern(entry, where, "group_pattern"),
                protocols=_protocols(entry.get("protocols"), f"{where}.protocols"),
                split=_split(corpus_split, f"{where}.split" if "split" in entry else "data.split"),
            )
        )
    if corpora and not any(c.role == "train" for c in corpora):
        raise _fail(key, "no entry has role: train (one corpus at least is trained on)")
    return tuple(corpora)


def _lexically_inside(path: str, root: str) -> bool:
    """Whether `path` is `root` or below it, both relative to the project root (no disk)."""
    import os.path

    a, b = os.path.abspath(path), os.path.abspath(root)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def _lfcc(raw: Any, n_fft: int) -> LfccParams:
    key = "features.lfcc"
    raw = _check_keys(raw, key, _names(LfccParams))
    d = LfccParams()
    lfcc = LfccParams(
        n_coeffs=_int(raw, key, "n_coeffs", d.n_coeffs, lo=2),
        n_filters=_int(raw, key, "n_filters", d.n_filters, lo=2),
        win_length=_int(raw, key, "win_length", d.win_length, lo=16),
        hop_length=_int(raw, key, "hop_length", d.hop_length, lo=1),
    )
    if lfcc.n_coeffs > lfcc.n_filters:
        raise _fail(f"{key}.n_coeffs", f"{lfcc.n_coeffs} exceeds n_filters {lfcc.n_filters}")
    if lfcc.win_length > n_fft:
        raise _fail(f"{key}.win_length", f"{lfcc.win_length} exceeds features.n_fft {n_fft}")
    return lfcc


def _whisper(raw: Any) -> WhisperParams:
    key = "features.whisper"
    raw = _check_keys(raw, key, _names(WhisperParams))
    d = WhisperParams()
    model = _str(raw, key, "model", d.model)
    if model not in WHISPER_MODELS and "/" not in model and not model.endswith((".bin", ".pt")):
        raise _fail(
            f"{key}.model",
            f"{model!r} is neither a pinned model ({', '.join(WHISPER_MODELS)}) nor a path to a "
            "CTranslate2 Whisper model.bin or OpenAI Whisper .pt checkpoint",
        )
    return WhisperParams(
        model=model,
        layers=_int(raw, key, "layers", d.layers, lo=1),
        pooling=_choice(raw, key, "pooling", d.pooling, WHISPER_POOLING),
    )


def _image_size(raw: Any) -> tuple[int, int]:
    key = "features.image_size"
    if (
        not isinstance(raw, list | tuple)
        or len(raw) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in raw)
    ):
        raise _fail(key, f"{raw!r} is not [height, width] in pixels (8 to 4096)")
    return (raw[0], raw[1])


def _protocols(raw: Any, key: str = "data.protocols") -> dict[str, str]:
    raw = _check_keys(raw, key, ("train", "validation", "test"))
    return {split: _str(raw, key, split, None) for split in raw}


def _calibration(raw: Any) -> CalibrationParams:
    """The calibration section; a prior of 0 or 1 or a cost of 0 has no Bayes decision."""
    key = "calibration"
    raw = _check_keys(raw, key, _names(CalibrationParams))
    d = CalibrationParams()
    prior = _float(raw, key, "target_prior", d.target_prior)
    if not 0.0 < prior < 1.0:
        raise _fail(f"{key}.target_prior", f"{prior} is not strictly between 0 and 1")
    costs = {name: _float(raw, key, name, getattr(d, name)) for name in ("c_miss", "c_fa")}
    for name, value in costs.items():
        if value <= 0.0:
            raise _fail(f"{key}.{name}", f"{value} is not above 0 (a cost must be positive)")
    return CalibrationParams(
        method=_choice(raw, key, "method", d.method, CALIBRATION_METHODS),
        target_prior=prior,
        threshold=_choice(raw, key, "threshold", d.threshold, THRESHOLD_RULES),
        **costs,
    )


def _pair(raw: dict, key: str, name: str, default: tuple[float, float], lo: float, hi: float):
    """A [min, max] list of numbers within [lo, hi], min <= max."""
    value = raw.get(name, list(default))
    full = f"{key}.{name}"
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    ):
        raise _fail(full, f"{value!r} is not a [min, max] pair of numbers")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise _fail(full, f"min {low:g} is above max {high:g}")
    if low < lo or high > hi:
        raise _fail(full, f"[{low:g}, {high:g}] is outside [{lo:g}, {hi:g}]")
    return (low, high)


def _augment(raw: Any) -> AugmentParams:
    key = "augment"
    a = _check_keys(raw, key, _names(AugmentParams))
    d = AugmentParams()
    codecs = a.get("codecs", list(d.codecs))
    if codecs is None:
        codecs = []
    if not isinstance(codecs, list | tuple) or any(c not in AUGMENT_CODECS for c in codecs):
        raise _fail(
            f"{key}.codecs", f"{codecs!r} is not a list drawn from: {', '.join(AUGMENT_CODECS)}"
        )
    if len(set(codecs)) != len(codecs):
        raise _fail(f"{key}.codecs", f"{codecs!r} names a codec twice")
    algo = a.get("rawboost_algo", d.rawboost_algo)
    if isinstance(algo, bool) or algo not in RAWBOOST_ALGOS:
        raise _fail(f"{key}.rawboost_algo", f"{algo!r} is not one of 0-8 (dsp/rawboost.py)")
    augment = AugmentParams(
        enabled=_bool(a, key, "enabled", d.enabled),
        random_crop=_bool(a, key, "random_crop", d.random_crop),
        gain_db=_pair(a, key, "gain_db", d.gain_db, -40.0, 40.0),
        noise_p=_float(a, key, "noise_p", d.noise_p, lo=0.0, hi=1.0),
        noise_snr_db=_pair(a, key, "noise_snr_db", d.noise_snr_db, -20.0, 100.0),
        rawboost_p=_float(a, key, "rawboost_p", d.rawboost_p, lo=0.0, hi=1.0),
        rawboost_algo=int(algo),
        codecs=tuple(codecs),
        codec_copies=_int(a, key, "codec_copies", d.codec_copies, lo=0),
        spec_time_masks=_int(a, key, "spec_time_masks", d.spec_time_masks, lo=0),
        spec_time_width=_int(a, key, "spec_time_width", d.spec_time_width, lo=0),
        spec_freq_masks=_int(a, key, "spec_freq_masks", d.spec_freq_masks, lo=0),
        spec_freq_width=_int(a, key, "spec_freq_width", d.spec_freq_width, lo=0),
    )
    if augment.codec_copies > 8:
        raise _fail(f"{key}.codec_copies", f"{augment.codec_copies} is above the maximum 8")
    if augment.codec_copies and not augment.codecs:
        raise _fail(f"{key}.codec_copies", f"{augment.codec_copies} copies need augment.codecs")
    return augment


def _preprocess(raw: Any) -> PreprocessParams:
    key = "data.preprocess"
    p = _check_keys(raw, key, _names(PreprocessParams))
    d = PreprocessParams()
    enabled = p.get("enabled", d.enabled)
    if not (isinstance(enabled, bool) or enabled == "auto"):
        raise _fail(f"{key}.enabled", f"{enabled!r} is not auto, true or false")
    return PreprocessParams(
        enabled=enabled,
        remove_dc=_bool(p, key, "remove_dc", d.remove_dc),
        trim_db=_float(p, key, "trim_db", d.trim_db, lo=1.0, hi=120.0, optional=True),
        level=_choice(p, key, "level", d.level, PREPROCESS_LEVELS),
        short=_choice(p, key, "short", d.short, PREPROCESS_SHORT),
    )


def _vocoded(raw: Any) -> VocodedParams:
    key = "data.vocoded"
    v = _check_keys(raw, key, _names(VocodedParams))
    names = v.get("vocoders", [])
    if names is None:
        names = []
    if not isinstance(names, list | tuple) or any(n not in VOCODERS for n in names):
        raise _fail(f"{key}.vocoders", f"{names!r} is not a list drawn from: {', '.join(VOCODERS)}")
    if len(set(names)) != len(names):
        raise _fail(f"{key}.vocoders", f"{names!r} names a vocoder twice")
    return VocodedParams(vocoders=tuple(names))


def parse_params(raw: Any) -> Params:
    """Validate a params mapping (as read from YAML) into `Params`."""
    raw = _check_keys(raw, "", _names(Params))

    d = _check_keys(raw.get("data"), "data", _names(DataParams))
    demo_raw = _check_keys(d.get("demo"), "data.demo", _names(DemoParams))
    demo = DemoParams(
        **{
            name: _int(demo_raw, "data.demo", name, getattr(DemoParams(), name), lo=4)
            for name in _names(DemoParams)
        }
    )
    dd = DataParams()
    data = DataParams(
        source=_choice(d, "data", "source", dd.source, SOURCES),
        path=_str(d, "data", "path", dd.path, optional=True),
        on_bad_file=_choice(d, "data", "on_bad_file", dd.on_bad_file, ON_BAD_FILE),
        demo=demo,
        protocols=_protocols(d.get("protocols")),
        shard_size=_int(d, "data", "shard_size", dd.shard_size, lo=1),
        split=_split(d.get("split")),
        group_pattern=_pattern(d, "data", "group_pattern"),
        validation_codec=_optional_choice(d, "data", "validation_codec", AUGMENT_CODECS),
        corpora=_corpora(d.get("corpora"), d.get("path", dd.path), d.get("split")),
        preprocess=_preprocess(d.get("preprocess")),
        vocoded=_vocoded(d.get("vocoded")),
    )
    if data.source != "demo" and data.path is None:
        raise _fail("data.path", f"is required when data.source is {data.source!r}")

    f = _check_keys(raw.get("features"), "features", _names(FeaturesParams))
    fd = FeaturesParams()
    sample_rate = _int(f, "features", "sample_rate", fd.sample_rate, lo=4000)
    features = FeaturesParams(
        kind=_choice(f, "features", "kind", fd.kind, FEATURE_KINDS),
        sample_rate=sample_rate,
        clip_seconds=_float(f, "features", "clip_seconds", fd.clip_seconds, lo=0.1, hi=60.0),
        max_seconds=_float(f, "features", "max_seconds", fd.max_seconds, lo=0.1, hi=60.0),
        n_fft=_int(f, "features", "n_fft", fd.n_fft, lo=16),
        win_length=_int(f, "features", "win_length", fd.win_length, lo=16),
        hop_length=_int(f, "features", "hop_length", fd.hop_length, lo=1),
        n_mels=_int(f, "features", "n_mels", fd.n_mels, lo=8),
        fmin=_float(f, "features", "fmin", fd.fmin, lo=0.0),
        fmax=_float(f, "features", "fmax", fd.fmax, lo=1.0, hi=sample_rate / 2, optional=True),
        crop=_choice(f, "features", "crop", fd.crop, CROP_POLICIES),
        pad=_choice(f, "features", "pad", fd.pad, PAD_POLICIES),
        workers=_int(f, "features", "workers", fd.workers, lo=0),
        lfcc=_lfcc(f.get("lfcc"), n_fft=_int(f, "features", "n_fft", fd.n_fft, lo=16)),
        image_size=_image_size(f.get("image_size", list(fd.image_size))),
        whisper=_whisper(f.get("whisper")),
    )
    if features.feature_kind.frontend == "whisper":
        if sample_rate != 16000:
            raise _fail("features.sample_rate", f"{sample_rate}: Whisper's encoder reads 16000 Hz")
        if features.clip_seconds > 30.0:
            raise _fail(
                "features.clip_seconds",
                f"{features.clip_seconds:g}: Whisper's encoder reads at most 30 s a window",
            )
    audio = features.feature_kind.audio
    if (data.source == "images") == audio:
        pictures = _either(k.name for k in kinds.KINDS.values() if not k.audio)
        sounds = _either(k.name for k in kinds.KINDS.values() if k.audio)
        raise _fail(
            "features.kind",
            f"{features.kind!r} does not fit data.source {data.source!r} "
            f"(images need features.kind: {pictures}, audio needs {sounds})",
        )
    if data.corpora and not audio:
        raise _fail("data.corpora", f"needs audio (features.kind {features.kind!r} is pictures)")
    if data.validation_codec is not None and not audio:
        raise _fail("data.validation_codec", "needs audio (features.kind: image has no audio)")
    if data.vocoded.vocoders and not audio:
        raise _fail("data.vocoded.vocoders", "needs audio (features.kind: image has no audio)")
    if features.max_seconds < features.clip_seconds:
        raise _fail(
            "features.max_seconds",
            f"{features.max_seconds:g} is below features.clip_seconds {features.clip_seconds:g} "
            "(stored training clips must hold at least one window)",
        )
    if features.win_length > features.n_fft:
        raise _fail("features.win_length", f"{features.win_length} exceeds n_fft {features.n_fft}")
    top = features.fmax if features.fmax is not None else sample_rate / 2
    if features.fmin >= top:
        raise _fail("features.fmin", f"{features.fmin} is not below fmax {top}")
    if features.n_frames < 8:
        raise _fail("features.clip_seconds", "gives fewer than 8 frames; use a longer clip")

    m = _check_keys(raw.get("model"), "model", _names(ModelParams))
    catalogue = architectures.catalogue()
    model = ModelParams(
        architecture=_choice(
            m, "model", "architecture", ModelParams().architecture, tuple(catalogue)
        )
    )
    inputs = catalogue[model.architecture].inputs
    if features.kind not in inputs:
        raise _fail(
            "model.architecture",
            f"{model.architecture!r} does not take features.kind {features.kind!r} "
            f"(it takes {', '.join(inputs)})",
        )

    t = _check_keys(raw.get("tune"), "tune", _names(TuneParams))
    td = TuneParams()
    esd, rld = td.early_stopping, td.reduce_lr
    es = _check_keys(t.get("early_stopping"), "tune.early_stopping", _names(EarlyStoppingParams))
    rl = _check_keys(t.get("reduce_lr"), "tune.reduce_lr", _names(ReduceLRParams))
    objective = _choice(t, "tune", "objective", td.objective, OBJECTIVES)
    # Early stopping, the learning-rate schedule and the kept epoch follow the objective
    # unless told otherwise: the epoch kept is the one the search is judged on.
    tune = TuneParams(
        tuner=_choice(t, "tune", "tuner", td.tuner, TUNERS),
        objective=objective,
        max_trials=_int(t, "tune", "max_trials", td.max_trials, lo=1),
        executions_per_trial=_int(t, "tune", "executions_per_trial", td.executions_per_trial, lo=1),
        epochs=_int(t, "tune", "epochs", td.epochs, lo=1),
        batch_size=_int(t, "tune", "batch_size", td.batch_size, lo=1),
        workers=_int(t, "tune", "workers", td.workers, lo=1),
        search_space=_search_space(t.get("search_space"), model.architecture),
        early_stopping=EarlyStoppingParams(
            monitor=_choice(es, "tune.early_stopping", "monitor", objective, MONITORS),
            patience=_int(es, "tune.early_stopping", "patience", esd.patience, lo=0),
            restore_best_weights=_bool(
                es, "tune.early_stopping", "restore_best_weights", esd.restore_best_weights
            ),
        ),
        reduce_lr=ReduceLRParams(
            monitor=_choice(rl, "tune.reduce_lr", "monitor", objective, MONITORS),
            factor=_float(rl, "tune.reduce_lr", "factor", rld.factor, lo=1e-6, hi=0.999999),
            patience=_int(rl, "tune.reduce_lr", "patience", rld.patience, lo=0),
            min_delta=_float(rl, "tune.reduce_lr", "min_delta", rld.min_delta, lo=0.0),
        ),
    )

    _needs_role(data, "tune.objective", tune.objective, "select")
    _needs_role(data, "tune.early_stopping.monitor", tune.early_stopping.monitor, "select")
    _needs_role(data, "tune.reduce_lr.monitor", tune.reduce_lr.monitor, "select")

    tr = _check_keys(raw.get("train"), "train", _names(TrainParams))
    trd = TrainParams()
    train = TrainParams(
        epochs=_int(tr, "train", "epochs", trd.epochs, lo=1),
        class_weight=_choice(tr, "train", "class_weight", trd.class_weight, CLASS_WEIGHTS),
    )
    augment = _augment(raw.get("augment"))

    ml = _check_keys(raw.get("mlflow"), "mlflow", _names(MlflowParams))
    mlflow = MlflowParams(
        experiment_name=_str(ml, "mlflow", "experiment_name", MlflowParams().experiment_name)
    )

    rg = _check_keys(raw.get("registry"), "registry", _names(RegistryParams))
    rgd = RegistryParams()
    registry = RegistryParams(
        model_name=_str(rg, "registry", "model_name", rgd.model_name),
        promote_min_improvement=_float(
            rg, "registry", "promote_min_improvement", rgd.promote_min_improvement, lo=0.0, hi=1.0
        ),
        promote_metric=_choice(
            rg, "registry", "promote_metric", rgd.promote_metric, PROMOTE_METRICS
        ),
    )

    _needs_role(data, "registry.promote_metric", registry.promote_metric, "eval")

    bl = _check_keys(raw.get("baseline"), "baseline", _names(BaselineParams))
    baseline = BaselineParams(
        components=_int(bl, "baseline", "components", BaselineParams().components, lo=1),
        max_frames=_int(bl, "baseline", "max_frames", BaselineParams().max_frames, lo=1),
    )
    if baseline.components > 4096:
        raise _fail("baseline.components", f"{baseline.components} is above the maximum 4096")
    if baseline.max_frames < baseline.components:
        raise _fail(
            "baseline.max_frames",
            f"{baseline.max_frames} is below baseline.components {baseline.components} "
            "(a mixture needs at least one frame per component)",
        )

    return Params(
        seed=_int(raw, "", "seed", Params().seed, lo=0),
        calibration=_calibration(raw.get("calibration")),
        data=data,
        features=features,
        model=model,
        tune=tune,
        train=train,
        augment=augment,
        mlflow=mlflow,
        registry=registry,
        baseline=baseline,
    )


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; every error names the file and the key."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the project root)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ParamsError(f"{path}: not valid YAML{line}") from None
    try:
        return parse_params(raw)
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def features_from_dict(raw: dict[str, Any]) -> FeaturesParams:
    """The `FeaturesParams` a dataset was built with, from its stats.json features section.

    Unknown keys (a newer writer) are ignored and missing ones take their defaults (an older
    writer): what was stored describes the data, today's params.yaml may not.
    """
    known = set(_names(FeaturesParams))
    values = {k: v for k, v in raw.items() if k in known}
    if isinstance(values.get("lfcc"), dict):
        lfcc_known = set(_names(LfccParams))
        values["lfcc"] = LfccParams(**{k: v for k, v in values["lfcc"].items() if k in lfcc_known})
    if "image_size" in values:
        values["image_size"] = tuple(values["image_size"])
    if isinstance(values.get("whisper"), dict):
        known_whisper = set(_names(WhisperParams))
        values["whisper"] = WhisperParams(
            **{k: v for k, v in values["whisper"].items() if k in known_whisper}
        )
    return FeaturesParams(**values)
