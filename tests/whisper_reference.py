"""Whisper's encoder in plain numpy (float64): the reference the Keras port is checked against.

Written from OpenAI's whisper/audio.py and whisper/model.py, independently of
deepfake_audio.frontends.whisper: numpy's FFT instead of a convolution with a DFT kernel,
librosa's mel filters (Whisper's mel_filters.npz is librosa.filters.mel(sr=16000, n_fft=400,
n_mels=80)), scipy's erf for the exact GELU. The same code matched CTranslate2's own Whisper
encoder to 1.9e-5 (issue 20). Only the weights are shared: read by the project's reader.

Run as a script it rewrites tests/data/whisper_tiny_en_reference.npz (the stored reference
test_whisper_frontend.py compares both against); a change there is a change of the reference
and must be argued in the commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.special import erf

REFERENCE = Path(__file__).parent / "data" / "whisper_tiny_en_reference.npz"
CLIP_SEED, CLIP_SECONDS, SAMPLE_RATE = 20, 1.0, 16000
DEPTHS = (0, 1, 2, 4)  # the stem alone, after blocks 1 and 2, the whole encoder (final norm)
EDGE_FRAMES = 8  # the stored frames: the first and the last 8 of each depth (50 in all)


def clip() -> np.ndarray:
    """The fixed 1.0 s clip: conftest's voiced test signal, seed 20."""
    if str(Path(__file__).parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).parent))
    from conftest import voice

    return voice(CLIP_SEED, CLIP_SECONDS, SAMPLE_RATE)


def encoder_tensors() -> dict[str, np.ndarray]:
    """The pinned tiny.en's encoder tensors as stored (float16; num_heads int16), read by the
    project's reader from the installed, hash-checked file."""
    from deepfake_audio.frontends import ctranslate2_weights

    _, paths = ctranslate2_weights.locate("tiny.en")
    return ctranslate2_weights.read(paths, prefix="encoder/").tensors


def log_mel(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """(samples,) -> (samples // 160, n_mels), Whisper's log_mel_spectrogram without the
    30 s padding (the floor is the clip's own maximum - 8)."""
    import librosa

    n_fft, hop = 400, 160
    x = np.pad(np.asarray(audio, np.float64), n_fft // 2, mode="reflect")
    frames = 1 + (len(x) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = np.hanning(n_fft + 1)[:-1]  # periodic, torch.hann_window
    power = np.abs(np.fft.rfft(x[index] * window, axis=1)) ** 2
    power = power[:-1]  # whisper: stft[..., :-1]
    filters = librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=n_mels).astype(np.float64)
    spec = np.log10(np.maximum(power @ filters.T, 1e-10))
    spec = np.maximum(spec, spec.max() - 8.0)
    return (spec + 4.0) / 4.0


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _layer_norm(x: np.ndarray, t: dict, prefix: str) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * t[prefix + "/gamma"] + t[prefix + "/beta"]


def _conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """(frames, in) -> (out_frames, out), PyTorch's Conv1d(kernel 3, padding 1, stride)."""
    x = np.pad(x, ((1, 1), (0, 0)))
    out_frames = (len(x) - 3) // stride + 1
    taps = np.stack([x[k : k + stride * (out_frames - 1) + 1 : stride] for k in range(3)], 1)
    return np.einsum("fki,oik->fo", taps, weight, optimize=True) + bias  # weight (out, in, kernel)


def encode(mel: np.ndarray, tensors: dict, depths=DEPTHS) -> dict[int, np.ndarray]:
    """The log-mel -> {depth: (frames, d_model)} after the stem and each block in `depths`
    (the final LayerNorm after the last of all blocks, as Whisper)."""
    t = {k: np.asarray(v, np.float64) for k, v in tensors.items() if k != "encoder/num_heads"}
    heads = int(tensors["encoder/num_heads"])
    n_layers = sum(1 for k in t if k.endswith("/self_attention/linear_1/weight"))
    x = _gelu(_conv1d(mel, t["encoder/conv1/weight"], t["encoder/conv1/bias"], 1))
    x = _gelu(_conv1d(x, t["encoder/conv2/weight"], t["encoder/conv2/bias"], 2))
    x = x + t["encoder/position_encodings/encodings"][: len(x)]
    out = {0: x} if 0 in depths else {}
    d = x.shape[1]
    for i in range(max(depths)):
        p = f"encoder/layer_{i}/"
        h = _layer_norm(x, t, p + "self_attention/layer_norm")
        qkv = h @ t[p + "self_attention/linear_0/weight"].T + t[p + "self_attention/linear_0/bias"]
        q, k, v = (qkv[:, j * d : (j + 1) * d].reshape(len(x), heads, -1) for j in range(3))
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d // heads)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = np.einsum("hqk,khd->qhd", scores, v).reshape(len(x), d)
        x = x + context @ t[p + "self_attention/linear_1/weight"].T
        x = x + t[p + "self_attention/linear_1/bias"]
        h = _layer_norm(x, t, p + "ffn/layer_norm")
        h = _gelu(h @ t[p + "ffn/linear_0/weight"].T + t[p + "ffn/linear_0/bias"])
        x = x + h @ t[p + "ffn/linear_1/weight"].T + t[p + "ffn/linear_1/bias"]
        if i + 1 in depths:
            out[i + 1] = _layer_norm(x, t, "encoder/layer_norm") if i + 1 == n_layers else x
    return out


def stored_view(frames: np.ndarray) -> dict[str, np.ndarray]:
    """What the file keeps of one depth's (frames, d) output: the first and last EDGE_FRAMES
    frames, and every dimension's mean and standard deviation over all frames (float32)."""
    return {
        "edges": np.concatenate([frames[:EDGE_FRAMES], frames[-EDGE_FRAMES:]]).astype(np.float32),
        "mean": frames.mean(0).astype(np.float32),
        "std": frames.std(0).astype(np.float32),
    }


def reference(tensors: dict) -> dict[str, np.ndarray]:
    """The stored reference's arrays, computed now."""
    audio = clip()
    out = encode(log_mel(audio), tensors)
    arrays = {"clip_sha256_prefix": np.frombuffer(_digest(audio)[:8], np.uint8)}
    for depth, frames in out.items():
        arrays.update({f"depth{depth}_{k}": v for k, v in stored_view(frames).items()})
    return arrays


def _digest(audio: np.ndarray) -> bytes:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(audio, np.float32).tobytes()).digest()


if __name__ == "__main__":
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, **reference(encoder_tensors()))
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")
