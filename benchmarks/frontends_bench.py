"""`frontends.*`: the cost of Whisper's frozen encoder in the model, against tdnn on LFCC.

The question a user asks before switching `features.kind` to `whisper`: how much slower does
the detector train, and does a served clip still come back in time. Four detectors, built
side by side in this process from `params.yaml`'s features (a 2 s window at 16 kHz):

- `tdnn` on `lfcc` (the default detector; its features come from the shards, so a training
  step does not compute them);
- `whisper_head` and `whisper_tdnn` on `whisper` (`features.whisper`: tiny.en, block 1; the
  log-mel and the encoder run inside the model, in every training step and every request);
- `whisper_head_base_l3`: `whisper_head` on Whisper base after block 3 (`model: base`,
  `layers: 3`), the probe's best layer under leave-one-corpus-out (docs/frontends.md), a
  512-wide encoder three blocks deep: the cost of that choice.

Training samples/s: each model trains on random inputs of its own shape (the arithmetic of a
step does not depend on the numbers), epochs 2.. timed, the three in turn for `ROUNDS` rounds
(the order rotating), the median of every epoch a model had. Serving: `Detector.score` (what
the registered pyfunc and `deepfake-audio predict` run: decode, windows, features, the
compiled network) of one 2-4 s clip a call, base64 WAV, the three detectors interleaved clip by
clip after a discarded warm-up; p50 and p95 per clip. Untrained weights: the cost is the same.
Precomputed frames: each Whisper model's head is also trained alone, right after it in each
round, on inputs of the encoder's output shape - what frames stored in the shards would feed
it - so the speed-up that storing them would buy is measured, not guessed.
Ratios are formed within this run; the machine is shared, so read them rather than the rates.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import numpy as np

from benchmarks.architectures_bench import BATCH_SIZE, measure
from benchmarks.common import Figure, epoch_timer, log, median, spread
from benchmarks.corpus import Workspace
from benchmarks.serving_bench import clips

WHISPER_LAYERS = 1
TINY = {"model": "tiny.en", "layers": WHISPER_LAYERS}
BASE_L3 = {"model": "base", "layers": 3}
# (the figures' name, architecture, features.kind, hyperparameter values, features.whisper):
# the default detector, then Whisper's. The name is the architecture for the tiny.en entries
# (their figure keys as before this table held base).
PLAN: tuple[tuple[str, str, str, dict[str, Any], dict[str, Any] | None], ...] = (
    ("tdnn", "tdnn", "lfcc", {"channels": 128, "dense_units": 128}, None),
    ("whisper_head", "whisper_head", "whisper", {"hidden_units": 128, "dropout": 0.3}, TINY),
    (
        "whisper_tdnn",
        "whisper_tdnn",
        "whisper",
        {"channels": 64, "pooling": "attentive", "dropout": 0.3},
        TINY,
    ),
    (
        "whisper_head_base_l3",
        "whisper_head",
        "whisper",
        {"hidden_units": 128, "dropout": 0.3},
        BASE_L3,
    ),
)
BASELINE = "tdnn"
SAMPLES, QUICK_SAMPLES = 128, 16
EPOCHS, QUICK_EPOCHS = 3, 2
ROUNDS, QUICK_ROUNDS = 2, 1
SERVED_CLIPS, QUICK_SERVED_CLIPS = 60, 6
P50_TARGET_MS = 50.0  # issue 20: serving p50 stays under 50 ms a clip on this CPU


def _values(own: dict[str, Any]) -> dict[str, Any]:
    return {**own, "learning_rate": 1e-4, "optimizer": "adam"}


def _features_over(kind: str, arch: str, whisper: dict[str, Any] | None) -> dict[str, Any]:
    over: dict[str, Any] = {"features": {"kind": kind}, "model": {"architecture": arch}}
    if whisper is not None:
        over["features"]["whisper"] = dict(whisper)
    return over


def _label(kind: str, whisper: dict[str, Any] | None) -> str:
    """`lfcc`, or `whisper tiny.en L1`: what a figure's text says the model read."""
    return kind if whisper is None else f"{kind} {whisper['model']} L{whisper['layers']}"


def _training(ws: Workspace, samples: int, epochs: int, rounds: int) -> dict[str, dict]:
    """Every plan entry trained `rounds` times, the order rotating; its epochs' rates pooled;
    each Whisper entry's head also alone, right after it (`_head_alone`)."""
    rates: dict[str, list[float]] = {name: [] for name, *_ in PLAN}
    last: dict[str, dict] = {}
    heads: dict[str, dict] = {}
    for r in range(rounds):
        order = PLAN[r % len(PLAN) :] + PLAN[: r % len(PLAN)]
        for name, arch, kind, own, whisper in order:
            params = ws.params(_features_over(kind, arch, whisper))
            shape = params.features.input_shape
            log(
                f"frontends: training {name} ({arch} on {_label(kind, whisper)} {list(shape)}), "
                f"round {r + 1}/{rounds}"
            )
            result = measure(
                arch, shape, samples, epochs, values=_values(own), features=params.features
            )
            rates[name] += result["samples_per_second_per_epoch"]["runs"]
            last[name] = result
            if whisper is not None:
                log(f"frontends: training {name}'s head alone on precomputed-frame inputs")
                alone = _head_alone(arch, own, whisper, samples, epochs)
                heads.setdefault(name, {"rates": [], "input_shape": alone["input_shape"]})
                heads[name]["rates"] += alone["rates"]
    out = {name: {**last[name], "rates": rates[name]} for name in rates}
    for name, alone in heads.items():
        out[name]["head_alone"] = alone
    return out


def _head_alone(
    arch: str, own: dict[str, Any], whisper: dict[str, Any], samples: int, epochs: int
) -> dict[str, Any]:
    """`arch`'s head trained on what precomputed frames would feed it (random inputs of the
    encoder's output shape: 100 frames of d_model for 2 s - 384 for tiny.en, 512 for base -
    or their pooled 2 x d_model for a pooled head), no encoder in the step: the training
    speed storing frames would buy."""
    import keras

    from deepfake_audio.frontends import ctranslate2_weights
    from deepfake_audio.models import network

    frames = 100  # a 2 s clip: 50 encoder frames a second
    width = ctranslate2_weights.whisper_weights(whisper["model"]).d_model
    shape = (frames, width) if arch in network.FRAME_HEADS else (2 * width,)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((samples, *shape)).astype(np.float32)
    y = rng.integers(0, 2, size=(samples, 1)).astype(np.float32)
    inputs = keras.Input(shape)
    body = network.ARCHITECTURES[arch](_values(own), inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, dtype="float32")(body))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    timer = epoch_timer()
    model.fit(
        x, y, batch_size=min(BATCH_SIZE, samples), epochs=epochs, callbacks=[timer], verbose=0
    )
    timed = timer.seconds[1:] if len(timer.seconds) > 1 else timer.seconds
    del model
    keras.backend.clear_session()
    return {"rates": [samples / t for t in timed], "input_shape": list(shape)}


def _detectors(ws: Workspace) -> dict[str, Any]:
    """The models behind the serving code's Detector (threads as a served model's)."""
    import keras

    from deepfake_audio.models import network
    from deepfake_audio.serving import pyfunc as serving
    from deepfake_audio.serving.inference import configure_threads

    configure_threads()
    detectors = {}
    for name, arch, kind, own, whisper in PLAN:
        params = ws.params(_features_over(kind, arch, whisper))
        fp = params.features
        rows = fp.input_shape[0] if len(fp.input_shape) == 3 else 1
        zero, one = np.zeros(rows, np.float32), np.ones(rows, np.float32)
        keras.utils.set_random_seed(0)
        model = network.build(
            _values(own), arch, fp.input_shape, zero, one, fp.feature_kind.norm_axis, features=fp
        )
        config = serving.make_config(params.section("features"), threshold=0.0)
        detectors[name] = serving.Detector(model, config)
    return detectors


def _serving(ws: Workspace, n_clips: int) -> tuple[dict[str, list[float]], str, int]:
    import pandas as pd

    sources, which = clips(ws.root / "frontends" / "clips")
    rows = [
        pd.DataFrame({"audio_base64": [base64.b64encode(p.read_bytes()).decode()]})
        for p in sources[:n_clips]
    ]
    detectors = _detectors(ws)
    names = list(detectors)
    for name in names:  # warm-up: the first calls trace and allocate
        for frame in rows[:3]:
            detectors[name].score(frame)
    times: dict[str, list[float]] = {name: [] for name in names}
    windows = 0
    for i, frame in enumerate(rows):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            out = detectors[name].score(frame)
            times[name].append((time.perf_counter() - started) * 1000)
            if out["error"][0]:
                raise RuntimeError(f"{name} could not score {sources[i]}: {out['error'][0]}")
        windows += int(out["windows"][0])
    return times, which, windows


def run(ws: Workspace) -> list[Figure]:
    import keras

    quick = ws.quick
    samples = QUICK_SAMPLES if quick else SAMPLES
    epochs = QUICK_EPOCHS if quick else EPOCHS
    rounds = QUICK_ROUNDS if quick else ROUNDS
    n_clips = QUICK_SERVED_CLIPS if quick else SERVED_CLIPS
    load_start = [round(x, 2) for x in os.getloadavg()]
    train = _training(ws, samples, epochs, rounds)
    serve, which, windows = _serving(ws, n_clips)
    common = {
        "keras_backend": keras.backend.backend(),
        "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
        "note": (
            "a shared machine: other jobs ran beside this one; the ratios (formed in this run, "
            "interleaved) carry over, the absolute rates less so"
        ),
    }
    figures: list[Figure] = []
    base_rate = median(train[BASELINE]["rates"])
    base_p50 = median(serve[BASELINE])
    for name, arch, kind, own, whisper in PLAN:
        r = train[name]
        rate = median(r["rates"])
        details = {
            **common,
            "architecture": arch,
            "features_kind": kind,
            "whisper": whisper,
            "values": _values(own),
            "input_shape": r["input_shape"],
            "trainable_params": r["trainable_params"],
            "samples_per_second": spread(r["rates"]),
            "batch_size": min(BATCH_SIZE, samples),
            "samples_per_epoch": samples,
        }
        figures.append(
            Figure(
                key=f"frontends.train_samples_per_second.{name}",
                value=rate,
                unit="training samples/s",
                repeats=len(r["rates"]),
                compared=(
                    f"{arch} on {_label(kind, whisper)} {r['input_shape']}, {samples} random "
                    "clips an epoch, "
                    f"epochs 2..{epochs} of {rounds} round(s), the models in turn"
                ),
                details=details,
            )
        )
        p50 = median(serve[name])
        served = {
            **common,
            "architecture": arch,
            "whisper": whisper,
            "ms_per_clip": spread(serve[name]),
            "p95_ms": float(np.percentile(serve[name], 95)),
            "clips": which,
            "windows_scored": windows,
            "how": (
                "Detector.score of a one-row DataFrame (one 2-4 s clip, base64 WAV): decode, "
                "2 s windows at hop 1 s, features, the compiled network; the detectors "
                "interleaved clip by clip after 3 warm-up clips each"
            ),
        }
        figures.append(
            Figure(
                key=f"frontends.serving_p50_ms.{name}",
                value=p50,
                unit="ms a clip",
                repeats=len(serve[name]),
                compared=(
                    f"median time to score one 2-4 s clip with {arch} on "
                    f"{_label(kind, whisper)}, in process"
                ),
                target=f"<= {P50_TARGET_MS:g}" if whisper is not None else None,
                details=served,
            )
        )
        if name != BASELINE:
            figures.append(
                Figure(
                    key=f"frontends.train_slowdown_vs_tdnn_lfcc.{name}",
                    value=base_rate / rate,
                    unit="x (tdnn on lfcc samples/s over this one's)",
                    repeats=min(len(r["rates"]), len(train[BASELINE]["rates"])),
                    compared=f"frontends.train_samples_per_second.{BASELINE} / ...{name}",
                )
            )
            figures.append(
                Figure(
                    key=f"frontends.serving_p50_ratio_vs_tdnn_lfcc.{name}",
                    value=p50 / base_p50,
                    unit="x (this p50 over tdnn on lfcc's)",
                    repeats=len(serve[name]),
                    compared=f"frontends.serving_p50_ms.{name} / ...{BASELINE}, same clips",
                )
            )
    for name, arch, _, _, whisper in PLAN:
        if whisper is None:
            continue
        full, alone = train[name]["rates"], train[name]["head_alone"]["rates"]
        figures.append(
            Figure(
                key=f"frontends.precomputed_frames_speedup.{name}",
                value=median(alone) / median(full),
                unit="x (training samples/s, head alone over encoder in the model)",
                repeats=min(len(alone), len(full)),
                compared=(
                    f"{arch}'s head trained on inputs of the encoder's output shape "
                    f"{train[name]['head_alone']['input_shape']} (what frames stored in the "
                    "shards would feed it) over the whole model on raw samples, same rounds"
                ),
                details={
                    **common,
                    "whisper": whisper,
                    "head_alone_samples_per_second": spread(alone),
                    "with_encoder_samples_per_second": spread(full),
                    "epoch_seconds_500_clips_of_2s_with_encoder": round(500 / median(full), 1),
                    "epoch_seconds_500_clips_of_2s_head_alone": round(500 / median(alone), 1),
                },
            )
        )
    return figures
