"""`python -m benchmarks shortcuts`: the shortcut audit of real corpora before and after
preprocessing (`data.preprocess`, dsp/preprocess.py).

For every corpus folder under `--datasets` (default ../shared/datasets; each holds `real/`
and `fake/` folders, at any depth: for-sample's are under its split folders; the apart
`codec/` and `bark/` folders are left out), every file goes through the dataset stage's own
per-file path (`stages.dataset.file_features`, so the cues are the pipeline's) twice:
without preprocessing and with the default one. Three views of each clip are audited with
`scoring.shortcuts.audit`, all clips of a corpus pooled:

    raw     the decoded file at its own rate (what the corpus gives away)
    off     the model's window as fed without preprocessing (resampled, whole-clip RMS,
            centre crop or repeat pad to features.clip_seconds)
    on      as fed with the default preprocessing (DC, silence, speech level; clips too
            short for a window dropped, so this view has fewer clips: `dropped`)

Writes the JSON (`--out`, default reports/shortcuts_preprocess.json) and a Markdown table
(`--md`, default beside it), atomically. The features are params.yaml's defaults
(lfcc, 16 kHz, 2 s windows). The project does not need the corpora to run: without them
this says so and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
VIEWS = ("raw", "off", "on")


def corpus_files(corpus: Path) -> list[tuple[Path, int]]:
    """(file, target) of every audio file in a `real/` (1) or `fake/` (0) folder of `corpus`."""
    from deepfake_audio.dsp.audio import AUDIO_SUFFIXES

    files = []
    for path in sorted(corpus.rglob("*")):
        if path.suffix.lower() in AUDIO_SUFFIXES and path.parent.name in ("real", "fake"):
            files.append((path, int(path.parent.name == "real")))
    return files


def audit_corpus(corpus: Path, fp: Any, short: str = "drop") -> dict[str, Any]:
    """The three views' audits of one corpus, pooled over all its clips."""
    from deepfake_audio.dsp.cues import CUE_NAMES
    from deepfake_audio.dsp.preprocess import Preprocess
    from deepfake_audio.scoring import shortcuts
    from deepfake_audio.stages.dataset import BadFile, file_features

    prep = Preprocess(short=short)
    rows: dict[str, list[dict[str, float]]] = {view: [] for view in VIEWS}
    targets: dict[str, list[int]] = {view: [] for view in VIEWS}
    dropped, unreadable = [], []
    for path, target in corpus_files(corpus):
        try:
            meta = file_features(path, fp)[1]
        except BadFile as exc:
            unreadable.append(str(exc))
            continue
        rows["raw"].append({c: meta[f"raw_{c}"] for c in CUE_NAMES})
        rows["off"].append({c: meta[f"as_fed_{c}"] for c in CUE_NAMES})
        targets["raw"].append(target)
        targets["off"].append(target)
        try:
            meta = file_features(path, fp, prep=prep)[1]
        except BadFile as exc:
            dropped.append(str(exc).split(": ", 1)[0])
            continue
        rows["on"].append({c: meta[f"as_fed_{c}"] for c in CUE_NAMES})
        targets["on"].append(target)
    result: dict[str, Any] = {"dropped": dropped, "unreadable": unreadable}
    for view in VIEWS:
        table = {c: np.array([r[c] for r in rows[view]], dtype=np.float64) for c in CUE_NAMES}
        split = {"all": (np.array(targets[view]), {view: table})}
        entry = shortcuts.audit(split)["splits"]["all"]
        result[view] = entry
    return result


def markdown(report: dict[str, Any]) -> str:
    """One table: per corpus and cue, the EER raw / off / on; then the lowest per view."""
    corpora = list(report["corpora"])
    lines = [
        "EER of each one-number cue used alone as a score, all clips of a corpus pooled: "
        "raw file / as fed without preprocessing / as fed with it (%).",
        "",
        "| cue | " + " | ".join(corpora) + " |",
        "|---|" + "---|" * len(corpora),
    ]
    cues = list(report["units"])
    for cue in cues:
        cells = []
        for name in corpora:
            entry = report["corpora"][name]
            eers = [entry[view][view].get(cue, {}).get("eer") for view in VIEWS]
            cells.append(" / ".join("-" if e is None else f"{100 * e:.1f}" for e in eers))
        lines.append(f"| {cue} | " + " | ".join(cells) + " |")
    lowest = []
    for name in corpora:
        entry = report["corpora"][name]
        parts = []
        for view in VIEWS:
            best = entry[view].get(f"{view}_lowest")
            parts.append("-" if best is None else f"{100 * best['eer']:.1f} ({best['cue']})")
        lowest.append(" / ".join(parts))
    lines.append("| **lowest** | " + " | ".join(lowest) + " |")
    counts = []
    for name in corpora:
        entry = report["corpora"][name]
        counts.append(
            " / ".join(f"{entry[v]['bonafide']}+{entry[v]['spoof']}" for v in VIEWS)
            + f" ({len(entry['dropped'])} dropped)"
        )
    lines.append("| clips real+fake | " + " | ".join(counts) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from deepfake_audio.config.params import load_params
    from deepfake_audio.core.io import write_json, write_text
    from deepfake_audio.dsp.cues import CUES

    parser = argparse.ArgumentParser(prog="python -m benchmarks shortcuts", description=__doc__)
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--out", type=Path, default=Path("reports/shortcuts_preprocess.json"))
    parser.add_argument("--md", type=Path, default=None)
    parser.add_argument("--only", default="", help="comma-separated corpus names")
    parser.add_argument("--clip-seconds", type=float, default=None, help="the model's window")
    parser.add_argument("--short", choices=("drop", "pad"), default="drop")
    args = parser.parse_args(argv)
    if not args.datasets.is_dir():
        print(f"{args.datasets}: no such folder (the shared corpora)", file=sys.stderr)
        return 2
    fp = load_params(Path(__file__).resolve().parents[1] / "params.yaml").features
    if args.clip_seconds is not None:
        fp = replace(fp, clip_seconds=args.clip_seconds)
    only = {n for n in args.only.split(",") if n}
    report: dict[str, Any] = {
        "features": {
            "kind": fp.kind,
            "sample_rate": fp.sample_rate,
            "clip_seconds": fp.clip_seconds,
        },
        "preprocess": f"dsp.preprocess.Preprocess(short={args.short!r}) (else the defaults)",
        "views": {
            "raw": "the decoded file",
            "off": "as fed, no preprocessing",
            "on": "as fed, preprocessed (short clips dropped)",
        },
        "units": dict(CUES),
        "corpora": {},
    }
    for corpus in sorted(p for p in args.datasets.iterdir() if p.is_dir()):
        if only and corpus.name not in only:
            continue
        started = time.monotonic()
        report["corpora"][corpus.name] = audit_corpus(corpus, fp, args.short)
        print(f"{corpus.name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    write_json(args.out, report)
    table = markdown(report)
    write_text(args.md or args.out.with_suffix(".md"), table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
