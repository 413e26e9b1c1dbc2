"""AASIST-L (`model.architecture: aasist_l`), AASIST's published light configuration.

The same network as `models/aasist.py` (its layers, and the parameter count table there) with
narrower residual blocks and graph layers: 85k parameters against 297k (Jung et al. 2022,
`config/AASIST-L.conf` of `clovaai/aasist`).
"""

from __future__ import annotations

from typing import Any

import keras

from deepfake_audio.models.aasist import CONFIGS, body

# The feature kind it takes: the raw waveform.
INPUTS = ("waveform",)
SEARCH_SPACE: dict[str, Any] = {
    # The reference trains with Adam at 1e-4 (cosine-annealed to 5e-6).
    "learning_rate": {"min": 5.0e-5, "max": 1.0e-3, "sampling": "log"},
    "optimizer": ["adam"],
    # Dropout on the readout (5 x 32 features) before the logit; the reference uses 0.5.
    "dropout": [0.3, 0.5],
}


def aasist_l(values: dict[str, Any], inputs: keras.KerasTensor) -> keras.KerasTensor:
    """AASIST-L, the published 85k-parameter light configuration, on a (samples, 1) waveform."""
    return body(CONFIGS["AASIST-L"], inputs, values["dropout"])
