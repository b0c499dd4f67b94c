"""Aggregation MSE vs the number of receive antennas N_r (spec 02 §2, §4, §5).

Setting: the ``default`` preset (K = 20 four-antenna devices at 50–250 m, 23 dBm, M = 64
subcarriers at 30 kHz, 3GPP UMa path loss) with one stream per subcarrier (L = 1, so that the
SDR baseline and its bound apply) and the server's N_r swept. At each N_r, ``draws`` channel
draws (seed ``seed``, rounds 0..draws−1) are solved on ``subcarriers`` subcarriers spread over
the band (M stays 64, so the per-subcarrier power P_k / M and noise σ² are the preset's).

Plotted value: the **mean over the solved subcarriers and over the draws** of
MSE_m = f(A_m) (spec 02 §2, the objective the solvers return per subcarrier; dimensionless: the
error power relative to the unit symbol power) for the manifold solver, the centroid, SDR with
Gaussian randomization and a random receive beamformer, with the lower bounds of spec 02 §5:
the single-device bound and the best bound max(SDR value, single-device) per subcarrier. The
right panel shows each method's mean MSE divided by the mean best bound (≥ 1; 1 would certify
optimality).

Expected: every curve falls with N_r (spec 02 §6.8: more receive antennas never raise f*), the
manifold solver stays within tens of per cent of the bound while the centroid and random
beamformers fall behind as N_r grows (a random beamformer gains little from more antennas).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fedopt.figures import _mse
from fedopt.figures._common import Progress, figure_canvas, save_png, unwrap

__all__ = ["NAME", "TITLE", "compute", "plot"]

NAME = "mse_vs_nr"
TITLE = "Aggregation MSE vs receive antennas"

#: full mode: N_r values, channel draws, subcarriers per draw (≈ 1 min on 2 CPU cores)
FULL = {"n_rx": [2, 4, 8, 16, 32], "draws": 6, "subcarriers": 8}
#: quick mode (a few seconds; used by the tests)
QUICK = {"n_rx": [2, 4, 8], "draws": 2, "subcarriers": 2}
#: from this N_r on the SDR tries SCS before Clarabel (Clarabel's dense factorization costs
#: seconds per subcarrier at N_r = 32; the SDR bound is certified by weak duality either way)
SCS_FIRST_FROM_NR = 24


def compute(*, quick: bool = False, seed: int = 0, progress: Progress | None = None
            ) -> dict[str, Any]:
    """Mean MSE per subcarrier of each method and the bounds at each N_r.

    Parameters
    ----------
    quick
        Three N_r values, two draws, two subcarriers (seconds) instead of the full sweep.
    seed
        Channel seed (and the seed of every solver's generator).
    progress
        ``progress({"done", "total"})`` after each (N_r, draw).

    Returns
    -------
    dict
        JSON-safe: the setting (``n_rx``, ``draws``, ``subcarriers``, instance fields),
        ``mse[key]`` (list over N_r of the mean over draws) and ``mse_per_draw[key]`` (list over
        N_r of lists over draws) for ``key`` in ``methods`` and the bounds ``single_device``,
        ``sdr_bound``, ``best``.
    """
    cfg = QUICK if quick else FULL
    instances = [_mse.base_instance(n_rx=nr) for nr in cfg["n_rx"]]
    methods = list(_mse.METHODS)
    sdr_options = [{"solvers": ("SCS", "CLARABEL")} if nr >= SCS_FIRST_FROM_NR else None
                   for nr in cfg["n_rx"]]
    res = _mse.sweep(instances, seed=seed, draws=cfg["draws"], subcarriers=cfg["subcarriers"],
                     methods=methods, progress=progress, sdr_options=sdr_options)
    inst = instances[0]
    return {
        "name": NAME, "title": TITLE, "quick": bool(quick), "seed": int(seed),
        "instance": "default", "streams": 1, "n_devices": inst.n_devices, "n_tx": inst.n_tx,
        "p_max_dbm": float(inst.devices.p_max_dbm[0]), "n_subcarriers": inst.n_subcarriers,
        "statistic": "mean over solved subcarriers and channel draws",
        "n_rx": [int(x) for x in cfg["n_rx"]], "draws": cfg["draws"],
        "subcarriers": res["subcarriers"], "methods": methods,
        "mse": res["mean"], "mse_per_draw": res["per_draw"],
    }


def plot(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Left: mean MSE vs N_r (log–log); right: MSE / best lower bound vs N_r. Writes a PNG."""
    d = unwrap(data)
    nr = d["n_rx"]
    mse = d["mse"]
    with figure_canvas(2, width=6.2, height=5.0) as (fig, (ax, ax_r)):
        for key in d["methods"]:
            ax.plot(nr, mse[key], label=_mse.LABELS[key], **_mse.STYLE[key])
            ratio = [v / b for v, b in zip(mse[key], mse["best"], strict=True)]
            ax_r.plot(nr, ratio, label=f"{_mse.LABELS[key]} (max {max(ratio):.4f})",
                      **_mse.STYLE[key])
        for key in ("best", "single_device"):
            ax.plot(nr, mse[key], label=_mse.BOUND_LABELS[key], **_mse.STYLE[key])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(nr, [str(x) for x in nr])
        ax.set_xlabel(r"receive antennas $N_r$ (count, log scale)")
        ax.set_ylabel(_mse.MSE_LABEL)
        ax.set_title("MSE and lower bounds")
        ax.legend(loc="lower left")
        _mse.ratio_axis(ax_r, d, mse, "Distance to the lower bound")
        ax_r.set_xscale("log", base=2)
        ax_r.set_xticks(nr, [str(x) for x in nr])
        ax_r.set_xlabel(r"receive antennas $N_r$ (count, log scale)")
        ax_r.legend(loc="best")
        fig.suptitle(
            f"{TITLE}: K = {d['n_devices']} devices ({d['n_tx']} antennas, "
            f"{d['p_max_dbm']:g} dBm), L = 1 stream\n{_mse.sampling_note(d)}")
        return save_png(fig, path)
