"""DET curves on normal-deviate axes, as ASVspoof draws them: the axis helpers that every
DET plot of the project (the test split's, each held-out corpus's) shares."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

# DET rates are clipped to [DET_CLIP, 1 - DET_CLIP] before the probit: 0 and 1 map to
# -3.72 / +3.72 normal deviates (0.01 % / 99.99 %) instead of infinities.
DET_CLIP = 1e-4
# Tick marks of the DET figure, as rates (shown as percentages on normal-deviate axes).
DET_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99)


def probit(rates: ArrayLike) -> np.ndarray:
    """Normal deviates of rates (the DET axes), clipped to [DET_CLIP, 1 - DET_CLIP] first."""
    from scipy.special import ndtri

    return ndtri(np.clip(np.asarray(rates, dtype=np.float64), DET_CLIP, 1.0 - DET_CLIP))


def percent(rate: float) -> str:
    """A tick label: 0.05 -> '5 %'."""
    return f"{100.0 * rate:g} %"


def set_det_axes(ax: object) -> None:
    """Normal-deviate ticks labelled in percent, limits 0.05 % to 99.95 %, a grid (matplotlib)."""
    ticks = [t for t in DET_TICKS if DET_CLIP <= t <= 1 - DET_CLIP]
    limits = probit(np.array([0.0005, 0.9995]))
    for axis in (ax.xaxis, ax.yaxis):  # type: ignore[attr-defined]
        axis.set_ticks(probit(np.array(ticks)), labels=[percent(t) for t in ticks])
    ax.set(  # type: ignore[attr-defined]
        xlim=limits,
        ylim=limits,
        xlabel="false alarm rate (spoof accepted)",
        ylabel="miss rate (bona fide rejected)",
    )
    ax.tick_params(axis="x", labelrotation=90)  # type: ignore[attr-defined]
    ax.grid(True, linewidth=0.4)  # type: ignore[attr-defined]
