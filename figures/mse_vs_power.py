"""Aggregation MSE vs device transmit power (spec 02 §2, §6.8: f* ∝ 1/P).

Setting: the ``default`` preset (K = 20 four-antenna devices at 50–250 m, N_r = 16, M = 64
subcarriers at 30 kHz) with one stream (L = 1, so the SDR applies) and the transmit power of
every device swept together. The channel draw does not depend on the power, so every power
sees the same ``draws`` channels (seed ``seed``, rounds 0..draws−1) and every method the same
generator (common random numbers); ``subcarriers`` subcarriers spread over the band are solved.

Plotted value: the mean over the solved subcarriers and the draws of MSE_m = f(A_m)
(dimensionless, relative to the unit symbol power) for the manifold solver, the centroid, SDR
with Gaussian randomization and a random beamformer, and the lower bounds of spec 02 §5.

Why the lines are straight: with a common power scale P_k = a·P_k⁰, f(A) = σ²‖A‖² max_k
φ_k² tr((A^H G_k A)^{-1}) / P_k is exactly f⁰(A)/a for every A, so the optimum, the bounds and
any beamformer that does not look at the power (random, centroid) scale as 1/P: slope −1 on
log–log axes, i.e. one decade of MSE per 10 dB. The fitted slopes (least squares of
log10 MSE on log10 P) are stored in ``slopes``; the scale-invariant solvers reproduce −1 to
solver accuracy, which is the check this figure makes. The right panel (MSE / bound) is flat
for the same reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.figures import _mse
from fedopt.figures._common import Progress, figure_canvas, save_png, unwrap

__all__ = ["NAME", "TITLE", "compute", "plot", "fitted_slope"]

NAME = "mse_vs_power"
TITLE = "Aggregation MSE vs device transmit power"

#: full mode: powers (dBm, one per decade), draws, subcarriers per draw (≈ 45 s on 2 cores)
FULL = {"p_dbm": [-10.0, 0.0, 10.0, 20.0, 30.0], "draws": 4, "subcarriers": 8}
#: quick mode (a few seconds; used by the tests)
QUICK = {"p_dbm": [0.0, 10.0, 20.0], "draws": 1, "subcarriers": 2}
#: receive antennas (the preset's)
N_RX = 16


def fitted_slope(p_dbm: list[float], values: list[float]) -> float:
    """Least-squares slope of log10(value) on log10(P / 1 W): −1 for value ∝ 1/P."""
    x = (np.asarray(p_dbm, dtype=float) - 30.0) / 10.0
    return float(np.polyfit(x, np.log10(np.asarray(values, dtype=float)), 1)[0])


def compute(*, quick: bool = False, seed: int = 0, progress: Progress | None = None
            ) -> dict[str, Any]:
    """Mean MSE per subcarrier of each method and the bounds at each transmit power.

    Parameters
    ----------
    quick
        Three powers, one draw, two subcarriers (seconds) instead of the full sweep.
    seed
        Channel seed (and the seed of every solver's generator).
    progress
        ``progress({"done", "total"})`` after each (power, draw).

    Returns
    -------
    dict
        JSON-safe: the setting, ``p_dbm``, ``mse[key]`` and ``mse_per_draw[key]`` as in
        :func:`figures.mse_vs_nr.compute`, and ``slopes[key]``, the fitted log–log slope of
        each series (−1 expected).
    """
    cfg = QUICK if quick else FULL
    base = _mse.base_instance(n_rx=N_RX)
    instances = [base.with_devices(p_max_dbm=float(p)) for p in cfg["p_dbm"]]
    methods = list(_mse.METHODS)
    res = _mse.sweep(instances, seed=seed, draws=cfg["draws"], subcarriers=cfg["subcarriers"],
                     methods=methods, progress=progress)
    p_dbm = [float(p) for p in cfg["p_dbm"]]
    return {
        "name": NAME, "title": TITLE, "quick": bool(quick), "seed": int(seed),
        "instance": "default", "streams": 1, "n_devices": base.n_devices, "n_tx": base.n_tx,
        "n_rx": N_RX, "n_subcarriers": base.n_subcarriers,
        "statistic": "mean over solved subcarriers and channel draws",
        "p_dbm": p_dbm, "draws": cfg["draws"], "subcarriers": res["subcarriers"],
        "methods": methods, "mse": res["mean"], "mse_per_draw": res["per_draw"],
        "slopes": {k: fitted_slope(p_dbm, v) for k, v in res["mean"].items()},
    }


def plot(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Left: mean MSE vs power (dBm, log MSE) with a 1/P reference; right: MSE / best bound.
    Writes a PNG."""
    d = unwrap(data)
    p = np.asarray(d["p_dbm"])
    mse, slopes = d["mse"], d["slopes"]
    with figure_canvas(2, width=6.2, height=5.0) as (fig, (ax, ax_r)):
        for key in d["methods"]:
            label = f"{_mse.LABELS[key]} (slope {slopes[key]:+.3f})"
            ax.plot(p, mse[key], label=label, **_mse.STYLE[key])
            ratio = [v / b for v, b in zip(mse[key], mse["best"], strict=True)]
            ax_r.plot(p, ratio, label=f"{_mse.LABELS[key]} (max {max(ratio):.4f})",
                      **_mse.STYLE[key])
        for key in ("best", "single_device"):
            ax.plot(p, mse[key], label=f"{_mse.BOUND_LABELS[key]} (slope {slopes[key]:+.3f})",
                    **_mse.STYLE[key])
        # reference ∝ 1/P through the random beamformer's first point, shifted up ×2 so it
        # does not hide the data
        ref = 2.0 * mse["random"][0] * 10.0 ** (-(p - p[0]) / 10.0)
        ax.plot(p, ref, color="0.6", lw=1.0, ls="-.",
                label=r"reference $\propto 1/P$ (slope $-1$: one decade per 10 dB)")
        ax.set_yscale("log")
        ax.set_xticks(p)
        ax.set_xlabel(r"device transmit power $P_k$ (dBm, all devices; 10 dB = 1 decade)")
        ax.set_ylabel(_mse.MSE_LABEL)
        ax.set_title("MSE and lower bounds (log–log)")
        ax.legend(loc="lower left")
        _mse.ratio_axis(ax_r, d, mse, "Distance to the lower bound (flat: f ∝ 1/P)")
        ax_r.set_xticks(p)
        ax_r.set_xlabel(r"device transmit power $P_k$ (dBm)")
        ax_r.legend(loc="best")
        fig.suptitle(
            f"{TITLE}: K = {d['n_devices']} devices ({d['n_tx']} antennas), "
            f"$N_r$ = {d['n_rx']}, L = 1 stream\n{_mse.sampling_note(d)}")
        return save_png(fig, path)
