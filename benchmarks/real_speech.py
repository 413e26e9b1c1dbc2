"""The recommended real-speech detector: `make real-speech SEED=<n>` (`python -m benchmarks
real-speech --seed N`).

One `dvc exp run` of the whole pipeline with the settings of `benchmarks/real_speech.yaml`
(the five shared corpora, all trained on; Whisper base after block 3 with `whisper_head`; a
CPU-sized search), each passed as one `-S key=value` on top of params.yaml, so the run is an
ordinary DVC experiment (`dvc exp show`) tracked in the MLflow server of
`MLFLOW_TRACKING_URI` and registered under the file's own `registry.model_name`. The settings
live in that one file, not here: this only turns it into overrides, checks that the corpora
are there and runs DVC. Why each setting: docs/pipeline.md, "Real speech: make real-speech".

It runs in the workspace (not `dvc queue`), so the relative `../shared/datasets/...` paths
resolve from the project root as written, and `dvc.lock`, `models/` and `reports/` end up
holding this run, as `dvc exp run` always leaves them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.loco import hydra

SETTINGS = Path("benchmarks/real_speech.yaml")


def load(path: Path) -> dict[str, Any]:
    """The settings file: a params-shaped mapping (a subset of params.yaml's keys)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"real-speech: {path}: cannot read the settings ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise SystemExit(f"real-speech: {path}: expected a mapping of params keys")
    return raw


def flatten(settings: dict[str, Any], prefix: str = "") -> list[str]:
    """`key.sub=value` overrides in DVC's (Hydra's) grammar: mappings are walked, every
    other value (a list such as data.corpora included) is one override."""
    out = []
    for key, value in settings.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.extend(flatten(value, f"{dotted}."))
        else:
            out.append(f"{dotted}={hydra(value)}")
    return out


def overrides(settings: dict[str, Any], seed: int) -> list[str]:
    """Every `-S` the run gets: the seed, then the settings file's values."""
    return [f"seed={seed}", *flatten(settings)]


def missing_corpora(settings: dict[str, Any], root: Path) -> list[str]:
    """`name (path)` of each data.corpora entry whose folder is not there, from `root`."""
    corpora = (settings.get("data") or {}).get("corpora") or []
    return [
        f"{c.get('name')} ({c.get('path')})"
        for c in corpora
        if not (root / str(c.get("path"))).is_dir()
    ]


def summary(root: Path) -> str:
    """The run's figures as `make demo` prints them: EERs from reports/metrics.json (per
    training corpus where evaluate wrote them) and the registered version."""
    try:
        metrics = json.loads((root / "reports/metrics.json").read_text())
        registry = json.loads((root / "reports/registry.json").read_text())
    except (OSError, ValueError) as exc:
        return f"(no summary: {exc})"

    def pct(value: Any) -> str:
        return "n/a" if value is None else f"{float(value):.2%}"

    lines = [
        f"validation EER:   {pct(metrics.get('validation_eer'))} (pooled, five corpora)",
        f"test EER:         {pct(metrics.get('test_eer'))} (pooled; a measurement, not a choice)",
        f"LFCC-GMM EER:     {pct(metrics.get('baseline_lfcc_gmm_test_eer'))} (same test clips)",
        f"registered model: {registry.get('model_name')} version {registry.get('version')} "
        f"aliases {', '.join(registry.get('aliases') or []) or '-'}",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks real-speech",
        description="Train and register the recommended real-speech detector (one seed).",
    )
    parser.add_argument("--seed", type=int, default=0, help="params `seed` (default 0)")
    parser.add_argument("--settings", type=Path, default=SETTINGS, help=f"(default {SETTINGS})")
    parser.add_argument("--name", default=None, help="experiment name (default real-speech-sN-…)")
    parser.add_argument(
        "-S", dest="extra", action="append", default=[], help="one more override, after the file's"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path.cwd()
    settings = load(args.settings)
    name = args.name or f"real-speech-s{args.seed}-{time.strftime('%m%d%H%M')}"
    cmd = ["dvc", "exp", "run", "-n", name]
    for override in [*overrides(settings, args.seed), *args.extra]:
        cmd += ["-S", override]
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    if not (root / "dvc.yaml").is_file():
        raise SystemExit("real-speech: run it in the project's root (where dvc.yaml is)")
    missing = missing_corpora(settings, root)
    if missing:
        raise SystemExit(
            f"real-speech: {args.settings}: corpus folder missing: {', '.join(missing)} "
            "(the shared corpora: ../shared/datasets/README.md)"
        )
    started = time.monotonic()
    code = subprocess.run(cmd, cwd=root, check=False).returncode
    if code != 0:
        print(f"real-speech: dvc exp run failed (exit {code})", file=sys.stderr)
        return code
    print(f"\nexperiment:       {name} ({time.monotonic() - started:.0f} s)")
    print(summary(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
