"""Shared core of the aggregation-MSE figures (``mse_vs_nr``, ``mse_vs_power``).

One *point* of those figures is one instance variant; at each point the same beamforming
methods are run on a few channel draws and a few subcarriers, and the mean MSE per subcarrier
(spec 02 §2, the objective the solvers return divided by the number of subcarriers solved) is
recorded with the lower bounds of spec 02 §5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedopt.channel import draw_channel
from fedopt.figures._common import Progress, spawn_rng, subcarrier_subset, tick
from fedopt.instance import Instance
from fedopt.solvers.beamforming import solve_beamforming
from fedopt.solvers.bounds import single_device_bound
from fedopt.solvers.problem import BeamformingProblem

__all__ = ["METHODS", "LABELS", "BOUND_LABELS", "STYLE", "MSE_LABEL", "mse_point",
           "sweep", "base_instance"]

#: figure key → solve_beamforming method name
METHODS = {"manifold": "beamforming", "centroid": "centroid", "sdr": "sdr", "random": "random"}

LABELS = {
    "manifold": "manifold (Riemannian, sphere)",
    "centroid": "centroid (Grassmann)",
    "sdr": "SDR + 200 Gaussian randomizations",
    "random": "random receive beamformer",
}
BOUND_LABELS = {
    "best": "lower bound: max(SDR, single-device)",
    "single_device": "single-device bound",
}
#: colour, marker and line style per series (the same in every MSE figure)
STYLE = {
    "manifold": dict(color="C0", marker="o", ls="-"),
    "centroid": dict(color="C1", marker="s", ls="-"),
    "sdr": dict(color="C2", marker="^", ls="-"),
    "random": dict(color="C3", marker="v", ls="-"),
    "best": dict(color="black", marker="", ls="--"),
    "single_device": dict(color="0.45", marker="", ls=":"),
}
MSE_LABEL = "mean MSE$_m$ per subcarrier\n(dimensionless: error power / symbol power)"


def base_instance(**server: Any) -> Instance:
    """The ``default`` preset with one stream (L = 1, so that the SDR applies) and optional
    changes of the ``server`` section."""
    from fedopt.instance import load_instance

    inst = load_instance("default")
    d = inst.to_dict()
    return inst.replace(server={**d["server"], **server}, aircomp={"streams": [1]})


def mse_point(problem: BeamformingProblem, *, seed: int, key: Sequence[int],
              methods: Sequence[str], sdr_options: dict[str, Any] | None = None
              ) -> dict[str, float]:
    """Mean MSE per subcarrier of each method and of the bounds on one problem.

    Parameters
    ----------
    problem
        L = 1 beamforming problem (on the subcarriers to solve).
    seed, key
        Each method's generator is ``spawn_rng(seed, *key, i)`` (i: the method's index in
        :data:`METHODS`), so results do not depend on the order of the sweep.
    methods
        Keys of :data:`METHODS`; the SDR also gives the SDR lower bound.
    sdr_options
        Extra options of the SDR baseline (e.g. its cvxpy ``solvers``).

    Returns
    -------
    dict
        Method key → mean of MSE_m over the subcarriers; ``single_device`` (the bound of spec
        02 §5), ``sdr_bound`` (certified SDR value, when the SDR ran) and ``best`` (their
        per-subcarrier maximum).
    """
    m = problem.shape[1]
    out: dict[str, float] = {}
    single = single_device_bound(problem)
    best = single
    for i, key_name in enumerate(METHODS):
        if key_name not in methods:
            continue
        opts = dict(sdr_options or {}) if key_name == "sdr" else {}
        res = solve_beamforming(problem, METHODS[key_name], rng=spawn_rng(seed, *key, i),
                                **opts)
        out[key_name] = float(np.mean(res.objective_per_subcarrier))
        if key_name == "sdr":
            out["sdr_bound"] = float(res.terms["sdr_value"]) / m
            best = np.maximum(best, res.bound_per_subcarrier)
    out["single_device"] = float(np.mean(single))
    out["best"] = float(np.mean(best))
    return out


def sweep(instances: Sequence[Instance], *, seed: int, draws: int, subcarriers: int,
          methods: Sequence[str], progress: Progress | None = None,
          sdr_options: Sequence[dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """Run :func:`mse_point` on every instance and channel draw.

    Parameters
    ----------
    instances
        One instance per point of the x axis.
    seed
        Channel seed: draw d is ``draw_channel(instance, seed, round=d)``. The draw depends on
        the shapes and the path loss only, so instances that differ in power share their
        channels (common random numbers), and method d's generator is the same at every point.
    draws, subcarriers
        Channel draws per point and subcarriers solved per draw (spread over the band).
    methods
        Keys of :data:`METHODS`.
    progress
        ``progress({"done", "total"})`` after each (point, draw).
    sdr_options
        Per point: options of the SDR baseline.

    Returns
    -------
    dict
        ``mean``: series key → list over points of the mean over draws; ``per_draw``: series
        key → list over points of the per-draw values; ``subcarriers``: the indices solved.
    """
    total = len(instances) * draws
    keys = [*[k for k in METHODS if k in methods], "single_device", "best"]
    if "sdr" in methods:
        keys.insert(keys.index("single_device"), "sdr_bound")
    per_draw: dict[str, list[list[float]]] = {k: [] for k in keys}
    idx = subcarrier_subset(instances[0].n_subcarriers, subcarriers)
    step = 0
    for p, inst in enumerate(instances):
        rows: dict[str, list[float]] = {k: [] for k in keys}
        for d in range(draws):
            channel = draw_channel(inst, seed=seed, round=d)
            problem = BeamformingProblem.from_instance(inst, channel, 1).subproblem(idx)
            point = mse_point(problem, seed=seed, key=(d,), methods=methods,
                              sdr_options=None if sdr_options is None else sdr_options[p])
            for k in keys:
                rows[k].append(point[k])
            step += 1
            tick(progress, step, total)
        for k in keys:
            per_draw[k].append(rows[k])
    return {"mean": {k: [float(np.mean(v)) for v in per_draw[k]] for k in keys},
            "per_draw": per_draw, "subcarriers": [int(i) for i in idx]}


def ratio_axis(ax_r: Any, d: dict[str, Any], mse: dict[str, Any], title: str) -> None:
    """The right panel shared by the MSE figures: every method's mean MSE over the mean best
    lower bound, on a log axis with plain tick labels and room for the legend."""
    from fedopt.figures._common import plain_log_ticks

    ax_r.axhline(1.0, color="black", ls="--", lw=1.2, label="= best lower bound")
    ax_r.set_yscale("log")
    plain_log_ticks(ax_r.yaxis)
    top = max(v / b for key in d["methods"] for v, b in zip(mse[key], mse["best"], strict=True))
    ax_r.set_ylim(0.9, 3.0 * top)  # headroom above the curves for the legend
    ax_r.set_ylabel("mean MSE / mean best lower bound\n(ratio ≥ 1; 1 = certified optimal)")
    ax_r.set_title(title)


def sampling_note(d: dict[str, Any]) -> str:
    """"[quick mode, ]mean of D channel draw(s) × S of M subcarriers, seed s"."""
    mode = "quick mode, " if d["quick"] else ""
    return (f"{mode}mean of {d['draws']} channel draw(s) × {len(d['subcarriers'])} of "
            f"{d['n_subcarriers']} subcarriers, seed {d['seed']}")
