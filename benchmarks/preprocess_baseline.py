"""`python -m benchmarks preprocess-baseline`: the LFCC-GMM baseline on one real corpus with
`data.preprocess` off and on and with `data.vocoded` spoofs, side by side.

Each setting builds the corpus through the dataset stage (`stages.dataset.build`, LFCC, the
corpus's own split via the folders source) and fits the baseline stage's GMMs
(`stages.baseline.training_frames`, `fit_models`, `evaluate`; no MLflow), then reports the
validation and test EER. One seed (params.yaml's), a 64-component GMM: a quick look at what
the settings do to a classic detector, not a tuned result. Default corpus: the FoR sample
(../shared/datasets/for-sample), whose folders carry its own split.

Writes the JSON (`--out`, default reports/preprocess_baseline.json) and prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "for-sample"
SETTINGS: dict[str, dict[str, Any]] = {
    "off": {"preprocess": {"enabled": False}},
    "on (drop)": {"preprocess": {"enabled": True}},
    "on (pad)": {"preprocess": {"enabled": True, "short": "pad"}},
    "on (pad) + vocoded": {
        "preprocess": {"enabled": True, "short": "pad"},
        "vocoded": {"vocoders": ["world", "griffin_lim", "lpc"]},
    },
}


def measure(corpus: Path, name: str, data: dict[str, Any], work: Path) -> dict[str, Any]:
    from deepfake_audio.config.params import parse_params
    from deepfake_audio.core.errors import UserError
    from deepfake_audio.dataset.shards import SpectrogramDataset
    from deepfake_audio.sources import list_clips
    from deepfake_audio.stages import baseline, dataset

    params = parse_params(
        {
            "data": {"source": "folders", "path": str(corpus), **data},
            "features": {"kind": "lfcc", "workers": 2},
        }
    )
    out = work / name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "")
    started = time.monotonic()
    try:
        summary = dataset.build(params, list_clips(params), out / "spec", out / "reports")
    except UserError as exc:  # short: drop that would gut a split: the stage refuses
        return {"refused": str(exc)}
    data_set = SpectrogramDataset(out / "spec")
    frames = baseline.training_frames(data_set, params.baseline.max_frames, params.seed)
    models = baseline.fit_models(frames, params.baseline.components, params.seed, 2)
    report = baseline.evaluate(models, data_set)
    return {
        "val_eer": report["validation_eer"],
        "test_eer": report["test_eer"],
        "per_split": summary["per_split"],
        "dropped_short": summary.get("dropped_short", 0),
        "train_vocoded": summary.get("train_vocoded", 0),
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    from deepfake_audio.core.io import write_json

    parser = argparse.ArgumentParser(prog="python -m benchmarks preprocess-baseline")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, default=Path("reports/preprocess_baseline.json"))
    args = parser.parse_args(argv)
    if not args.corpus.is_dir():
        print(f"{args.corpus}: no such folder", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"corpus": args.corpus.name, "model": "LFCC-GMM, 64 components"}
    with tempfile.TemporaryDirectory(prefix="preprocess-baseline-") as tmp:
        for name, data in SETTINGS.items():
            results[name] = measure(args.corpus, name, data, Path(tmp))
            print(f"{name}: {results[name]}", file=sys.stderr)
    write_json(args.out, results)
    print("| setting | validation EER | test EER | clips train / validation / test | dropped |")
    print("|---|---|---|---|---|")
    for name in SETTINGS:
        r = results[name]
        if "refused" in r:
            print(f"| {name} | refused by the dataset stage: {r['refused']} | | | |")
            continue
        counts = " / ".join(f"{c['bonafide']}+{c['spoof']}" for c in r["per_split"].values())
        extra = f" (+{r['train_vocoded']} vocoded)" if r["train_vocoded"] else ""
        print(
            f"| {name} | {100 * r['val_eer']:.1f} % | {100 * r['test_eer']:.1f} % | "
            f"{counts}{extra} | {r['dropped_short']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
