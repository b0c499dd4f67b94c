"""The validation report: per method the means over seeds of what was measured next to what was
predicted, and whether the methods' order by predicted gap matches their order by loss."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["REPORTED", "ValidationReport", "combine_seeds", "ordering", "retained_gain",
           "retained_gains"]

#: the measured quantities averaged over seeds (each with a ``*_std``)
REPORTED = ("final_train_loss", "final_eval_loss", "perplexity", "measured_aggregation_error",
            "predicted_aggregation_error", "relative_aggregation_error", "airtime_s",
            "latency_s", "energy_j_max")


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`~fedopt.solvers.validation.validate` returns.

    Attributes
    ----------
    instance, instance_digest : str
        The instance run (its data sizes replaced by the loop's client split).
    settings : dict
        The :class:`~fedopt.solvers.validation.ValidateSettings` used.
    main_method : str
        The plan's method.
    data : dict
        The client split: ``data_sizes`` and ``topics_per_client`` (and ``tasks``,
        ``client_tasks``, ``task_mixing`` on the ``domain-shift`` testbed).
    base_eval_loss : float or None
        The base model (before fine-tuning) on the global held-out set: every method's
        ``retained_gain`` is measured from it.
    methods : dict
        Per method name: the means over seeds of :data:`REPORTED` (each with ``*_std``),
        ``retained_gain`` (:func:`retained_gain` of the mean losses; per seed in ``seeds``), the
        ``rank``/``streams`` used, ``predicted_gap``, the per-seed summaries (``seeds``) and the
        per-round ``curves``; or ``error`` when the method could not run.
    ordering : dict
        Methods by predicted gap and by measured final eval loss, and concordant pairs.
    wall_s : float
        Wall-clock time of the whole validation.
    out_dir : str or None
        Where the runs were written.
    """

    instance: str
    instance_digest: str
    settings: dict[str, Any]
    main_method: str
    data: dict[str, Any]
    methods: dict[str, dict[str, Any]]
    ordering: dict[str, Any]
    wall_s: float
    out_dir: str | None = None
    stopped: bool = field(default=False)
    base_eval_loss: float | None = None

    def to_dict(self, *, per_seed: bool = True) -> dict[str, Any]:
        """The JSON form (``validate.json``; ``fedopt validate --format json`` without the
        per-seed summaries)."""
        methods = {k: ({**v} if per_seed else {n: x for n, x in v.items() if n != "seeds"})
                   for k, v in self.methods.items()}
        out = {"instance": self.instance, "instance_digest": self.instance_digest,
               "settings": self.settings, "main_method": self.main_method, "data": self.data,
               "base_eval_loss": self.base_eval_loss, "methods": methods,
               "ordering": self.ordering, "wall_s": self.wall_s}
        if self.out_dir is not None:
            out["out_dir"] = self.out_dir
        if self.stopped:
            out["stopped"] = True
        return out


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals))


def _curves(curves: list[tuple[list, list]]) -> dict[str, Any]:
    n = min(len(c[0]) for c in curves)
    return {
        "train_loss": np.mean([c[0][:n] for c in curves], axis=0).tolist(),
        "eval_loss": [None if any(c[1][i] is None for c in curves)
                      else float(np.mean([c[1][i] for c in curves])) for i in range(n)],
    }


def combine_seeds(per_seed: list[dict[str, Any]], curves: list[tuple[list, list]],
                  error: str | None) -> dict[str, Any]:
    """One method's entry of the report from its per-seed run summaries."""
    if not per_seed:  # an error before any seed ran, or a validation stopped before it
        return {"error": error or "not run: the validation was stopped before this method",
                **{k: None for k in REPORTED}}
    out: dict[str, Any] = {}
    for key in REPORTED:
        out[key], out[f"{key}_std"] = _mean_std([s.get(key) for s in per_seed])
    out["perplexity"] = None if out["final_eval_loss"] is None else math.exp(
        out["final_eval_loss"])
    ranks = sorted({s["rank"] for s in per_seed})
    streams = sorted({s["streams"] for s in per_seed if s["streams"] is not None})
    out["rank"] = ranks[0] if len(ranks) == 1 else ranks
    out["streams"] = (streams[0] if len(streams) == 1 else streams) if streams else None
    out["predicted_gap"], _ = _mean_std([s["predicted"].get("gap") for s in per_seed])
    out["seeds"] = per_seed
    out["curves"] = _curves(curves)
    if error is not None:
        out["error"] = error
    return out


def ordering(results: Mapping[str, Any]) -> dict[str, Any]:
    """Methods ordered by predicted gap and by measured final eval loss (AirComp plans)."""
    both = {k: v for k, v in results.items()
            if v.get("predicted_gap") is not None and v.get("final_eval_loss") is not None}
    pred = sorted(both, key=lambda k: both[k]["predicted_gap"])
    meas = sorted(both, key=lambda k: both[k]["final_eval_loss"])
    pairs = agree = 0
    for i, a in enumerate(pred):
        for b in pred[i + 1:]:
            pairs += 1
            agree += both[a]["final_eval_loss"] <= both[b]["final_eval_loss"]
    return {"by_predicted_gap": pred, "by_measured_eval_loss": meas,
            "concordant_pairs": agree, "pairs": pairs}


def retained_gain(base: float | None, method: float | None, ideal: float | None) -> float | None:
    """The fine-tuning gain a method retains: (base − method) / (base − ideal).

    1 is ideal aggregation's gain, 0 no gain at all, below 0 a model worse than the base. None
    when a loss is missing or ideal gained nothing (base − ideal ≤ 0: there is no gain to keep).
    """
    if base is None or method is None or ideal is None:
        return None
    gain = float(base) - float(ideal)
    if not (gain > 0 and math.isfinite(gain) and math.isfinite(float(method))):
        return None
    return (float(base) - float(method)) / gain


def retained_gains(results: dict[str, dict[str, Any]], base: float | None
                   ) -> dict[str, dict[str, Any]]:
    """``results`` with ``retained_gain`` on every method entry (against ``ideal``'s mean loss)
    and on every per-seed summary (against the same seed's ideal run)."""
    ideal = results.get("ideal", {})
    ideal_seed = {s["seed"]: s.get("final_eval_loss") for s in ideal.get("seeds", [])}
    for entry in results.values():
        entry["retained_gain"] = retained_gain(base, entry.get("final_eval_loss"),
                                               ideal.get("final_eval_loss"))
        for summ in entry.get("seeds", []):
            summ["retained_gain"] = retained_gain(base, summ.get("final_eval_loss"),
                                                  ideal_seed.get(summ["seed"]))
    return results
