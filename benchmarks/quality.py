"""Seed variance of the whole pipeline: `python -m benchmarks quality` (`make quality`).

On the small test splits the field often has (58 clips in the FoR sample), one run's EER
moves by about +-13 points with the seed alone: a single run cannot tell two architectures
or two augmentation settings apart. This runs N seeds of the pipeline per architecture as
DVC experiments through `dvc queue` (the project's own params.yaml, plus any `-S` you
give), then writes `reports/quality.json`: per architecture the mean, standard deviation
and a 95 % interval (Student's t) of validation and test EER, the test EER of the attacks
training never saw, and the LFCC-GMM baseline on the same splits beside them.

Run it in the project (a git repository) with the MLflow server up, as `make quality`
does. Every experiment stays in `dvc exp show` and in MLflow, tagged with its name.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deepfake_audio.core.io import write_json

DEFAULT_OUT = Path("reports/quality.json")
# What each experiment reports, from its reports/metrics.json.
FIGURES = {
    "validation_eer": "validation_eer",
    "test_eer": "test_eer",
    "test_eer_unseen_attacks": "test_eer_unseen_attacks",
    "test_min_dcf": "test_min_dcf",
    "baseline_lfcc_gmm_test_eer": "baseline_lfcc_gmm_test_eer",
}


def t_quantile_975(dof: int) -> float:
    """The 97.5 % quantile of Student's t (a two-sided 95 % interval), scipy when present."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, dof))
    except ImportError:  # pragma: no cover - scipy is a dependency; this is a fallback
        return 1.959963984540054


def summary(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and 95 % t-interval of the mean, over the seeds."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None, "values": []}
    mean = sum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95": None, "values": values}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return {
        "n": n,
        "mean": round(mean, 6),
        "std": round(std, 6),
        "ci95": [round(mean - half, 6), round(mean + half, 6)],
        "values": [round(v, 6) for v in values],
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per architecture: a summary of every figure over its runs (those that reported it)."""
    by_arch: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_arch.setdefault(run["architecture"], []).append(run)
    out: dict[str, Any] = {}
    for arch, group in sorted(by_arch.items()):
        figures = {}
        for key in FIGURES:
            values = [float(r["metrics"][key]) for r in group if r["metrics"].get(key) is not None]
            figures[key] = summary(values)
        out[arch] = {"seeds": sorted(r["seed"] for r in group), **figures}
    return out


def experiments(shown: Any) -> dict[str, dict[str, Any]]:
    """name -> {"params": ..., "metrics": reports/metrics.json}, from `dvc exp show --json`."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            data = node.get("data") or {}
            params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
            metrics = ((data.get("metrics") or {}).get("reports/metrics.json") or {}).get(
                "data"
            ) or {}
            # A queued experiment can be listed twice (its queue entry, its result): the
            # entry without metrics must not hide the result.
            if node.get("name") and params and (metrics or node["name"] not in found):
                found[node["name"]] = {"params": params, "metrics": metrics}
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(shown)
    return found


def outside_paths_made_absolute(overrides: list[str], cwd: Path) -> list[str]:
    """``data.path=`` overrides that lead out of the project, made absolute.

    A queued experiment runs in a temporary copy of the repository (under .dvc/tmp/exps), so
    ``../shared/datasets/for-sample`` would name a folder that is not there and the dataset
    stage would fail on every seed. Paths inside the project (``data/raw``) stay relative:
    the copy has them.
    """
    out = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if key.strip() == "data.path" and sep and value and not Path(value).is_absolute():
            resolved = (cwd / value).resolve()
            if not resolved.is_relative_to(cwd.resolve()):
                override = f"{key}={resolved}"
        out.append(override)
    return out


def _dvc(args: list[str], cwd: Path, timeout: float = 600) -> str:
    proc = subprocess.run(
        ["dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"quality: dvc {' '.join(args)} failed: {tail[0]}")
    return proc.stdout


def queue_and_wait(
    cwd: Path, plans: list[tuple[str, list[str]]], jobs: int, timeout: float
) -> dict[str, str]:
    """Queue each (name, -S overrides) plan, run the queue, wait; name -> Success/Failed."""
    for name, overrides in plans:
        sets = [arg for o in overrides for arg in ("-S", o)]
        _dvc(["exp", "run", "--queue", "-n", name, *sets], cwd)
    # Queue workers are daemons that keep the streams they inherit: a file, not a pipe.
    with open(cwd / ".dvc" / "tmp" / "quality-queue.log", "a") as log:
        code = subprocess.call(
            ["dvc", "queue", "start", "-j", str(jobs)], cwd=cwd, stdout=log, stderr=log
        )
    if code != 0:
        raise SystemExit("quality: dvc queue start failed (see .dvc/tmp/quality-queue.log)")
    names = [name for name, _ in plans]
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    try:
        while True:
            status = _dvc(["queue", "status"], cwd)
            for line in status.splitlines():
                for name in names:
                    if name in line.split():
                        states[name] = next(
                            (s for s in ("Success", "Failed", "Running", "Queued") if s in line),
                            "?",
                        )
            if len(states) == len(names) and all(
                s in ("Success", "Failed") for s in states.values()
            ):
                return states
            if time.monotonic() > deadline:
                raise SystemExit(f"quality: the queue did not finish in {timeout:.0f} s")
            done = sum(s in ("Success", "Failed") for s in states.values())
            print(f"quality: {done}/{len(names)} experiments done", file=sys.stderr)
            time.sleep(15)
    except BaseException:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=cwd, capture_output=True)
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks quality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default: %(default)s)")
    parser.add_argument(
        "--architectures",
        default="",
        help="comma-separated model.architecture values (default: the one in params.yaml)",
    )
    add_queue_options(parser, example="data.source=folders", timeout_hours=6, out=DEFAULT_OUT)
    return parser


def add_queue_options(
    parser: argparse.ArgumentParser, *, example: str, timeout_hours: float, out: Path
) -> None:
    """-S, --jobs, --timeout and --out: the options of every benchmark that queues `dvc exp run`s.

    Shared with `benchmarks.loco`, which differs only in the example, the time it allows
    the queue and where it writes.
    """
    parser.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"passed to every `dvc exp run` (e.g. -S {example})",
    )
    parser.add_argument("--jobs", type=int, default=1, help="dvc queue workers (default: 1)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=timeout_hours * 3600,
        help=f"seconds (default {timeout_hours:g} h)",
    )
    parser.add_argument("--out", type=Path, default=out)


def require_project(prog: str) -> Path:
    """The current folder, once it is a project root (git + dvc.yaml) with a tracking server set."""
    cwd = Path.cwd()
    if not (cwd / "dvc.yaml").is_file() or not (cwd / ".git").exists():
        raise SystemExit(f"{prog}: run it in the project's root (a git repository with dvc.yaml)")
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise SystemExit(f"{prog}: set MLFLOW_TRACKING_URI (make quality starts the server)")
    return cwd


def main(argv: list[str] | None = None) -> int:
    if "--loco" in (sys.argv[1:] if argv is None else argv):
        # Leave-one-corpus-out over data.corpora: benchmarks/loco.py.
        from benchmarks import loco

        return loco.main([a for a in (sys.argv[1:] if argv is None else argv) if a != "--loco"])
    args = build_parser().parse_args(argv)
    cwd = require_project("quality")
    import yaml

    params = yaml.safe_load((cwd / "params.yaml").read_text())
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    archs = [a.strip() for a in args.architectures.split(",") if a.strip()]
    archs = archs or [params["model"]["architecture"]]
    stamp = time.strftime("%m%d%H%M")
    # The experiments hang off the commit checked out now; `dvc exp show` lists only those of
    # HEAD, so a commit made while the queue runs would otherwise hide every result.
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True)
    if head.returncode != 0:
        raise SystemExit("quality: needs a git repository with a commit (DVC experiments do)")
    base = head.stdout.strip()
    overrides = outside_paths_made_absolute(args.set_param, cwd)
    plans = [
        (
            f"q-{arch}-s{seed}-{stamp}".replace("_", "-"),
            [f"seed={seed}", f"model.architecture={arch}", *overrides],
        )
        for arch in archs
        for seed in seeds
    ]
    started = time.monotonic()
    states = queue_and_wait(cwd, plans, args.jobs, args.timeout)
    shown = experiments(
        json.loads(_dvc(["exp", "show", "--json", "--rev", base], cwd, timeout=300))
    )
    runs, failed = [], []
    for (name, _), (arch, seed) in zip(plans, [(a, s) for a in archs for s in seeds], strict=True):
        if states.get(name) != "Success" or name not in shown:
            failed.append(name)
            continue
        runs.append(
            {"name": name, "architecture": arch, "seed": seed, "metrics": shown[name]["metrics"]}
        )
    report = {
        "command": "python -m benchmarks quality "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "overrides": args.set_param,
        "synthetic_demo_corpus": not any(o.startswith("data.source=") for o in args.set_param)
        and params.get("data", {}).get("source", "demo") == "demo",
        "seeds": seeds,
        "wall_seconds": round(time.monotonic() - started, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "architectures": aggregate(runs),
        "runs": runs,
        "failed": failed,
    }
    write_json(args.out, report)
    for arch, figures in report["architectures"].items():
        val, test, base = (
            figures["validation_eer"],
            figures["test_eer"],
            figures["baseline_lfcc_gmm_test_eer"],
        )

        def text(s: dict[str, Any]) -> str:
            if s["mean"] is None:
                return "n/a"
            spread = f" +- {s['std']:.2%}" if s["std"] is not None else ""
            return f"{s['mean']:.2%}{spread}"

        print(
            f"{arch}: validation EER {text(val)}, test EER {text(test)} "
            f"(LFCC-GMM {text(base)}), {val['n']} seeds"
        )
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
