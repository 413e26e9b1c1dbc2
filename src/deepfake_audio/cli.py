"""The `deepfake-audio` command: one thin subcommand per DVC stage, plus server/promote/predict.

Handlers import their stage module (and so TensorFlow) only when they run, so
`deepfake-audio --help` answers instantly. Errors a user can fix end in one
line on stderr and exit code 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from deepfake_audio import __version__
from deepfake_audio.core.errors import UserError
from deepfake_audio.core.io import read_json

DATASET = Path("data/spectrograms")
REPORTS = Path("reports")
TUNER_DIR = Path("models/tuner")
HPARAMS = Path("models/best_hparams.json")
MODEL = Path("models/model.keras")
RUN_INFO = Path("models/run.json")
METRICS = Path("reports/metrics.json")
PLOTS = Path("reports/plots")
REGISTRY = Path("reports/registry.json")
BASELINE = Path("reports/baseline.json")
SHORTCUTS = Path("reports/shortcuts.json")
# Subcommands that load TensorFlow; the others (and --help) never import it.
TENSORFLOW_COMMANDS = {"tune", "train", "evaluate", "predict", "review"}


def _params(args: argparse.Namespace):
    from deepfake_audio.config.params import load_params

    return load_params(args.params)


def cmd_server(args: argparse.Namespace) -> int:
    """`server start|stop|status`; start also prints the link to the project's runs.

    MLflow 3's UI opens an experiment on its GenAI overview, with the training runs one
    click further: the printed link goes straight to the runs table. Any trouble getting
    the experiment's id costs only the link (the experiments list instead, on stdout: stderr
    stays for real warnings), never the start.
    """
    from deepfake_audio.ops import server

    root = Path(args.root)
    if args.action == "start":
        url = server.start(
            root=root,
            host=args.host,
            port=args.port,
            backend_store_uri=args.backend_store_uri,
            artifacts_destination=args.artifacts_destination,
            workers=args.workers,
            basic_auth=args.basic_auth,
            jobs=args.jobs,
        )
        print(f"MLflow tracking server: {url}  (stop: deepfake-audio server stop)")
        try:
            name = server.project_experiment_name(Path(args.params))
            link = server.runs_link(url, server.experiment_id(url, name))
            print(f"runs of experiment {name!r}: {link}")
        except UserError as exc:  # e.g. a basic-auth server and no credentials: not a fault
            print(f"experiments: {server.experiments_link(url)}  (no direct runs link: {exc})")
    elif args.action == "stop":
        print("stopped" if server.stop(root) else "no server was running from " + str(root))
    else:
        print(server.status(root=root, host=args.host, port=args.port))
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    from deepfake_audio.sources import list_clips
    from deepfake_audio.stages import dataset

    params = _params(args)
    clips = list_clips(params)
    summary = dataset.build(params, clips, Path(args.out), Path(args.reports))
    print(f"dataset: {summary['clips']} clips, {summary['rejected']} rejected -> {args.out}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from deepfake_audio.stages import baseline

    params = _params(args)
    report = baseline.run(params, Path(args.dataset), Path(args.out))
    if "skipped" in report:
        print(f"baseline skipped ({report['skipped']}) -> {args.out}")
    else:
        print(
            f"LFCC-GMM baseline test EER: {report['test_eer']:.2%}, "
            f"minDCF {report['test_min_dcf']:.4f} -> {args.out}"
        )
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from deepfake_audio.stages import tune as tuning

    params = _params(args)
    result = tuning.run(
        params, Path(args.dataset), Path(args.tuner_dir), Path(args.out), Path(args.params)
    )
    if result:  # a distributed chief or worker has no result of its own
        print(f"best {result['objective']}: {result['objective_value']:.4f} -> {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from deepfake_audio.stages import train as training

    params = _params(args)
    training.run(
        params, Path(args.dataset), Path(args.hparams), Path(args.model), Path(args.run_info)
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from deepfake_audio.scoring import reporting
    from deepfake_audio.stages import evaluate as evaluation

    params = _params(args)
    summary = evaluation.run(
        params,
        Path(args.dataset),
        Path(args.model),
        Path(args.run_info),
        Path(args.metrics),
        Path(args.plots),
        Path(args.baseline),
        Path(args.shortcuts),
    )
    note = " (synthetic demo corpus)" if summary.get("synthetic_demo_corpus") else ""
    print(f"test EER: {summary['test_eer']:.2%}{note}")
    print(reporting.comparison(summary))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from deepfake_audio.ops import tracking
    from deepfake_audio.stages import register as registry

    params = _params(args)
    run_info = read_json(Path(args.run_info), "the training run")
    summary = read_json(Path(args.metrics), "the evaluation metrics")
    tracking.connect(params.mlflow.experiment_name)
    result = registry.register(params, run_info, summary)
    registry.write_report(Path(args.out), result)
    print(
        f"registered {result['model_name']} version {result['version']} "
        f"aliases: {', '.join(result['aliases'])}"
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from deepfake_audio.ops import tracking
    from deepfake_audio.stages import register as registry

    params = _params(args)
    tracking.connect(params.mlflow.experiment_name)
    registry.promote(params, args.version, force=args.force)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from deepfake_audio.serving import predict as prediction

    # A registered or logged model carries its features and threshold: with --model
    # pointing at one, predict runs anywhere, with MLFLOW_TRACKING_URI alone.
    needs_project = args.model is None or Path(args.model).suffix == ".keras"
    params = _params(args) if needs_project or Path(args.params).is_file() else None
    if args.timeline:
        return prediction.run_timeline(
            params,
            args.inputs,
            args.model,
            args.format,
            args.hop,
            args.smooth,
            args.plot,
            timing=args.timing,
        )
    return prediction.run(params, args.inputs, args.model, args.format, timing=args.timing)


def cmd_review(args: argparse.Namespace) -> int:
    from deepfake_audio.serving import review

    needs_project = args.model is None or Path(args.model).suffix == ".keras"
    params = _params(args) if needs_project or Path(args.params).is_file() else None
    return review.serve(params, args.model, args.host, args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepfake-audio",
        description="Tune, train, evaluate and ship a CNN that detects spoofed speech "
        "(DVC stages + MLflow tracking).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--params", default="params.yaml", help="parameters file (default: %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("server", help="start, stop or check the local MLflow tracking server")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument(
        "--root", default="mlruns", help="store, artifacts, pid and log (default: %(default)s)"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default: %(default)s; any other warns: the API has no auth)",
    )
    p.add_argument("--port", type=int, default=None, help="default: $MLFLOW_PORT or 5000")
    p.add_argument(
        "--backend-store-uri",
        default=None,
        help="runs and registry, e.g. postgresql://mlflow@db/mlflow (default: <root>/mlflow.db)",
    )
    p.add_argument(
        "--artifacts-destination",
        default=None,
        help="artifact store, e.g. s3://bucket/mlflow (default: <root>/artifacts)",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="server processes (default: 1 for SQLite, else 4)"
    )
    p.add_argument(
        "--basic-auth",
        action="store_true",
        help="mlflow server --app-name basic-auth (needs MLFLOW_AUTH_ADMIN_PASSWORD and "
        "MLFLOW_FLASK_SERVER_SECRET_KEY; docs/team.md)",
    )
    p.add_argument(
        "--jobs",
        action="store_true",
        help="keep MLflow's job execution (GenAI jobs; about 8 more processes and 1.4 GB); "
        "off by default: the pipeline never uses it",
    )
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("dataset", help="stage 1: audio source -> versioned spectrogram dataset")
    p.add_argument("--out", default=str(DATASET))
    p.add_argument("--reports", default=str(REPORTS))
    p.set_defaults(func=cmd_dataset)

    p = sub.add_parser(
        "baseline", help="LFCC-GMM baseline on the dataset's splits (ASVspoof's classic)"
    )
    p.add_argument("--dataset", default=str(DATASET), help="the CNN's dataset: same clips")
    p.add_argument("--out", default=str(BASELINE))
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("tune", help="stage 2: keras-tuner search, one MLflow child run per trial")
    p.add_argument("--dataset", default=str(DATASET))
    p.add_argument("--tuner-dir", default=str(TUNER_DIR))
    p.add_argument("--out", default=str(HPARAMS))
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("train", help="stage 3: fit the best hyperparameters, log the model")
    p.add_argument("--dataset", default=str(DATASET))
    p.add_argument("--hparams", default=str(HPARAMS))
    p.add_argument("--model", default=str(MODEL))
    p.add_argument("--run-info", default=str(RUN_INFO))
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="stage 4: test EER, threshold from validation, plots")
    p.add_argument("--dataset", default=str(DATASET))
    p.add_argument("--model", default=str(MODEL))
    p.add_argument("--run-info", default=str(RUN_INFO))
    p.add_argument("--metrics", default=str(METRICS))
    p.add_argument("--plots", default=str(PLOTS))
    p.add_argument("--baseline", default=str(BASELINE), help="the baseline stage's report")
    p.add_argument("--shortcuts", default=str(SHORTCUTS), help="the dataset stage's shortcut audit")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("register", help="stage 5: registry version, challenger/champion aliases")
    p.add_argument("--run-info", default=str(RUN_INFO))
    p.add_argument("--metrics", default=str(METRICS))
    p.add_argument("--out", default=str(REGISTRY))
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("promote", help="point the champion alias at a version (rollback too)")
    p.add_argument("--version", type=int, required=True, help="registry version number")
    p.add_argument(
        "--force", action="store_true", help="promote even if worse by registry.promote_metric"
    )
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("predict", help="score audio files with a registered model")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    p.add_argument(
        "--model", default=None, help="model URI (default: models:/<registry.model_name>@champion)"
    )
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument(
        "--timing",
        action="store_true",
        help="print on stderr how long the model load and the scoring took (start-up apart)",
    )
    p.add_argument(
        "--timeline",
        action="store_true",
        help="score every window and report the fake time ranges (docs/serving.md)",
    )
    p.add_argument(
        "--hop",
        type=float,
        default=None,
        help="--timeline: seconds between windows "
        "(default: half the model's window, the windows the file score averages)",
    )
    p.add_argument(
        "--smooth",
        type=int,
        default=None,
        help="--timeline: running median over this many "
        "windows before the threshold (odd; default 3, 1 = none)",
    )
    p.add_argument("--plot", metavar="DIR", default=None, help="--timeline: a PNG per file here")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("review", help="a local web page to check one recording: verdict, timeline")
    p.add_argument(
        "--model", default=None, help="model URI (default: models:/<registry.model_name>@champion)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="bind address (default: %(default)s; it has no auth)"
    )
    p.add_argument("--port", type=int, default=8765, help="default: %(default)s")
    p.set_defaults(func=cmd_review)
    return parser


# MLflow 3's telemetry client sets and unsets _MLFLOW_TELEMETRY_SESSION_ID in os.environ
# from a background thread; on a machine that cannot reach its endpoint it gives up and
# unsets it while the stage's own request is iterating os.environ (requests reads proxy
# settings there). A fresh-clone `make demo` failed its evaluate stage with that KeyError
# on 2026-12-03. Off unless the user set MLFLOW_DISABLE_TELEMETRY themselves; CI never saw
# it because MLflow disables telemetry when $CI is set.
TELEMETRY_ENV = "MLFLOW_DISABLE_TELEMETRY"


def quiet_mlflow_telemetry() -> None:
    """Turn MLflow's telemetry off for this process and its children, before mlflow loads."""
    os.environ.setdefault(TELEMETRY_ENV, "true")


def main(argv: list[str] | None = None) -> int:
    quiet_mlflow_telemetry()
    args = build_parser().parse_args(argv)
    try:
        if args.command in TENSORFLOW_COMMANDS:
            from deepfake_audio.ops.runtime import import_tensorflow

            import_tensorflow()  # first, and quietly: no C++ start-up noise in the logs
        return args.func(args)
    except UserError as exc:
        print(f"deepfake-audio: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # A tracking server that went away mid-stage: one line, not MLflow's traceback.
        from deepfake_audio.ops import tracking

        if not tracking.is_unreachable(exc):
            raise
        message = tracking.unreachable(f"the {args.command} stage", "rerun it (`dvc repro`)")
        print(f"deepfake-audio: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepfake-audio: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
