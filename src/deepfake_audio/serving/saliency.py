"""Which parts of a clip's features drove its score: gradient saliency, and its picture.

The map is the gradient of the bona fide logit with respect to the model's input features,
`d logit / d x`, one backward pass per batch of clips (Keras 3 on TensorFlow:
`tf.GradientTape`; core/backend.py). Chosen over occlusion because it needs no audio:
the evaluate stage holds the test clips as features (the dataset's shards), not as
recordings, and a gradient is computed on exactly what the model saw, for every feature
kind, in one pass where occlusion needs one forward pass per patch. Its limits: a
gradient is local (how the score moves for a small change, not what removing a region
would do) and noisy, so the picture smooths it slightly and shows magnitude and sign.

Sign: the gradient of the *bona fide* logit. Where it is negative, more energy there
(higher feature values) makes the clip look more fake; where positive, more genuine.
The picture shows `gradient * (x - mean over time of x)` - the gradient weighted by how far
each value stands from the clip's own level - so a region counts where the model is
sensitive *and* the clip has something there (gradient x input; with the row's mean as
the reference, a constant offset of a row, e.g. loudness in c0, counts for nothing).

What it is drawn over is the model's input as a picture: a log-mel spectrogram for
`features.kind: logmel` (time by mel band), the LFCC matrix for `lfcc` (time by cepstral
coefficient, then deltas: rows are not frequencies there), the image for picture models.
A waveform model's map is over samples, drawn as a curve.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Clips per attack group the evaluate stage draws: the most confidently right and wrong.
PER_GROUP = 1


def gradients(model: Any, inputs: np.ndarray) -> np.ndarray:
    """`d bona fide logit / d inputs` for a batch (n, *input_shape), float32.

    Raises ValueError off the TensorFlow backend (the project's; core/backend.py).
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"saliency needs Keras' TensorFlow backend, not {keras.backend.backend()}")
    from deepfake_audio.core.backend import import_tensorflow

    tf = import_tensorflow()
    x = tf.constant(np.asarray(inputs, dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(model(x, training=False), tf.float32)
        total = tf.reduce_sum(logits)  # rows are independent: each row's own gradient
    return np.asarray(tape.gradient(total, x).numpy(), dtype=np.float32)


def attribution(features: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """gradient x (features - each row's mean over time), as a 2-D map (rows, frames)."""
    x = np.asarray(features, dtype=np.float32)
    g = np.asarray(gradient, dtype=np.float32)
    if x.ndim == 3 and x.shape[-1] == 1:  # (rows, frames, 1): spectral inputs
        x, g = x[..., 0], g[..., 0]
    elif x.ndim == 3:  # pictures (h, w, 3): summed over the colours
        return (g * (x - x.mean(axis=(0, 1), keepdims=True))).sum(axis=-1)
    elif x.ndim == 2 and x.shape[-1] == 1:  # waveform (samples, 1)
        x, g = x[:, 0][None, :], g[:, 0][None, :]
    return g * (x - x.mean(axis=-1, keepdims=True))


def pick(
    scores: np.ndarray,
    targets: np.ndarray,
    attacks: np.ndarray,
    threshold: float,
    per_group: int = PER_GROUP,
) -> list[tuple[int, str, str]]:
    """Test clips to explain: `(index, group, "right" | "wrong")`, a few per attack.

    Per group (each attack, and bona fide "-"): the `per_group` clips the served decision
    got right with the largest margin from the threshold, and the `per_group` it got wrong
    with the largest margin (none when it got none wrong). Scores are bona fide logits;
    a clip is called bona fide above `threshold`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets).astype(int)
    attacks = np.asarray(attacks).astype(str)
    margin = (scores - threshold) * np.where(targets == 1, 1.0, -1.0)  # > 0: right
    chosen: list[tuple[int, str, str]] = []
    for group in sorted(set(attacks.tolist())):
        members = np.flatnonzero(attacks == group)
        order = members[np.argsort(-margin[members], kind="stable")]
        right = [i for i in order if margin[i] > 0][:per_group]
        wrong = [i for i in order[::-1] if margin[i] <= 0][:per_group]
        chosen += [(int(i), group, "right") for i in right]
        chosen += [(int(i), group, "wrong") for i in wrong]
    return chosen


def figure(features: np.ndarray, saliency: np.ndarray, kind: str, title: str = "") -> Any:
    """The input picture with the saliency over it: a matplotlib Figure (Agg).

    Left/top: the features (grey). Over them, the attribution in a diverging map,
    transparent where it is small: red where it pushed towards fake (negative for the bona
    fide logit), blue towards genuine. Below: the same summed over rows, per frame.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    x = np.asarray(features, dtype=np.float32)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    elif x.ndim == 3:
        x = x.mean(axis=-1)
    elif x.ndim == 2 and x.shape[-1] == 1:
        x = x[:, 0][None, :]
    s = np.asarray(saliency, dtype=np.float64)
    if s.ndim == 2 and s.shape[0] > 1 and s.shape[1] > 8:
        from scipy.ndimage import gaussian_filter

        s = gaussian_filter(s, sigma=(0.7, 1.5))
    scale = float(np.max(np.abs(s))) or 1.0
    fig = Figure(figsize=(7, 4.2), dpi=100)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    if x.shape[0] > 1:
        # Each row on its own scale: LFCC's c0 (the level) would flatten every other row.
        shown = (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-6)
        top.imshow(shown, origin="lower", aspect="auto", cmap="gray_r", interpolation="nearest")
        from matplotlib.colors import LinearSegmentedColormap

        # Red = towards fake (negative gradient of the bona fide logit), blue = genuine;
        # transparent at zero so the features show through.
        cmap = LinearSegmentedColormap.from_list(
            "saliency",
            [
                (0.0, (0.84, 0.15, 0.16, 0.85)),
                (0.5, (1, 1, 1, 0.0)),
                (1.0, (0.12, 0.35, 0.8, 0.85)),
            ],
        )
        top.imshow(
            s,
            origin="lower",
            aspect="auto",
            cmap=cmap,
            vmin=-scale,
            vmax=scale,
            interpolation="bilinear",
        )
        top.set_ylabel(
            {"logmel": "mel band", "lfcc": "LFCC, deltas, double deltas"}.get(kind, "row")
        )
    else:
        top.plot(x[0], color="#4a6fa5", lw=0.5)
        top.set_ylabel("sample")
    per_frame = s.sum(axis=0)
    frames = np.arange(per_frame.size)
    bottom.fill_between(frames, 0, np.minimum(per_frame, 0), color="#d62728", lw=0)
    bottom.fill_between(frames, 0, np.maximum(per_frame, 0), color="#1f5bcc", lw=0)
    bottom.axhline(0, color="#444444", lw=0.5)
    bottom.set_yticks([])
    bottom.set_ylabel("per frame")
    bottom.set_xlabel("frame" if kind != "image" else "column")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def log_examples(
    model: Any,
    data: Any,
    scores: np.ndarray,
    threshold: float,
    per_group: int = PER_GROUP,
) -> int:
    """The evaluate stage's pictures: `pick`'s test clips, logged to the active MLflow run
    under `evaluation/saliency/<attack>_<right|wrong>_<clip_id>.png`; returns how many.

    Reads only the chosen clips' rows from the shards (memory-mapped).
    """
    import mlflow

    manifest = data.manifest("test")
    chosen = pick(
        scores,
        manifest["target"].to_numpy(),
        manifest["attack"].astype(str).to_numpy(),
        threshold,
        per_group,
    )
    if not chosen:
        return 0
    shards = data.shards("test")
    rows = []
    for index, _, _ in chosen:
        entry = manifest.iloc[index]
        stored = np.load(shards[int(entry["shard"])], mmap_mode="r")[int(entry["row"])]
        rows.append(data.as_features(np.asarray(stored)).reshape(data.input_shape))
    inputs = np.stack(rows)
    grads = gradients(model, inputs)
    kind = data.features.kind
    for (index, group, verdict), x, g in zip(chosen, inputs, grads, strict=True):
        entry = manifest.iloc[index]
        label = "bona fide" if int(entry["target"]) == 1 else f"spoof {group}"
        title = (
            f"{entry['clip_id']} ({label}): score {scores[index]:+.2f}, threshold "
            f"{threshold:+.2f}, {verdict}"
        )
        fig = figure(x, attribution(x, g), kind, title)
        group_name = "bonafide" if group == "-" else group
        name = f"evaluation/saliency/{group_name}_{verdict}_{entry['clip_id']}.png"
        mlflow.log_figure(fig, name)
    return len(chosen)
