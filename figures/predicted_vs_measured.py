"""Figure (f): the predicted gap against the measured held-out loss, over a grid of plans.

The ``char-tasks`` preset (domain-shift testbed, calibrated constants) at several device powers:
every (rank, streams) of the grid is planned (manifold receive beamformers on each seed's
channel) and run through the federated loop (receive beamformers re-optimized per round). Each
point is one configuration: x its predicted gap, y its measured final held-out loss (mean over
seeds, bars ± one sd); colour the power, marker the streams. Left with the calibrated
constants, right with the nominal defaults; Spearman's ρ in each title
(:func:`fedopt.solvers.validation.predictive.spearman`). The data are those of
``python -m benchmarks.predictive`` (:func:`~fedopt.solvers.validation.predictive.predictive_grid`).

Full: powers −25, −35, −40, −45 dBm × ranks 4, 16, 32 × streams 1, 2, seeds 0, 1, 2, 30 rounds
(the grid of benchmarks/RESULTS.md, about 16 minutes on 2 cores); quick: −10 and −40 dBm,
ranks 2 and 32, streams 1 and 2, one seed, 3 rounds. A planner's pick outside the grid is run
too (hollow marker) and graded, not ranked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.figures._common import Progress, figure_canvas, quick_note, save_png, tick, unwrap

NAME = "predicted_vs_measured"
TITLE = "Predicted gap vs measured held-out loss (char-tasks)"

FULL = {"powers": [-25.0, -35.0, -40.0, -45.0], "ranks": [4, 16, 32], "streams": [1, 2],
        "seeds": (0, 1, 2), "rounds": 30}
QUICK = {"powers": [-10.0, -40.0], "ranks": [2, 32], "streams": [1, 2], "seeds": (0,),
         "rounds": 3}
MARKERS = {1: "o", 2: "s", 3: "^", 4: "D"}


def compute(*, quick: bool = False, seed: int = 0, progress: Progress | None = None
            ) -> dict[str, Any]:
    """Run the grid (``seed`` shifts the seeds)."""
    from fedopt.instance import load_instance
    from fedopt.solvers.validation import ValidateSettings
    from fedopt.solvers.validation.predictive import predictive_grid

    spec = QUICK if quick else FULL
    inst = load_instance("char-tasks")
    settings = ValidateSettings.for_testbed(
        inst.learning.testbed, rounds=spec["rounds"], seeds=tuple(s + seed for s in spec["seeds"]),
        eval_every=10 ** 6, mode="equivalent" if quick else "exact")
    grid = predictive_grid(inst, powers=spec["powers"], ranks=spec["ranks"],
                           streams=spec["streams"], settings=settings,
                           callback=lambda r: tick(progress, r["done"], r["total"]))
    return {"name": NAME, **grid, "quick": bool(quick)}


def plot(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Two scatter panels (calibrated, nominal constants), ρ in the titles."""
    d = unwrap(data)
    s = d["summary"]
    powers = d["powers"]
    colors = {p: f"C{i}" for i, p in enumerate(powers)}
    with figure_canvas(2, width=5.6, height=4.6) as (fig, axes):
        for ax, key, rho, label in ((axes[0], "gap", s["rho_calibrated"], "calibrated"),
                                    (axes[1], "gap_nominal", s["rho_nominal"], "nominal")):
            for c in d["configs"]:
                if not c.get("losses") or c.get("error"):
                    continue
                x = float(np.mean(c[key]))
                ax.errorbar(x, c["loss_mean"], yerr=c["loss_std"], color=colors[c["p_max_dbm"]],
                            marker=MARKERS.get(c["streams"], "x"), linestyle="none", capsize=2,
                            fillstyle="none" if c.get("extra") else "full")
                ax.annotate(f"r={c['rank']}", (x, c["loss_mean"]), textcoords="offset points",
                            xytext=(4, 3), fontsize=7)
            ax.set_xscale("log")
            ax.set_xlabel(f"predicted gap ({label} constants)")
            ax.set_ylabel("measured final held-out loss (nats / char)")
            shown = "n/a" if rho is None else f"{rho:.2f}"
            ax.set_title(f"{label}: Spearman ρ = {shown}")
        for p in powers:
            axes[0].plot([], [], color=colors[p], marker="o", linestyle="none",
                         label=f"{p:g} dBm")
        for n_l in d["streams"]:
            axes[0].plot([], [], color="k", marker=MARKERS.get(n_l, "x"), linestyle="none",
                         fillstyle="none", label=f"L = {n_l}")
        axes[0].legend(loc="best", fontsize=7)
        st = d["settings"]
        note = quick_note(d, f"{st['rounds']} rounds, seeds {st['seeds']}, a small grid")
        fig.suptitle(f"{note}{TITLE}\n{st['rounds']} rounds, seeds {st['seeds']}; base model "
                     f"{d['base_eval_loss']:.3f}")
        return save_png(fig, path)
