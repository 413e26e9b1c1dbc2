"""Leave-one-corpus-out: `make quality QUALITY_ARGS="--loco ..."` (`python -m benchmarks
quality --loco`).

Given N corpora (a `data.corpora` list: params.yaml's, or the file `--corpora` names), it
runs N folds x seeds as DVC experiments through `dvc queue` (as `make quality` runs seeds):
fold k trains on every corpus but the k-th (their own train/validation/test splits, pooled)
and holds the k-th out whole as the `eval` corpus; a corpus the list gives role `select`
stays held out for selection in every fold and is never the evaluated one. Then it writes
`reports/loco.json` and `reports/loco.md`: per held-out corpus, the mean +- sd over seeds of
the detector's EER on it, the LFCC-GMM baseline's EER on it (the baseline stage scores held-
out corpora too) and the best one-number cue of that corpus (the dataset stage's shortcut
audit of it, raw audio): the floor a detector has to beat there. The last row is the mean
over corpora.

Every fold's corpora are passed as one `-S data.corpora=[...]` override with absolute paths,
and `data.path` as their common folder: a queued experiment runs in a temporary copy of the
repository, where a relative `../shared/datasets/...` would name nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import quality
from deepfake_audio.core.io import write_json, write_text

DEFAULT_OUT = Path("reports/loco.json")


def load_corpora(path: Path) -> list[dict[str, Any]]:
    """The corpus list of a YAML file: `data: {corpora: [...]}` (a params file) or
    `corpora: [...]`."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"loco: {path}: cannot read a corpus list ({exc})") from None
    corpora = (raw.get("data") or {}).get("corpora", raw.get("corpora"))
    if not isinstance(corpora, list) or not corpora:
        raise SystemExit(f"loco: {path}: no data.corpora list (or a top-level corpora list)")
    return [dict(c) for c in corpora]


def folds(corpora: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(held-out name, the fold's corpus list) per corpus that is not a `select` corpus: that
    one gets role eval, the other non-select corpora role train."""
    rotating = [c["name"] for c in corpora if c.get("role", "train") != "select"]
    if len(rotating) < 2:
        raise SystemExit(
            "loco: needs at least two corpora that are not role select (one to train on, "
            f"one to hold out); the list has {rotating}"
        )
    out = []
    for held in rotating:
        fold = []
        for corpus in corpora:
            entry = dict(corpus)
            if entry.get("role", "train") != "select":
                entry["role"] = "eval" if entry["name"] == held else "train"
            fold.append(entry)
        out.append((held, fold))
    return out


def absolute(corpora: list[dict[str, Any]], cwd: Path) -> tuple[list[dict[str, Any]], str]:
    """The list with absolute paths, and their deepest common folder (the fold's data.path)."""
    entries = []
    for corpus in corpora:
        entry = dict(corpus)
        entry["path"] = str((cwd / str(corpus["path"])).resolve())
        entries.append(entry)
    return entries, os.path.commonpath([e["path"] for e in entries])


def hydra(value: Any) -> str:
    """`value` in the override grammar `dvc exp run -S` reads (Hydra's): lists, dicts, quoted
    strings (a regex's backslashes kept), numbers, booleans, null."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    # In a quoted Hydra string only a quote, and backslashes right before one, are escaped.
    escaped = text.replace("'", "\\'")
    if escaped.endswith("\\"):
        trailing = len(escaped) - len(escaped.rstrip("\\"))
        escaped += "\\" * trailing
    return f"'{escaped}'"


def plans(
    corpora: list[dict[str, Any]], seeds: list[int], cwd: Path, overrides: list[str], stamp: str
) -> list[dict[str, Any]]:
    """One queued experiment per (fold, seed): its name and `-S` overrides."""
    out = []
    for held, fold in folds(corpora):
        entries, root = absolute(fold, cwd)
        for seed in seeds:
            out.append(
                {
                    "name": f"loco-{held}-s{seed}-{stamp}".replace("_", "-"),
                    "held_out": held,
                    "seed": seed,
                    "overrides": [
                        f"seed={seed}",
                        f"data.path={hydra(root)}",
                        f"data.corpora={hydra(entries)}",
                        *overrides,
                    ],
                }
            )
    return out


def table(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per held-out corpus: the detector's EER on it over seeds (mean, sd), the LFCC-GMM's,
    and the corpus's best one-number cue; `mean` over corpora of each column's mean."""
    rows: dict[str, Any] = {}
    for run in runs:
        entry = (run["metrics"].get("xcorpus") or {}).get(run["held_out"]) or {}
        row = rows.setdefault(
            run["held_out"], {"eer": [], "baseline_lfcc_gmm_eer": [], "best_cue": None}
        )
        for key in ("eer", "baseline_lfcc_gmm_eer"):
            if entry.get(key) is not None:
                row[key].append(float(entry[key]))
        if entry.get("best_cue_eer") is not None:
            row["best_cue"] = {"cue": entry.get("best_cue"), "eer": float(entry["best_cue_eer"])}
    out: dict[str, Any] = {"corpora": {}}
    for name, row in rows.items():
        out["corpora"][name] = {
            "eer": quality.summary(row["eer"]),
            "baseline_lfcc_gmm_eer": quality.summary(row["baseline_lfcc_gmm_eer"]),
            "best_cue": row["best_cue"],
        }

    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return round(sum(present) / len(present), 6) if present else None

    corpora = out["corpora"].values()
    out["mean"] = {
        "eer": mean([c["eer"]["mean"] for c in corpora]),
        "baseline_lfcc_gmm_eer": mean([c["baseline_lfcc_gmm_eer"]["mean"] for c in corpora]),
        "best_cue_eer": mean([(c["best_cue"] or {}).get("eer") for c in corpora]),
    }
    return out


def markdown(result: dict[str, Any]) -> str:
    """The table as Markdown (EERs in percent)."""

    def pct(s: dict[str, Any]) -> str:
        if s["mean"] is None:
            return "n/a"
        spread = f" +- {100 * s['std']:.1f}" if s.get("std") is not None else ""
        return f"{100 * s['mean']:.1f}{spread} % (n={s['n']})"

    lines = [
        "| held-out corpus | detector EER (mean +- sd over seeds) | LFCC-GMM EER "
        "| best one-number cue |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in result["corpora"].items():
        cue = row["best_cue"]
        cue_text = f"{cue['cue']} {100 * cue['eer']:.1f} %" if cue else "n/a"
        lines.append(
            f"| {name} | {pct(row['eer'])} | {pct(row['baseline_lfcc_gmm_eer'])} | {cue_text} |"
        )
    m = result["mean"]

    def plain(v: float | None) -> str:
        return f"{100 * v:.1f} %" if v is not None else "n/a"

    lines.append(
        f"| **mean** | {plain(m['eer'])} | {plain(m['baseline_lfcc_gmm_eer'])} "
        f"| {plain(m['best_cue_eer'])} |"
    )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks quality --loco", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--corpora",
        type=Path,
        default=Path("params.yaml"),
        help="a YAML file with data.corpora (or corpora): default %(default)s",
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default: %(default)s)")
    quality.add_queue_options(
        parser, example="tune.max_trials=2", timeout_hours=12, out=DEFAULT_OUT
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cwd = quality.require_project("loco")
    import subprocess

    corpora = load_corpora(args.corpora)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True)
    if head.returncode != 0:
        raise SystemExit("loco: needs a git repository with a commit (DVC experiments do)")
    todo = plans(corpora, seeds, cwd, args.set_param, time.strftime("%m%d%H%M"))
    started = time.monotonic()
    states = quality.queue_and_wait(
        cwd, [(p["name"], p["overrides"]) for p in todo], args.jobs, args.timeout
    )
    shown = quality.experiments(
        json.loads(quality._dvc(["exp", "show", "--json", "--rev", head.stdout.strip()], cwd, 300))
    )
    runs, failed = [], []
    for plan in todo:
        if states.get(plan["name"]) != "Success" or plan["name"] not in shown:
            failed.append(plan["name"])
            continue
        runs.append({**plan, "metrics": shown[plan["name"]]["metrics"]})
    result = table(runs)
    report = {
        "command": "python -m benchmarks quality --loco "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "corpora": corpora,
        "seeds": seeds,
        "overrides": args.set_param,
        "wall_seconds": round(time.monotonic() - started, 1),
        **result,
        "runs": [
            {k: r[k] for k in ("name", "held_out", "seed")}
            | {"xcorpus": r["metrics"].get("xcorpus"), "test_eer": r["metrics"].get("test_eer")}
            for r in runs
        ],
        "failed": failed,
    }
    write_json(args.out, report)
    md = args.out.with_suffix(".md")
    write_text(md, markdown(result))
    print(markdown(result))
    print(f"wrote {args.out} and {md}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
