"""Predictive truth: does the gap model order configurations the way the loop measures them?

A grid of configurations (rank r × streams L × device power P) is planned (the exhaustive
planner restricted to one (r, L): the manifold receive beamformers on each seed's channel and
their predicted gap) and run through the federated loop for several seeds (receive beamformers
re-optimized on every round's channel, as ``fedopt validate`` does). For each configuration it
records the predicted gap — with the instance's (calibrated) constants and with the nominal
defaults — next to the measured final held-out loss, and reports

- Spearman's ρ between predicted gap and measured loss over the whole grid and per power
  (:func:`spearman`, ties by average ranks);
- at every power, the planner's own pick (``airfl-lora`` on the same instance) against the best
  measured configuration: the loss difference, in seed standard deviations and in percent.

:func:`predictive_grid` is what ``python -m benchmarks.predictive`` and the
``predicted_vs_measured`` figure run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from fedopt.errors import FedOptError, InvalidArgumentError
from fedopt.instance import Instance, LearningSpec
from fedopt.plan import Plan
from fedopt.solvers.result import Callback

__all__ = ["CALIBRATED_FIELDS", "nominal_instance", "predictive_grid", "spearman",
           "summarize_grid"]

#: the ``learning`` fields that ``fedopt calibrate`` measures (reset by :func:`nominal_instance`)
CALIBRATED_FIELDS = ("smoothness", "pl_constant", "step_size", "grad_variance", "initial_gap",
                     "update_scale", "update_scale_exponent", "spectrum_kind", "spectrum_s1",
                     "spectrum_alpha", "spectrum_values")


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    sorted_vals = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation ρ: Pearson's correlation of the average ranks of x and y.

    NaN when fewer than two pairs or when either side is constant (no order to compare).
    """
    a = np.asarray(x, dtype=float)
    b = np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise InvalidArgumentError(
            f"spearman: x and y must be 1-D of equal length, got {a.shape} and {b.shape}")
    if a.size < 2:
        return float("nan")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / den) if den > 0 else float("nan")


def nominal_instance(instance: Instance) -> Instance:
    """``instance`` with the calibrated ``learning`` constants reset to their documented
    defaults (the testbed, batch, local steps, rounds and FLOPs kept)."""
    defaults = {f.name: f.default for f in fields(LearningSpec)}
    learning = instance.to_dict()["learning"]
    for key in CALIBRATED_FIELDS:
        learning.pop(key, None)
    learning.update({k: defaults[k] for k in ("smoothness", "pl_constant", "step_size")})
    return instance.replace(learning=learning)


def _plan(instance: Instance, rank: int, streams: int, seed: int) -> Any:
    from fedopt.solvers.planner import plan

    res = plan(instance, "exhaustive", ranks=[rank], streams=[streams], seed=seed)
    return res.solution


def _config_runs(inst: Instance, nominal: Instance, rank: int, streams: int, settings: Any,
                 data: Any, base: Any, cache: dict, tick: Any) -> dict[str, Any]:
    """Every seed of one (r, L) at one power: predicted gaps and measured losses."""
    from fedopt.gap_models import AirFLGap
    from fedopt.solvers.validation.driver import run_plan

    out: dict[str, Any] = {"rank": rank, "streams": streams, "losses": [], "gap": [],
                           "gap_nominal": [], "relative_aggregation_error": []}
    for seed in settings.seeds:
        try:
            plan = _plan(inst, rank, streams, seed)
            if plan is None:
                raise InvalidArgumentError("no feasible plan")
            summ, _ = run_plan(plan, inst, settings, seed, data=data, base=base, cache=cache,
                               name=f"r{rank}-L{streams}/seed-{seed}")
        except FedOptError as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
            tick(len(settings.seeds))
            return out
        mse_sum = plan.metadata.get("mse_sum")
        if mse_sum is None:
            mse_sum = float(plan.mse_per_subcarrier(inst.noise_power_w).sum())
        out["gap"].append(float(plan.metadata["gap"]))
        out["gap_nominal"].append(float(AirFLGap(nominal).total(rank, streams, mse_sum)))
        out["losses"].append(float(summ["final_eval_loss"]))
        out["relative_aggregation_error"].append(summ.get("relative_aggregation_error"))
        tick(1)
    return out


def _check_grid(instance: Instance, powers: Any, ranks: Any, streams: Any
                ) -> tuple[list[float], list[int], list[int]]:
    powers = [float(p) for p in powers]
    if not powers or not all(math.isfinite(p) for p in powers):
        raise InvalidArgumentError(f"powers: got {powers!r}, expected finite dBm values")
    ranks = sorted({instance.validate_rank(int(r)) for r in
                    (instance.lora.ranks if ranks is None else ranks)})
    streams = sorted({instance.validate_streams(int(s)) for s in
                      (instance.aircomp.streams if streams is None else streams)})
    return powers, ranks, streams


def _off_grid(picks: list[dict[str, Any]], ranks: list[int], streams: list[int]
              ) -> list[tuple[int, int]]:
    """The planners' most frequent picks (calibrated, nominal) that the grid does not hold."""
    out = []
    for nm in ("calibrated", "nominal"):
        pick = _most_frequent([(p["rank"], p["streams"]) for p in picks
                               if p["constants"] == nm])
        if None not in pick and (pick[0] not in ranks or pick[1] not in streams) and (
                pick not in out):
            out.append(pick)
    return out


def _power_runs(inst: Instance, p_dbm: float, ranks: list[int], streams: list[int],
                settings: Any, data: Any, base: Any, tick: Any,
                extra: Sequence[tuple[int, int]] = ()) -> list[dict[str, Any]]:
    """Every (r, L) of the grid at one power, then the ``extra`` (r, L) (marked so)."""
    nominal = nominal_instance(inst)
    cache: dict = {}  # per-round beamformers: the same for every rank at one (P, L, seed)
    pairs = [(r, n_l, False) for r in ranks for n_l in streams]
    pairs += [(r, n_l, True) for r, n_l in extra]
    out = []
    for r, n_l, off in pairs:
        entry = _config_runs(inst, nominal, r, n_l, settings, data, base, cache,
                             lambda k, _r=r, _l=n_l: tick(k, f"P {p_dbm:g} dBm r {_r} L {_l}"))
        out.append({"p_max_dbm": p_dbm, **entry, **({"extra": True} if off else {})})
    return out


def _planner_picks(inst: Instance, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """``airfl-lora``'s (r, L) per seed, with the instance's and with the nominal constants."""
    from fedopt.solvers.registry import solve

    picks = []
    for name, inst_x in (("calibrated", inst), ("nominal", nominal_instance(inst))):
        for seed in seeds:
            sol = solve(inst_x, "airfl-lora", seed=seed).solution
            picks.append({"constants": name, "seed": int(seed),
                          "rank": None if sol is None else sol.rank,
                          "streams": None if sol is None else sol.streams})
    return picks


def _ideal_runs(inst: Instance, ranks: list[int], settings: Any, data: Any, base: Any,
                tick: Any) -> dict[str, list[float]]:
    """Error-free aggregation at every rank (power-independent), per seed."""
    from fedopt.solvers.validation.driver import run_plan

    ideal: dict[str, list[float]] = {}
    for r in ranks:
        ideal[str(r)] = []
        for seed in settings.seeds:
            # error-free aggregation needs only the rank: any plan of rank r will do
            rank_plan = Plan(method="ideal", rank=r, streams=1, instance_name=inst.name)
            summ, _ = run_plan(rank_plan, inst, settings, seed, ideal=True, data=data,
                               base=base, name=f"ideal-r{r}/seed-{seed}")
            ideal[str(r)].append(float(summ["final_eval_loss"]))
            tick(1, f"ideal r {r}")
    return ideal


def predictive_grid(instance: Instance, *, powers: Sequence[float],
                    ranks: Sequence[int] | None = None, streams: Sequence[int] | None = None,
                    settings: Any = None, callback: Callback | None = None) -> dict[str, Any]:
    """Plan and run every (P, r, L) of the grid for every seed of ``settings``.

    Parameters
    ----------
    instance
        A (calibrated) instance of the loop's model; its devices' power is replaced by each P.
    powers
        Device powers P (dBm).
    ranks, streams
        The grid's candidates (default: the instance's).
    settings
        :class:`~fedopt.solvers.validation.ValidateSettings` (default: the testbed's).
    callback
        ``callback({"done", "total", "label"})`` after every run.

    Returns
    -------
    dict
        JSON-safe: ``configs`` (per P, r, L: ``gap``, ``gap_nominal``, ``losses`` per seed and
        their ``loss_mean``/``loss_std``), ``ideal`` (per rank: error-free losses),
        ``planner`` (per P: the ``airfl-lora`` pick per seed), ``base_eval_loss``, ``settings``,
        and the summary of :func:`summarize_grid`.
    """
    from fedopt.solvers.validation.driver import ValidateSettings, check_model_layers

    powers, ranks, streams = _check_grid(instance, powers, ranks, streams)
    settings = settings or ValidateSettings.for_testbed(instance.learning.testbed)
    check_model_layers(instance)
    data = settings.client_data(instance)
    inst0 = instance.with_devices(dataset_size=[int(x) for x in data.data_sizes])
    base = settings.base_model(inst0)
    n_seeds = len(settings.seeds)
    total = (len(powers) * len(ranks) * len(streams) + len(ranks)) * n_seeds
    state = {"done": 0}

    def tick(n: int, label: str = "") -> None:
        state["done"] += n
        if callback is not None:
            callback({"done": state["done"], "total": total, "label": label})

    configs: list[dict[str, Any]] = []
    planner: dict[str, Any] = {}
    for p_dbm in powers:
        planner[f"{p_dbm:g}"] = _planner_picks(inst0.with_devices(p_max_dbm=p_dbm),
                                               settings.seeds)
    extra = {p: _off_grid(planner[f"{p:g}"], ranks, streams) for p in powers}
    total = sum(len(v) for v in extra.values()) * n_seeds + total
    for p_dbm in powers:
        inst = inst0.with_devices(p_max_dbm=p_dbm)
        configs += _power_runs(inst, p_dbm, ranks, streams, settings, data, base, tick,
                               extra=extra[p_dbm])
    ideal = _ideal_runs(inst0, ranks, settings, data, base, tick)
    base_loss = settings.base_eval_loss(base, data)
    out = {"instance": instance.name, "powers": powers, "ranks": ranks, "streams": streams,
           "settings": settings.to_dict(), "base_eval_loss": base_loss, "configs": configs,
           "ideal": ideal, "planner": planner}
    out["summary"] = summarize_grid(out)
    return out


def _stats(losses: list[float]) -> tuple[float, float]:
    arr = np.asarray(losses, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _most_frequent(picks: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """The seeds' most frequent pick (ties: the first in seed order)."""
    return max(picks, key=lambda p: (picks.count(p), -picks.index(p)))


def _grade(pick: dict[str, Any], best: dict[str, Any]) -> dict[str, Any]:
    """The pick's loss above the best, in percent and in the seed sd of the two compared
    (√((sd_pick² + sd_best²)/2)); the target: within one such sd or 0.5 %."""
    diff = pick["loss_mean"] - best["loss_mean"]
    sd = float(np.sqrt(0.5 * (pick["loss_std"] ** 2 + best["loss_std"] ** 2)))
    return {"loss_mean": pick["loss_mean"], "loss_std": pick["loss_std"], "above_best": diff,
            "above_best_percent": 100.0 * diff / best["loss_mean"], "compared_sd": sd,
            "above_best_in_sd": diff / sd if sd > 0 else None,
            "within_target": bool(diff <= sd or diff <= 0.005 * best["loss_mean"])}


def summarize_grid(grid: dict[str, Any]) -> dict[str, Any]:
    """ρ (calibrated and nominal, all and per power) and the planner's pick against the best
    measured configuration at every power, from the raw grid of :func:`predictive_grid`.

    Configurations marked ``extra`` (a planner's pick outside the grid, run to grade it) count
    for the pick only, not for ρ nor for the best."""
    from fedopt.solvers.validation.report import retained_gain

    ran = [c for c in grid["configs"] if c.get("losses") and not c.get("error")]
    ideal = {int(r): float(np.mean(v)) for r, v in grid.get("ideal", {}).items()}
    for c in ran:
        c["loss_mean"], c["loss_std"] = _stats(c["losses"])
        c["retained_gain"] = retained_gain(grid.get("base_eval_loss"), c["loss_mean"],
                                           ideal.get(c["rank"]))
    ok = [c for c in ran if not c.get("extra")]

    def rho(cs: list[dict[str, Any]], key: str) -> float | None:
        """ρ, or None (JSON-safe) where it is undefined: < 2 points or a constant side."""
        value = spearman([float(np.mean(c[key])) for c in cs], [c["loss_mean"] for c in cs])
        return None if math.isnan(value) else value

    out: dict[str, Any] = {
        "n_configs": len(ok),
        "median_seed_sd": float(np.median([c["loss_std"] for c in ok])) if ok else None,
        "rho_calibrated": rho(ok, "gap"), "rho_nominal": rho(ok, "gap_nominal"),
        "per_power": {}}
    for p_dbm in grid["powers"]:
        cs = [c for c in ok if c["p_max_dbm"] == p_dbm]
        best = min(cs, key=lambda c: c["loss_mean"]) if cs else None
        row: dict[str, Any] = {"rho_calibrated": rho(cs, "gap"),
                               "rho_nominal": rho(cs, "gap_nominal"),
                               "best": None if best is None else
                               {"rank": best["rank"], "streams": best["streams"],
                                "loss_mean": best["loss_mean"], "loss_std": best["loss_std"]}}
        for nm in ("calibrated", "nominal"):
            picks = [(p["rank"], p["streams"]) for p in grid["planner"][f"{p_dbm:g}"]
                     if p["constants"] == nm]
            pick = _most_frequent(picks)
            match = [c for c in ran if c["p_max_dbm"] == p_dbm
                     and (c["rank"], c["streams"]) == pick]
            entry: dict[str, Any] = {"rank": pick[0], "streams": pick[1],
                                     "picks_per_seed": [list(p) for p in picks]}
            if match and best is not None:
                entry.update(_grade(match[0], best), in_grid=not match[0].get("extra"))
            else:
                entry["note"] = "the pick did not run"
            row[f"planner_{nm}"] = entry
        out["per_power"][f"{p_dbm:g}"] = row
    return out
