"""`python -m benchmarks probe`: a layer-wise linear probe of the front ends under
leave-one-corpus-out (SUPERB-style), to choose the Whisper front end's settings cheaply.

The pipeline's own leave-one-corpus-out (benchmarks/loco.py) trains a detector per fold and
seed: about 20 minutes per seed and detector on a 2-core machine, too slow to compare front-end
settings. Here every clip is featurised once (cached), pooled to one vector, and each setting
is scored by a standardised logistic regression fitted on all clips of every corpus but one and
scored on that one, rotating: the same protocol, no seeds, no training run, deterministic.
Settings are chosen here on the shared corpora's leave-one-corpus-out only, never on a test split.

Each clip goes the pipeline's way: listed by `sources.corpora.list_clips` from params.yaml
with the corpus list's `data.corpora`, decoded, conditioned and preprocessed
(`stages.dataset.file_features`: `dsp.preprocess` with the params' defaults and ``short:
pad``, as the folder corpora get), and cut to `features.clip_seconds` by `dsp.audio.fix_length`
(`features.crop` center, `features.pad` repeat), as validation, test and serving cut it.

Settings (rows of the table):

    whisper-<model>-L<d>-mean_std | -mean   Whisper's encoder (frontends/whisper.py, frozen)
                                            after block d, frames pooled by mean and std or
                                            mean only; every depth from one pass
    lfcc-mean_std                           LFCC + deltas (features.lfcc), per coefficient
    logmel-mean_std                         log-mel (features.n_mels bands)
    mfcc-mean_std                           the first 20 DCT-II coefficients of that log-mel

With ``--vocoded world,griffin_lim,lpc`` every setting gets a second row, ``+vocoded``: the
real clips of the training corpora of each fold are also vocoded (`dsp.vocoders`, the
pipeline's `data.vocoded`) and added as fakes to that fold's training set (issue 19, item 5).

Features are cached under `--cache` (default reports/.frontend_probe_cache, not tracked), one
file per clip and feature family, keyed by the file's sha256, the preprocessing, the cut, the
weights file and the vocoder, so a rerun costs only the regressions. Writes `--out` (default
reports/frontend_probe.json) and the Markdown table beside it, atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPORA = ROOT / "benchmarks" / "loco_shared.yaml"
DEFAULT_CACHE = Path("reports/.frontend_probe_cache")
C = 1.0  # the logistic regression's inverse regularisation, fixed (not tuned on anything)
MAX_ITER = 10000
POOLINGS = ("mean_std", "mean")
BASELINES = ("lfcc", "logmel", "mfcc")
N_MFCC = 20
BATCH = 16  # clips per Whisper forward pass


class ProbeError(Exception):
    """Bad input: printed as one line, exit status 2."""


@dataclass(frozen=True)
class Item:
    """One clip of the probe: a corpus's clip, or a vocoded copy of a real one (a fake)."""

    corpus: str
    path: Path
    target: int  # 1 bona fide, 0 spoof
    vocoder: str = ""  # "" for the clip itself


def load_params(corpora_file: Path, params_file: Path) -> Any:
    """params.yaml with `data.corpora` (and `data.path`) from the corpus list, validated as
    the pipeline validates them: every corpus a training corpus (the roles do not matter here,
    every clip of every corpus is used)."""
    from deepfake_audio.config.params import ParamsError, parse_params

    try:
        raw = yaml.safe_load(params_file.read_text()) or {}
        listed = yaml.safe_load(corpora_file.read_text()) or {}
    except OSError as exc:
        raise ProbeError(f"{exc.filename}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError:
        raise ProbeError(f"{corpora_file}: not valid YAML") from None
    data = listed.get("data") if isinstance(listed, dict) else None
    corpora = (data or {}).get("corpora", listed.get("corpora") if data is None else None)
    if not isinstance(corpora, list) or len(corpora) < 2:
        raise ProbeError(f"{corpora_file}: needs a data.corpora list of at least two corpora")
    corpora = [{**c, "role": "train"} for c in corpora if isinstance(c, dict)]
    raw.setdefault("data", {})["corpora"] = corpora
    if (data or {}).get("path"):
        raw["data"]["path"] = data["path"]
    try:
        return parse_params(raw)
    except ParamsError as exc:
        raise ProbeError(f"{corpora_file}: {exc}") from None


def setting_names(whisper: dict[str, int], vocoded: bool) -> list[str]:
    """Every row: each Whisper model's depths x poolings, then the baselines."""
    names = [
        f"whisper-{label}-L{depth}-{pooling}"
        for label, blocks in whisper.items()
        for depth in range(1, blocks + 1)
        for pooling in POOLINGS
    ]
    names += [f"{base}-mean_std" for base in BASELINES]
    return names + [f"{n}+vocoded" for n in names] if vocoded else names


def parse_whisper(specs: list[str]) -> dict[str, str]:
    """`--whisper` values: `tiny.en` or `LABEL=PATH` (a CTranslate2 model.bin) -> label: model."""
    models = {}
    for spec in specs:
        label, _, path = spec.partition("=")
        models[label] = path or label
    return models


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class Featuriser:
    """Pooled features of clips, cached per clip and family (`whisper-<label>`, `spectral`)."""

    def __init__(self, fp: Any, prep: Any, whisper: dict[str, str], cache: Path):
        from deepfake_audio.frontends import ctranslate2_weights

        self.fp, self.prep, self.cache = fp, prep, cache
        self.whisper: dict[str, Any] = {}
        self.blocks: dict[str, int] = {}
        self.weights_id: dict[str, str] = {}
        for label, model in whisper.items():
            weights = ctranslate2_weights.whisper_weights(model)
            self.blocks[label] = weights.n_layers
            self.weights_id[label] = "+".join(  # every part of a pinned model in parts (base)
                f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights.paths
            )
            self.whisper[label] = model
        self.cut = {
            "sample_rate": fp.sample_rate,
            "clip_seconds": fp.clip_seconds,
            "crop": fp.crop,
            "pad": fp.pad,
            "preprocess": prep.to_dict(),
        }
        self._encoders: dict[str, Any] = {}
        self.vocode_s = 0.0  # seconds spent vocoding (the --vocoded lever's own cost)
        self.vocoded_made = 0

    def families(self) -> list[str]:
        return [f"whisper-{label}" for label in self.whisper] + ["spectral"]

    def _file(self, family: str, item: Item, sha: str) -> Path:
        spectral = {"fp": [self.fp.n_fft, self.fp.win_length, self.fp.hop_length, self.fp.n_mels]}
        spectral["lfcc"] = list(vars(self.fp.lfcc).values())
        spectral["band"] = [self.fp.fmin, self.fp.fmax]
        which = self.weights_id.get(family.removeprefix("whisper-"), spectral)
        key = _key(family, which, self.cut, sha, item.vocoder)
        return self.cache / family / f"{key}.npz"

    def wave(self, item: Item) -> np.ndarray:
        """The model's window of the clip, as the pipeline cuts it (vocoded: of its copy)."""
        from deepfake_audio.dsp.audio import fix_length
        from deepfake_audio.stages.dataset import file_features

        fp = replace(self.fp, kind="whisper")  # clip_features is then the cut wave itself
        feats, meta = file_features(item.path, fp, keep_wave=bool(item.vocoder), prep=self.prep)
        if not item.vocoder:
            return feats
        from deepfake_audio.dsp.vocoders import vocode
        from deepfake_audio.stages.dataset import _stable_hash

        # As the dataset stage's vocoded rows: the window of the preprocessed recording, vocoded,
        # then cut as its source was; seeded by the copy's name.
        wave, n = meta["wave"], fp.n_samples
        part = wave if wave.size <= n else fix_length(wave, n, crop=fp.crop)
        seed = _stable_hash(f"{item.corpus}/{item.path.name}+{item.vocoder}") % 2**31
        started = time.monotonic()
        vocoded = vocode(part, fp.sample_rate, item.vocoder, seed=seed)
        self.vocode_s += time.monotonic() - started
        self.vocoded_made += 1
        return fix_length(vocoded, n, crop=fp.crop, pad=fp.pad)

    def spectral(self, wave: np.ndarray) -> dict[str, np.ndarray]:
        import scipy.fft

        from deepfake_audio.dsp.features import clip_features

        lfcc = clip_features(wave, replace(self.fp, kind="lfcc")).astype(np.float64)
        logmel = clip_features(wave, replace(self.fp, kind="logmel")).astype(np.float64)
        mfcc = scipy.fft.dct(logmel, type=2, norm="ortho", axis=0)[:N_MFCC]
        return {
            f"{name}-mean_std": np.concatenate([x.mean(axis=1), x.std(axis=1)])
            for name, x in (("lfcc", lfcc), ("logmel", logmel), ("mfcc", mfcc))
        }

    def _encoder(self, label: str) -> tuple[Any, Any]:
        if label not in self._encoders:
            from deepfake_audio.frontends.whisper import whisper_encoder

            model = self.whisper[label]
            self._encoders[label] = whisper_encoder(model, layers=self.blocks[label])
        return self._encoders[label]

    def whisper_pooled(self, label: str, waves: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Every depth's frames of a batch of windows, pooled (one forward pass)."""
        log_mel, encoder = self._encoder(label)
        states = encoder.hidden_states(log_mel(np.stack(waves)))
        out: list[dict[str, np.ndarray]] = [{} for _ in waves]
        for depth, state in enumerate(states, start=1):
            frames = np.asarray(state, dtype=np.float64)  # (batch, frames, d)
            mean, std = frames.mean(axis=1), frames.std(axis=1)
            for i, row in enumerate(out):
                row[f"whisper-{label}-L{depth}-mean"] = mean[i]
                row[f"whisper-{label}-L{depth}-mean_std"] = np.concatenate([mean[i], std[i]])
        return out

    def features(self, items: list[Item]) -> tuple[list[dict[str, np.ndarray] | None], list[str]]:
        """Per item, its pooled vector of every setting (None: unreadable, listed)."""
        from deepfake_audio.stages.dataset import BadFile

        rows: list[dict[str, np.ndarray] | None] = [{} for _ in items]
        errors: list[str] = []
        pending: dict[str, list[tuple[int, np.ndarray, Path]]] = {f: [] for f in self.families()}
        for index, item in enumerate(items):
            if index % 200 == 0:
                print(f"features: {index}/{len(items)} clips", file=sys.stderr, flush=True)
            try:
                sha = hashlib.sha256(item.path.read_bytes()).hexdigest()
            except OSError as exc:
                errors.append(f"{item.path}: cannot read ({exc.strerror})")
                rows[index] = None
                continue
            wave = None
            for family in self.families():
                file = self._file(family, item, sha)
                if file.is_file():
                    with np.load(file) as stored:
                        rows[index].update({k: stored[k] for k in stored.files})  # type: ignore[union-attr]
                    continue
                if wave is None:
                    try:
                        wave = self.wave(item)
                    except (BadFile, ValueError) as exc:
                        errors.append(
                            f"{exc}" + (f" (vocoder {item.vocoder})" if item.vocoder else "")
                        )
                        rows[index] = None
                        break
                if family == "spectral":
                    values = _float32(self.spectral(wave))
                    self._store(file, values)
                    rows[index].update(values)  # type: ignore[union-attr]
                else:
                    pending[family].append((index, wave, file))
            for family, queue in pending.items():
                if len(queue) >= BATCH:
                    self._flush(family, queue, rows)
        for family, queue in pending.items():
            if queue:
                self._flush(family, queue, rows)
        return rows, errors

    def _flush(self, family: str, queue: list, rows: list) -> None:
        label = family.removeprefix("whisper-")
        pooled = self.whisper_pooled(label, [wave for _, wave, _ in queue])
        for (index, _, file), values in zip(queue, pooled, strict=True):
            values = _float32(values)
            self._store(file, values)
            if rows[index] is not None:
                rows[index].update(values)
        queue.clear()

    @staticmethod
    def _store(file: Path, values: dict[str, np.ndarray]) -> None:
        from deepfake_audio.core.io import replacing

        file.parent.mkdir(parents=True, exist_ok=True)
        with replacing(file, keep_suffix=True) as tmp:
            np.savez(tmp, **values)


def _float32(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """As cached: a run that computes a feature and one that reads it back fit the same numbers."""
    return {k: np.asarray(v, dtype=np.float32) for k, v in values.items()}


def loco_eers(
    x: np.ndarray, y: np.ndarray, corpus: np.ndarray, extra: np.ndarray, names: list[str]
) -> tuple[dict[str, float], int]:
    """EER of each held-out corpus: a standardised logistic regression fitted on every clip of
    the other corpora (plus the `extra` rows of those corpora: vocoded copies, training only),
    scored on the held-out one. Deterministic (lbfgs, no sampling). Also the number of fits
    that stopped at MAX_ITER before converging (reported, not hidden)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from deepfake_audio.scoring.eer import compute_eer

    eers, unconverged = {}, 0
    for held in names:
        train = corpus != held
        test = (corpus == held) & ~extra
        model = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=C, class_weight="balanced", max_iter=MAX_ITER),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x[train], y[train])
        unconverged += int(model[-1].n_iter_[0] >= MAX_ITER)
        scores = model.decision_function(x[test])
        eers[held] = float(compute_eer(scores[y[test] == 1], scores[y[test] == 0])[0])
    return eers, unconverged


def markdown(report: dict[str, Any]) -> str:
    corpora = list(report["corpora"])
    lines = [
        f"Leave-one-corpus-out linear probe (logistic regression, C={report['C']}, standardised, "
        "balanced classes): EER (%) of each held-out corpus, trained on all clips of the others.",
        "",
        "| setting | " + " | ".join(corpora) + " | mean |",
        "|---|" + "---:|" * (len(corpora) + 1),
    ]
    for name, row in report["settings"].items():
        cells = [f"{100 * row['eer'][c]:.1f}" for c in corpora] + [f"**{100 * row['mean']:.1f}**"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = [f"{v['bonafide']}+{v['spoof']}" for v in report["corpora"].values()]
    lines.append("| clips real+fake | " + " | ".join(counts) + " | |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks probe", description=__doc__)
    parser.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA, help="a data.corpora list")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument(
        "--whisper",
        action="append",
        default=None,
        help="a pinned name, a model.bin path, or LABEL=PATH; repeatable (default: the "
        "params' features.whisper.model, tiny.en)",
    )
    parser.add_argument("--settings", default="", help="comma-separated rows (default: all)")
    parser.add_argument("--vocoded", default="", help="comma-separated vocoders: +vocoded rows")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=Path("reports/frontend_probe.json"))
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    from deepfake_audio.dsp.preprocess import resolve
    from deepfake_audio.sources import list_clips

    started = time.monotonic()
    params = load_params(args.corpora, args.params)
    fp = params.features
    prep = replace(resolve(params.data.preprocess, "folders"), short="pad")
    vocoders = [v for v in args.vocoded.split(",") if v]
    from deepfake_audio.dsp.vocoders import VOCODERS

    for name in vocoders:
        if name not in VOCODERS:
            raise ProbeError(f"--vocoded: unknown vocoder {name!r} (known: {', '.join(VOCODERS)})")
    featuriser = Featuriser(fp, prep, parse_whisper(args.whisper or [fp.whisper.model]), args.cache)
    known = setting_names(featuriser.blocks, bool(vocoders))
    wanted = [s for s in args.settings.split(",") if s] or known
    for name in wanted:
        if name not in known:
            raise ProbeError(f"--settings: unknown setting {name!r} (known: {', '.join(known)})")
    clips = list_clips(params)
    names = [c.name for c in params.data.corpora]
    items = [Item(c.corpus, Path(c.path), c.target) for c in clips]
    items += [Item(i.corpus, i.path, 0, v) for v in vocoders for i in list(items) if i.target == 1]
    rows, errors = featuriser.features(items)
    features_s = time.monotonic() - started
    keep = [i for i, row in enumerate(rows) if row is not None]
    y = np.array([items[i].target for i in keep])
    corpus = np.array([items[i].corpus for i in keep])
    extra = np.array([bool(items[i].vocoder) for i in keep])
    for held in names:
        if len(set(y[(corpus == held) & ~extra])) < 2:
            raise ProbeError(f"{args.corpora}: corpus {held!r} has no real or no fake clips")
    settings = {}
    fit_started = time.monotonic()
    for name in wanted:
        base = name.removesuffix("+vocoded")
        use = np.ones(len(keep), bool) if name.endswith("+vocoded") else ~extra
        x = np.stack([rows[i][base] for i in keep]).astype(np.float64)  # type: ignore[index]
        eers, unconverged = loco_eers(x[use], y[use], corpus[use], extra[use], names)
        settings[name] = {
            "unconverged_fits": unconverged,
            "eer": eers,
            "mean": float(np.mean(list(eers.values()))),
            "dims": x.shape[1],
        }
    return {
        "what": "leave-one-corpus-out linear probe of pooled front-end features",
        "command": "python -m benchmarks probe " + " ".join(sys.argv[2:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "C": C,
        "classifier": f"StandardScaler + LogisticRegression(C={C}, class_weight='balanced', "
        f"lbfgs, max_iter={MAX_ITER}); score = decision function",
        "corpora_file": str(args.corpora),
        "features": {
            "sample_rate": fp.sample_rate,
            "clip_seconds": fp.clip_seconds,
            "crop": fp.crop,
            "pad": fp.pad,
        },
        "preprocess": prep.to_dict(),
        "whisper": {label: featuriser.whisper[label] for label in featuriser.whisper},
        "vocoded": vocoders,
        "corpora": {
            n: {
                "bonafide": int(((corpus == n) & ~extra & (y == 1)).sum()),
                "spoof": int(((corpus == n) & ~extra & (y == 0)).sum()),
                "vocoded": int(((corpus == n) & extra).sum()),
            }
            for n in names
        },
        "skipped": errors,
        "settings": settings,
        "wall_s": {
            "features": round(features_s, 1),
            "vocoding": round(featuriser.vocode_s, 1),
            "vocoded_copies_made": featuriser.vocoded_made,
            "regressions": round(time.monotonic() - fit_started, 1),
            "total": round(time.monotonic() - started, 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    from deepfake_audio.core.errors import UserError
    from deepfake_audio.core.io import write_json, write_text

    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (ProbeError, UserError) as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 2
    write_json(args.out, report)
    table = markdown(report)
    write_text(args.out.with_suffix(".md"), table)
    print(table)
    print(f"wall time {report['wall_s']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
