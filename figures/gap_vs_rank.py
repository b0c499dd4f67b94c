"""The AirFL-LoRA optimality gap G(r) vs the LoRA rank r at three SNRs (spec 03 §1, §5).

Setting: the ``default`` preset (K = 20 four-antenna devices at 50–250 m, N_r = 16, M = 64
subcarriers at 30 kHz, LoRA on 12 GPT-2-small c_attn projections, q(r) = 36 864 r reals per
round, default learning constants: L_s = 10, μ = 0.05, λ = 0.05, T = 200, b = 16, v = 1
independent of r, power-law spectrum s_i = i^{−1}) with two changes, both to make the rank
trade-off readable:

- one stream per subcarrier (L = 1): the stream count is fixed so that each curve is a
  function of r alone (the planner also optimizes L; see ``fedopt solve``);
- every integer rank 1..32 is plotted instead of the preset's powers of two, so the minimizer
  r* of the curve is resolved finely; 32 is the largest rank whose L = 1 round meets the
  preset's 0.5 s latency budget, so every plotted point is feasible. The planner itself only
  searches the preset's candidate ranks (``lora.ranks``: 1, 2, 4, ..., 64); its choice on that
  grid, r̂ (``r_planner``), is marked separately (a diamond), and differs from r* where r* is
  not a power of two.

The SNR is set by the devices' common transmit power P_k ∈ {3, 13, 23} dBm (23 dBm is the
preset's; the legend also gives the cell-edge receive SNR per subcarrier, P_k/M · β_K / σ² with
β_K the path gain of the farthest device). At each power the manifold solver finds the receive
beamformers on one channel draw (seed ``seed``, round 0; the same draw and solver generator at
every power) and G(r) = contraction + sampling noise + aggregation distortion(r) + rank
truncation(r) is evaluated with :class:`gap_models.AirFLGap` on Σ_m MSE_m; r* (over 1..32) and
r̂ (over the preset's candidates) are chosen by :func:`fedopt.solvers.planner.rank_block`, the
planner's own rank block. In quick mode Σ_m MSE_m is
estimated as M times the mean over 4 subcarriers spread over the band (all 64 in full mode).

Expected (spec 03 §1): the distortion grows linearly in r and as 1/P, the truncation falls in
r, so r* ≈ √(ε-scale / D-slope) grows with P: non-decreasing in SNR (spec 03 §5). With these
constants r* moves by about √10 per 10 dB; seed 0 gives r* = 1, 3, 12 at 3, 13, 23 dBm (at
3 dBm the distortion already exceeds the truncation error at r = 1, so the smallest rank wins).
The gap values (tens of nats) come from the preset's documented-guess constants; the figure is
about where the minimum sits, not about the absolute level of the bound.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.channel import draw_channel
from fedopt.figures._common import (
    Progress,
    figure_canvas,
    save_png,
    spawn_rng,
    subcarrier_subset,
    tick,
    unwrap,
)
from fedopt.gap_models import TERM_NAMES, AirFLGap
from fedopt.solvers.beamforming import solve_beamforming
from fedopt.solvers.planner import rank_block
from fedopt.solvers.problem import BeamformingProblem
from fedopt.units import linear_to_db

__all__ = ["NAME", "TITLE", "compute", "from_sweep", "plot"]

NAME = "gap_vs_rank"
TITLE = "AirFL-LoRA optimality gap vs LoRA rank"

#: device transmit powers (dBm), one curve each, low to high SNR
P_DBM = [3.0, 13.0, 23.0]
#: candidate ranks: every integer up to the largest meeting the 0.5 s budget at L = 1
RANKS = list(range(1, 33))
STREAMS = 1
#: subcarriers whose MSE estimates Σ_m MSE_m in quick mode (all M in full mode)
QUICK_SUBCARRIERS = 4
TERM_LABELS = {
    "contraction": r"contraction $(1-\lambda\mu)^T\Delta_0$",
    "sampling_noise": "sampling noise",
    "aggregation_distortion": "aggregation distortion D(r)",
    "rank_truncation": r"rank truncation $\varepsilon(r)$",
}
COLORS = ["C3", "C1", "C0"]


def _preset_ranks() -> tuple[int, ...]:
    """The candidate ranks the planner searches on the ``default`` preset."""
    from fedopt.instance import load_instance

    return load_instance("default").lora.ranks


def _instance(p_dbm: float):
    from fedopt.instance import load_instance

    inst = load_instance("default")
    return inst.replace(aircomp={"streams": [STREAMS]},
                        lora={**inst.to_dict()["lora"], "ranks": RANKS}).with_devices(
        p_max_dbm=float(p_dbm))


def compute(*, quick: bool = False, seed: int = 0, progress: Progress | None = None
            ) -> dict[str, Any]:
    """G(r) and its terms at each power, and the planner's r*.

    Parameters
    ----------
    quick
        Estimate Σ_m MSE_m from 4 subcarriers instead of solving all 64.
    seed
        Channel seed (round 0) and the seed of the beamforming solver.
    progress
        ``progress({"done", "total"})`` after each power.

    Returns
    -------
    dict
        JSON-safe: ``ranks``, ``p_dbm``, ``snr_edge_db``, ``mse_sum`` (Σ_m MSE_m per power),
        ``gap`` (list per power of G over ``ranks``), ``terms[name]`` (likewise per term),
        ``r_star`` and ``gap_star`` per power (the curve's minimizer), ``r_planner`` and
        ``gap_planner`` per power (the planner's choice over the preset's candidate ranks
        ``planner_ranks``), ``feasible`` (per power, per rank).
    """
    out: dict[str, Any] = {
        "name": NAME, "title": TITLE, "quick": bool(quick), "seed": int(seed),
        "instance": "default", "streams": STREAMS, "ranks": RANKS, "p_dbm": P_DBM,
        "snr_edge_db": [], "mse_sum": [], "gap": [], "terms": {k: [] for k in TERM_NAMES},
        "r_star": [], "gap_star": [], "feasible": [], "r_planner": [], "gap_planner": [],
        "planner_ranks": list(_preset_ranks()),
    }
    for i, p_dbm in enumerate(P_DBM):
        inst = _instance(p_dbm)
        m = inst.n_subcarriers
        channel = draw_channel(inst, seed=seed, round=0)
        problem = BeamformingProblem.from_instance(inst, channel, STREAMS)
        idx = subcarrier_subset(m, QUICK_SUBCARRIERS if quick else m)
        res = solve_beamforming(problem.subproblem(idx), "beamforming", rng=spawn_rng(seed, 0))
        mse_sum = float(m * np.mean(res.objective_per_subcarrier))
        gap = AirFLGap(inst)
        block = rank_block(gap, inst, RANKS, STREAMS, mse_sum)
        terms = gap.terms(np.asarray(RANKS), STREAMS, mse_sum)
        edge = float(inst.power_per_subcarrier_w.min() * inst.path_loss.min()
                     / inst.noise_power_w)
        out["snr_edge_db"].append(float(linear_to_db(edge)))
        out["mse_sum"].append(mse_sum)
        out["gap"].append([float(x) for x in block.gaps])
        for k in TERM_NAMES:
            out["terms"][k].append([float(x) for x in terms[k]])
        out["r_star"].append(block.rank)
        out["gap_star"].append(float(block.gap))
        chosen = rank_block(gap, inst, out["planner_ranks"], STREAMS, mse_sum)
        out["r_planner"].append(chosen.rank)
        out["gap_planner"].append(float(chosen.gap))
        out["feasible"].append([bool(x) for x in block.feasible])
        tick(progress, i + 1, len(P_DBM))
        out["n_subcarriers"] = m
        out["mse_sum_subcarriers"] = int(idx.size)
    return out


def from_sweep(sweep: dict[str, Any], instance_name: str) -> dict[str, Any]:
    """The figure's data for one curve from ``fedopt gap --sweep rank`` (its JSON output):
    ``fedopt gap --plot`` draws with :func:`plot`."""
    rows = sweep["rows"]
    best = next((row for row in rows if row["rank"] == sweep["best_rank"]), None)
    return {
        "ranks": [row["rank"] for row in rows], "streams": sweep["streams"],
        "labels": [f"{instance_name}, L = {sweep['streams']}"],
        "gap": [[row["gap"] for row in rows]],
        "terms": {k: [[row["gap_terms"][k] for row in rows]] for k in TERM_NAMES},
        "r_star": [sweep["best_rank"]], "gap_star": [None if best is None else best["gap"]],
        "r_star_label": "$r^*$: best feasible rank of the sweep (the planner's choice)",
        "feasible": [[row["feasible"] for row in rows]],
        "plot_title": f"{instance_name}: gap vs rank at L = {sweep['streams']} streams "
                 f"(Σ_m MSE_m = {sweep['mse_sum']:.3e})",
    }


def _curve_labels(d: dict[str, Any]) -> list[str]:
    if "labels" in d:
        return list(d["labels"])
    return [f"$P_k$ = {p:g} dBm (cell-edge SNR {round(d['snr_edge_db'][i]):d} dB)"
            for i, p in enumerate(d["p_dbm"])]


def _shade_infeasible(ax: Any, r: np.ndarray, feasible: list[list[bool]]) -> None:
    bad = r[~np.all(np.asarray(feasible, dtype=bool), axis=0)]
    if bad.size:
        ax.axvspan(bad.min() * 0.9, bad.max() * 1.1, color="grey", alpha=0.15,
                   label="latency budget exceeded")


def plot(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Left: G(r) per power (or per curve of :func:`from_sweep`) with r* marked; right: the
    terms of G. Log–log; ranks that exceed the latency budget are shaded. Writes a PNG."""
    d = unwrap(data)
    r = np.asarray(d["ranks"])
    with figure_canvas(2, width=6.2, height=5.0) as (fig, (ax, ax_t)):
        labels = _curve_labels(d)
        for i, label in enumerate(labels):
            color = COLORS[i % len(COLORS)]
            short = label.split(" (")[0]
            ax.plot(r, d["gap"][i], color=color, label=label)
            r_star = d["r_star"][i]
            if r_star is not None:
                ax.plot([r_star], [d["gap_star"][i]], marker="*", ms=16, color=color,
                        mec="black", ls="none")
                ax.annotate(f"$r^*$ = {r_star}", (r_star, d["gap_star"][i]),
                            textcoords="offset points", xytext=(0, -18), ha="center",
                            fontsize=10, color=color, fontweight="bold")
            if d.get("r_planner"):
                ax.plot([d["r_planner"][i]], [d["gap_planner"][i]], marker="D", ms=8,
                        color=color, mec="black", ls="none")
            ax_t.plot(r, d["terms"]["aggregation_distortion"][i], color=color, ls="--",
                      label=f"{TERM_LABELS['aggregation_distortion']}, {short}")
        ax.plot([], [], marker="*", ms=12, color="0.5", mec="black", ls="none",
                label=d.get("r_star_label", "$r^*$: minimizer of the curve (every rank)"))
        if d.get("r_planner"):
            grid = ", ".join(str(x) for x in d["planner_ranks"][:4]) + ", ..."
            ax.plot([], [], marker="D", ms=8, color="0.5", mec="black", ls="none",
                    label=f"planner's choice over its ranks {{{grid}}}")
        _shade_infeasible(ax, r, d["feasible"])
        ax_t.plot(r, d["terms"]["rank_truncation"][0], color="black",
                  label=TERM_LABELS["rank_truncation"])
        const = np.asarray(d["terms"]["contraction"][0]) + np.asarray(
            d["terms"]["sampling_noise"][0])
        ax_t.plot(r, const, color="0.5", ls=":", label="contraction + sampling noise (const.)")
        for a in (ax, ax_t):
            a.set_xscale("log", base=2)
            a.set_yscale("log")
            ticks = [x for x in (1, 2, 4, 8, 16, 32) if r.min() <= x <= r.max()]
            a.set_xticks(ticks, [str(x) for x in ticks])
            a.set_xlabel("LoRA rank $r$ (log scale)")
        lo, hi = float(np.min(d["gap"])), float(np.max(d["gap"]))
        ax.set_ylim(0.6 * lo, 2.5 * hi)  # room for the r* labels below and the legend above
        ax.set_ylabel("optimality-gap bound $G(r)$ (nats of loss)")
        ax.set_title("Gap $G(r)$ = sum of the terms")
        ax.legend(loc="upper center")
        ax_t.set_ylabel("gap term (nats of loss)")
        ax_t.set_title("Terms of $G(r)$")
        ax_t.legend(loc="upper left", ncols=1)
        fig.suptitle(d.get("plot_title") or _title(d))
        return save_png(fig, path)


def _title(d: dict[str, Any]) -> str:
    how = (f"Σ$_m$MSE$_m$ from {d['mse_sum_subcarriers']} of {d['n_subcarriers']} "
           "subcarriers (quick mode)" if d["quick"] else
           f"Σ$_m$MSE$_m$ over all {d['n_subcarriers']} subcarriers")
    return (f"{TITLE} (default instance, L = {d['streams']}, manifold beamformers)\n"
            f"one channel draw (seed {d['seed']}), {how}")
