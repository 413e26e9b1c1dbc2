"""Run the benchmark suite: `python -m benchmarks [--only a,b] [--quick] [--out FILE]`.

Writes `reports/benchmarks.json` (atomically, after every section, so a crash late in the
run keeps what was measured) and prints a Markdown table of every figure on stdout;
progress goes to stderr. Exit status 1 when a section failed (its error is in the JSON),
0 otherwise: a figure that misses its target is a finding, not a failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    SCHEMA_VERSION,
    log,
    machine,
    markdown_table,
    write_json_atomic,
)
from benchmarks.corpus import PROJECT, Workspace  # noqa: E402

# Run order: the sections that fork worker processes come before any TensorFlow import.
SECTIONS = (
    "features",
    "input_pipeline",
    "train",
    "architectures",
    "frontends",
    "pipeline",
    "serving",
    "timeline",
)
ALIASES = {"tune": "pipeline"}
DEFAULT_OUT = PROJECT / "reports" / "benchmarks.json"


def _section(name: str):
    if name == "features":
        from benchmarks import features_bench as module
    elif name == "input_pipeline":
        from benchmarks import input_bench as module
    elif name == "train":
        from benchmarks import train_bench as module
    elif name == "architectures":
        from benchmarks import architectures_bench as module
    elif name == "frontends":
        from benchmarks import frontends_bench as module
    elif name == "serving":
        from benchmarks import serving_bench as module
    elif name == "timeline":
        from benchmarks import timeline_bench as module
    else:
        from benchmarks import pipeline_bench as module
    return module.run


def parse_sections(text: str | None) -> list[str]:
    if not text:
        return list(SECTIONS)
    wanted = set()
    for part in text.split(","):
        name = ALIASES.get(part.strip(), part.strip())
        if name not in SECTIONS:
            raise SystemExit(
                f"--only: unknown section {part.strip()!r} "
                f"(known: {', '.join(SECTIONS)}; 'tune' is part of 'pipeline')"
            )
        wanted.add(name)
    return [s for s in SECTIONS if s in wanted]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--only",
        metavar="SECTIONS",
        help=f"comma-separated sections to run (default: all): {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and fewer repeats (for tests)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON output (default: %(default)s)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary work folder (its path is logged)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sections = parse_sections(args.only)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="deepfake-audio-bench-"))
    log(f"sections {', '.join(sections)}{' (quick)' if args.quick else ''}; work folder {work}")
    ws = Workspace(work, quick=args.quick)
    payload: dict = {
        "schema_version": SCHEMA_VERSION,
        "machine": machine(),
        "settings": {
            "quick": args.quick,
            "sections": sections,
            "corpus": "synthetic demo corpus (deepfake_audio.sources.demo)",
            "corpus_counts": ws.counts,
            "features": ws.params().section("features"),
        },
        "figures": {},
        "errors": {},
        "sections": {},
    }
    try:
        ws.prepare(sections)
        for name in sections:
            section_started = time.perf_counter()
            load_before = [round(x, 2) for x in os.getloadavg()]
            try:
                for figure in _section(name)(ws):
                    payload["figures"][figure.key] = figure.as_json()
            except Exception as exc:  # noqa: BLE001 - report it, go on with the next section
                traceback.print_exc()
                payload["errors"][name] = f"{type(exc).__name__}: {exc}"
            seconds = time.perf_counter() - section_started
            payload["sections"][name] = {
                "seconds": round(seconds, 1),
                "load_average_at_start": load_before,
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            }
            log(f"{name}: {seconds:.0f} s")
            payload["wall_seconds"] = round(time.perf_counter() - started, 1)
            write_json_atomic(args.out, payload)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    payload["wall_seconds"] = round(time.perf_counter() - started, 1)
    payload["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_json_atomic(args.out, payload)

    m = payload["machine"]
    gpu = m["gpu"] if isinstance(m["gpu"], str) else ", ".join(m["gpu"])
    print(
        f"## Benchmarks ({m['date']}; {m['cpu_model']}, {m['logical_cores']} cores, "
        f"{m['ram_gib']} GiB, GPU: {gpu}; "
        f"wall {payload['wall_seconds']:.0f} s{'; --quick' if args.quick else ''})\n"
    )
    print(markdown_table(payload["figures"]))
    for name, error in payload["errors"].items():
        print(f"\n**{name} failed:** {error.splitlines()[0]}")
    print(f"\nJSON: {args.out}")
    return 1 if payload["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
