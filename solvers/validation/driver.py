"""End-to-end validation: run plans through the federated LoRA loop (spec 05, spec 02 §3).

For every method and seed, :func:`validate` builds the loop's model (the shipped base of
:mod:`fedopt.fl.pretrained` with LoRA at the plan's rank on its attention projections), the clients'
data (the instance's K, one topic split, φ_k = D_k / Σ D_j), and the method's aggregator, then
runs :func:`fedopt.fl.loop.run_federated` and collects what was predicted next to what was measured.

Methods (names as in ``fedopt solve --method``, plus two):

- planner methods (``airfl-lora``, ``fixed-rank``, ``single-stream``, ``random-plan``,
  ``centroid-plan``, ...) and beamforming methods: the plan is solved on round 0 of the seed's
  channel; in every round t the channel is redrawn (block fading, ``draw_channel(instance, seed,
  t)``) and the receive beamformers are re-optimized for it by the plan's beamforming method,
  warm-started from round t − 1 (:class:`RoundBeamformers`); AirComp aggregation is simulated
  symbol by symbol (``mode="exact"``) or with the validated equivalent noise;
- ``ideal``: the main method's rank, error-free aggregation;
- ``digital``: TSFA (offline rank, online sparsity and bandwidth per round by drift-plus-penalty,
  :class:`TSFADecisions`) with SOFT-sparsified updates over FDMA.

Common random numbers: every method of a seed sees the same data, the same mini-batches (drawn
from (seed, round, client)) and the same channel draws, so differences between methods come from
the methods.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.channel import draw_channel
from fedopt.errors import FedOptError, InvalidArgumentError, PlanError
from fedopt.instance import Instance
from fedopt.io import atomic_write_text
from fedopt.plan import Plan

__all__ = ["DEFAULT_BASELINES", "EXTRA_METHODS", "RoundBeamformers", "TSFADecisions",
           "ValidateSettings", "check_model_layers", "loop_layers", "validate"]

#: the comparison set of ``fedopt validate --baselines``
DEFAULT_BASELINES = ("ideal", "fixed-rank", "random-plan", "single-stream", "digital")
#: methods that are not planners
EXTRA_METHODS = ("ideal", "digital")
SUMMARY_FILE = "validate.json"


@dataclass(frozen=True)
class ValidateSettings:
    """Settings of :func:`validate` (loop settings default to the instance's ``learning``).

    Attributes
    ----------
    rounds : int
        Rounds T per run.
    seeds : tuple of int
        One run per seed and method (seed: channel draws, mini-batches, LoRA init, noise).
    optimizer, lr, local_steps, batch_size
        Local training (None: the instance's ``learning.local_steps`` / ``batch_size``). lr 1.5:
        at 2.0 the rank-1 runs of FedSGD diverged on one seed in three (30 ideal rounds).
    grad_clip : float or None
        Clip of each local gradient's 2-norm. Typical norms are ≈ 0.1, so 1.0 only acts on a
        blow-up.
    eval_every, eval_batches
        Held-out evaluation cadence and size (batches of 64 windows).
    mode : {"exact", "equivalent"}
        AirComp path: symbol-level simulation or the validated equivalent noise.
    data_seed, concentration
        The client split (fixed across seeds: the instance's data shares).
    tsfa_v : float
        Lyapunov weight V of the digital baseline's online stage.
    alpha_scale : float
        c in the LoRA α = c·√r, i.e. the scale α/r = c/√r (rank-stabilized LoRA). With α = r
        (scale 1) the size of an SGD step on W grows like r and FedSGD at a fixed learning rate
        diverges at large ranks (measured: r = 16 and 32 at lr 2); c/√r keeps the step size
        independent of r, so that methods with different ranks are compared at equal step.
    """

    rounds: int = 30
    seeds: tuple[int, ...] = (0, 1, 2)
    optimizer: str = "sgd"
    lr: float = 1.5
    local_steps: int | None = None
    batch_size: int | None = None
    grad_clip: float | None = 1.0
    eval_every: int = 1
    eval_batches: int = 4
    mode: str = "exact"
    data_seed: int = 0
    concentration: float = 1.0
    tsfa_v: float = 0.01
    alpha_scale: float = 2.0

    @classmethod
    def quick(cls, **changes: Any) -> ValidateSettings:
        """A short run for smoke tests: 8 rounds, one seed, small evaluations."""
        return replace(cls(rounds=8, seeds=(0,), eval_every=2, eval_batches=2), **changes)

    def __post_init__(self) -> None:
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                                 or s < 0 for s in self.seeds):
            raise InvalidArgumentError(
                f"seeds: got {list(self.seeds)!r}, must be a non-empty list of integers >= 0")
        if len(set(self.seeds)) != len(self.seeds):
            raise InvalidArgumentError(f"seeds: got {list(self.seeds)!r}, must be distinct")
        if self.mode not in ("exact", "equivalent"):
            raise InvalidArgumentError(
                f"mode: got {self.mode!r}, must be 'exact' or 'equivalent'")
        if not (self.alpha_scale > 0 and math.isfinite(self.alpha_scale)):
            raise InvalidArgumentError(
                f"alpha_scale: got {self.alpha_scale!r}, must be a positive number")
        if not (self.tsfa_v >= 0 and math.isfinite(self.tsfa_v)):
            raise InvalidArgumentError(f"tsfa_v: got {self.tsfa_v!r}, must be >= 0")
        from fedopt.fl.loop import LoopConfig

        LoopConfig(rounds=self.rounds, optimizer=self.optimizer, lr=self.lr,
                   eval_every=self.eval_every, eval_batches=self.eval_batches)

    def loop_config(self, instance: Instance, seed: int) -> Any:
        from fedopt.fl.loop import LoopConfig

        return LoopConfig(
            rounds=self.rounds, seed=int(seed), optimizer=self.optimizer, lr=self.lr,
            local_steps=self.local_steps or instance.learning.local_steps,
            batch_size=self.batch_size or instance.learning.batch_size,
            grad_clip=self.grad_clip, eval_every=self.eval_every, eval_batches=self.eval_batches)

    def lora_model(self, base: Any, rank: int, seed: int) -> tuple[Any, dict[str, Any]]:
        """A copy of the base model with LoRA at ``rank`` (α = ``alpha_scale``·√r, A drawn
        from ``seed``) on its attention projections; returns (model, adapters)."""
        import torch

        from fedopt.fl.lora import apply_lora

        model = copy.deepcopy(base.model)
        mods = apply_lora(model, rank, alpha=self.alpha_scale * math.sqrt(rank),
                          generator=torch.Generator().manual_seed(int(seed)))
        return model, mods

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        return d


# ---------------------------------------------------------------------------------------------
# the loop's model and the instance


def loop_layers() -> list[dict[str, Any]]:
    """The LoRA layer list (``lora.layers``) of the model the loop trains."""
    import torch

    from fedopt.fl.lora import apply_lora, lora_layer_spec
    from fedopt.fl.pretrained import base_model

    model = copy.deepcopy(base_model().model)
    return lora_layer_spec(apply_lora(model, 1, generator=torch.Generator().manual_seed(0)))


def check_model_layers(instance: Instance) -> None:
    """Raise :class:`PlanError` unless the instance's LoRA layers are those the loop trains
    (otherwise every prediction would describe another model's payload q(r))."""
    want = sorted((d["d_out"], d["d_in"], d["count"]) for d in loop_layers())
    have = sorted((layer.d_out, layer.d_in, layer.count) for layer in instance.lora.layers)
    if want != have or instance.lora.factors != "AB":
        shown = ", ".join(f"{c} x ({o} x {i})" for o, i, c in want)
        raise PlanError(
            f"lora.layers: instance {instance.name!r} describes "
            f"{', '.join(f'{c} x ({o} x {i})' for o, i, c in have)} (factors "
            f"{instance.lora.factors}), but the validation loop's model adapts {shown} (factors "
            f"AB); predictions must describe the model actually trained. Use the 'tiny-char' "
            f"preset, or copy its lora section into your instance")


def _instance_for_data(instance: Instance, data_sizes: np.ndarray) -> Instance:
    if tuple(int(x) for x in data_sizes) == tuple(int(x) for x in
                                                  instance.devices.dataset_size):
        return instance
    return instance.with_devices(dataset_size=[int(x) for x in data_sizes])


# ---------------------------------------------------------------------------------------------
# per-round callables handed to fedopt's aggregators


class RoundBeamformers:
    """``(t, H) -> A``: receive beamformers re-optimized on each round's channel.

    Round 0 uses ``initial`` (the plan's beamformers, solved on that very channel) when given;
    round t > 0 solves the beamforming problem of H with ``method``, warm-started (manifold
    solver) from round t − 1. Solutions are memoized in ``cache`` (shared between methods of one
    validation: same chain, same answer).
    """

    def __init__(self, instance: Instance, streams: int, method: str, seed: int, *,
                 initial: np.ndarray | None = None,
                 cache: dict[tuple, np.ndarray] | None = None, **options: Any):
        self.instance = instance
        self.streams = int(streams)
        self.method = method
        self.seed = int(seed)
        self.initial = None if initial is None else np.array(initial)
        self.options = options
        self.cache = {} if cache is None else cache
        self.prev: np.ndarray | None = None
        self.solves = 0
        self.solve_time_s = 0.0
        tag = b"" if self.initial is None else self.initial.tobytes()
        self._chain = (method, self.streams, self.seed, instance.digest(),
                       hash(tag), json.dumps(options, sort_keys=True, default=str))

    def describe(self) -> dict[str, Any]:
        return {"type": "round-beamformers", "method": self.method, "streams": self.streams,
                "seed": self.seed, "options": {k: str(v) for k, v in self.options.items()}}

    def state_dict(self) -> dict[str, np.ndarray]:
        return {} if self.prev is None else {"prev": self.prev}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.prev = None if "prev" not in state else np.array(state["prev"])

    def __call__(self, t: int, H: np.ndarray) -> np.ndarray:
        from fedopt.channel import Channel
        from fedopt.solvers.beamforming import solve_beamforming
        from fedopt.solvers.problem import BeamformingProblem

        key = (*self._chain, int(t))
        if key not in self.cache:
            if t == 0 and self.initial is not None:
                self.cache[key] = self.initial
            else:
                t0 = time.perf_counter()
                problem = BeamformingProblem.from_instance(self.instance, Channel(H=H),
                                                           self.streams)
                kwargs = dict(self.options)
                if self.method == "beamforming" and self.prev is not None:
                    kwargs["init"] = self.prev
                rng = np.random.default_rng(np.random.SeedSequence(
                    self.seed, spawn_key=(4, int(t), self.streams)))
                self.cache[key] = solve_beamforming(problem, self.method, rng=rng,
                                                    **kwargs).solution
                self.solves += 1
                self.solve_time_s += time.perf_counter() - t0
        self.prev = self.cache[key]
        return self.prev


class TSFADecisions:
    """``t -> decision``: TSFA's online stage on round t's channel (spec 04 §5) for the
    :class:`fedopt.fl.aggregators.DigitalAggregator`; the virtual queue is its state."""

    def __init__(self, instance: Instance, rank: int, seed: int, *, V: float, **options: Any):
        from fedopt.solvers.tsfa import TSFAController

        self.instance = instance
        self.seed = int(seed)
        self.controller = TSFAController(instance, rank, V=V, **options)
        self.compute_s = np.asarray(instance.compute_time_s, dtype=float)
        self.power_w = np.asarray(instance.power_w, dtype=float)

    def describe(self) -> dict[str, Any]:
        c = self.controller
        return {"type": "tsfa", "rank": c.rank, "V": c.V, "budget_s": c.budget_s,
                "bandwidth_hz": c.bandwidth_hz, "seed": self.seed}

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"queue": np.array(self.controller.queue),
                "round": np.array(self.controller.round)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.controller.queue = float(state["queue"])
        self.controller.round = int(state["round"])

    def __call__(self, t: int) -> dict[str, Any]:
        from fedopt.digital import snr_hz

        d = self.controller.step(snr_hz(self.instance,
                                        draw_channel(self.instance, self.seed, round=t)))
        upload = np.maximum(d.latency_s - self.compute_s, 0.0)  # every device ends at τ
        return {"kept": d.kept, "latency_s": d.latency_s, "airtime_s": float(upload.max()),
                "energy_j": self.power_w * upload, "bandwidth_hz": d.bandwidth_hz,
                "sparsity": d.sparsity}


# ---------------------------------------------------------------------------------------------
# one method, one seed


@dataclass
class _Setup:
    """What one (method, seed) run needs, and the predictions to hold against it."""

    rank: int
    aggregator: Any
    streams: int | None = None
    predicted: dict[str, Any] = field(default_factory=dict)


def _aircomp_setup(instance: Instance, plan: Plan, seed: int, settings: ValidateSettings,
                   cache: dict, initial: np.ndarray | None) -> _Setup:
    from fedopt.fl.aggregators import AirCompAggregator

    bf_method = plan.metadata.get("beamforming_method", "beamforming")
    beams = RoundBeamformers(instance, plan.streams, bf_method, seed, initial=initial,
                             cache=cache)
    agg = AirCompAggregator(
        lambda t: draw_channel(instance, seed, round=t).H, beams,
        instance.power_per_subcarrier_w, instance.noise_power_w,
        symbol_time_s=instance.symbol_time_s, mode=settings.mode,
        compute_time_s=float(np.max(instance.compute_time_s)))
    md = plan.metadata
    predicted = {k: md.get(k) for k in ("gap", "latency_s", "airtime_s", "energy_j_max",
                                        "mse_sum")}
    return _Setup(rank=plan.rank, streams=plan.streams, aggregator=agg, predicted=predicted)


def _plan_for(instance: Instance, method: str, seed: int) -> Plan:
    from fedopt.solvers.planner import plan

    return plan(instance, method, seed=seed).solution


def _setups(method: str, instance: Instance, seed: int, settings: ValidateSettings,
            given: Plan | None, main: str, plans: dict, cache: dict) -> _Setup:
    from fedopt.fl.aggregators import DigitalAggregator, IdealAggregator

    def main_plan() -> Plan:
        if (main, seed) not in plans:
            plans[(main, seed)] = given if given is not None else _plan_for(instance, main, seed)
        return plans[(main, seed)]

    if method == "ideal":
        p = main_plan()
        return _Setup(rank=p.rank, aggregator=IdealAggregator(),
                      predicted={"latency_s": None, "aggregation_error": 0.0})
    if method == "digital":
        from fedopt.solvers.tsfa import plan_tsfa

        p = plan_tsfa(instance, seed=seed).solution
        decide = TSFADecisions(instance, p.rank, seed, V=settings.tsfa_v)
        layers = [(layer.d_out, layer.d_in) for layer in instance.lora.layers
                  for _ in range(layer.count)]
        md = p.metadata
        return _Setup(rank=p.rank, aggregator=DigitalAggregator(layers, p.rank, decide),
                      predicted={"latency_s": md.get("expected_latency_s"),
                                 "tsfa_bound": md.get("bound")})
    if method == main:
        p = main_plan()
        initial = None
        if p.receive_beamformers is not None and p.channel_seed == seed and (
                p.channel_round in (0, None)):
            initial = p.receive_beamformers
        return _aircomp_setup(instance, p, seed, settings, cache, initial)
    p = _plan_for(instance, method, seed)
    return _aircomp_setup(instance, p, seed, settings, cache, p.receive_beamformers)


# ---------------------------------------------------------------------------------------------
# the driver


def _valid_methods() -> list[str]:
    from fedopt.solvers.beamforming import BEAMFORMING_METHODS
    from fedopt.solvers.planner import PLAN_METHODS

    return [*PLAN_METHODS, *BEAMFORMING_METHODS, *EXTRA_METHODS]


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals))


_REPORTED = ("final_train_loss", "final_eval_loss", "perplexity", "measured_aggregation_error",
             "predicted_aggregation_error", "relative_aggregation_error", "airtime_s",
             "latency_s", "energy_j_max")


def validate(instance: Instance, *, plan: Plan | None = None, method: str = "airfl-lora",
             baselines: Sequence[str] = (), settings: ValidateSettings | None = None,
             out_dir: str | Path | None = None, resume: bool = False,
             progress: Callable[[int, int, str], Any] | None = None) -> dict[str, Any]:
    """Run the plan (or the instance's ``method`` plan) and ``baselines`` through the FL loop.

    Parameters
    ----------
    instance
        Its LoRA layers must be those of the loop's model (:func:`check_model_layers`); its
        devices' data sizes are replaced by the loop's client split (the weights φ_k used by
        the plan are the ones the loop aggregates with).
    plan
        A plan to validate (its rank, streams and beamforming method; its beamformers are used on
        the channel they were solved for). Its shapes must fit the instance. Reported under its
        ``method`` name.
    method
        The planner used when ``plan`` is None (default ``airfl-lora``).
    baselines
        More methods (``DEFAULT_BASELINES`` for the comparison set).
    settings
        :class:`ValidateSettings`.
    out_dir
        Per run ``<out>/<method>/seed-<s>/`` (``rounds.jsonl``, ``checkpoint.npz``,
        ``summary.json``) and ``<out>/validate.json``; None keeps everything in memory.
    resume
        Continue interrupted runs from their checkpoints (finished runs are not re-run).
    progress
        ``progress(done_rounds, total_rounds, label)`` after every round.

    Returns
    -------
    dict
        ``{"instance", "settings", "methods": {NAME: {...}}, "ordering", "wall_s"}``; per method
        the mean over seeds of ``final_train_loss``, ``final_eval_loss``, ``perplexity``,
        ``measured_aggregation_error``, ``predicted_aggregation_error``,
        ``relative_aggregation_error``, ``airtime_s``, ``latency_s``, ``energy_j_max`` (each with
        a ``*_std`` over seeds), the ``rank``/``streams`` used, the plan's predictions, per-seed
        summaries and the per-round curves (``curves``: mean over seeds of train and eval loss),
        or ``error`` when the method could not run (e.g. infeasible).
    """
    from fedopt.fl.data import make_federated_data
    from fedopt.fl.loop import run_federated
    from fedopt.fl.pretrained import base_model

    t_start = time.perf_counter()
    settings = settings or ValidateSettings()
    check_model_layers(instance)
    valid = _valid_methods()
    if plan is not None:
        plan.check(instance)
        method = plan.method
    names = [method, *[b for b in baselines if b != method]]
    for name in names:
        if name not in valid:
            raise InvalidArgumentError(
                f"method: got {name!r}, must be one of {', '.join(valid)}")
    if method in EXTRA_METHODS and plan is None:
        raise InvalidArgumentError(
            f"method: {method!r} is a baseline, not a planner; choose a planner such as "
            f"airfl-lora as the main method")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        from fedopt.fl.loop import check_out_dir

        check_out_dir(out)

    base = base_model()
    data = make_federated_data(instance.n_devices, concentration=settings.concentration,
                               seed=settings.data_seed)
    inst = _instance_for_data(instance, data.data_sizes)
    if plan is not None and inst is not instance:
        plan.check(inst)
    plans: dict = {}
    cache: dict = {}
    total = len(names) * len(settings.seeds) * settings.rounds
    done = 0
    results: dict[str, Any] = {}
    for name in names:
        per_seed: list[dict[str, Any]] = []
        curves: list[tuple[list, list]] = []
        error = None
        for seed in settings.seeds:
            label = f"{name} seed {seed}"
            try:
                setup = _setups(name, inst, seed, settings, plan, method, plans, cache)
            except FedOptError as exc:
                error = f"{type(exc).__name__}: {exc}"
                done += settings.rounds * (len(settings.seeds) - len(per_seed))
                if progress is not None:
                    progress(done, total, f"{name}: {error[:60]}")
                break
            model, _ = settings.lora_model(base, setup.rank, seed)
            run_dir = None if out is None else out / name / f"seed-{seed}"
            start_done = done

            def tick(rec: dict[str, Any], _label: str = label, _start: int = start_done) -> None:
                if progress is not None:
                    progress(_start + rec["round"] + 1, total, _label)

            res = run_federated(
                model, data, setup.aggregator, settings.loop_config(inst, seed),
                compute_time_s=float(np.max(inst.compute_time_s)), out_dir=run_dir,
                resume=resume, name=f"{name}/seed-{seed}",
                metadata={"method": name, "seed": int(seed), "rank": setup.rank,
                          "streams": setup.streams, "predicted": setup.predicted},
                callback=tick)
            done = start_done + settings.rounds
            summ = dict(res.summary)
            summ.update({"seed": int(seed), "rank": setup.rank, "streams": setup.streams,
                         "predicted": setup.predicted})
            beams = getattr(setup.aggregator, "beamformers_for_round", None)
            if isinstance(beams, RoundBeamformers):
                summ["beamforming_solves"] = beams.solves
                summ["beamforming_time_s"] = beams.solve_time_s
            per_seed.append(summ)
            curves.append(([r["train_loss"] for r in res.history],
                           [r["eval_loss"] for r in res.history]))
        results[name] = _combine(per_seed, curves, error)

    report = {
        "instance": inst.name, "instance_digest": inst.digest(),
        "settings": settings.to_dict(), "main_method": method,
        "data": {"data_sizes": data.data_sizes.tolist(),
                 "topics_per_client": data.topics_per_client},
        "methods": results, "ordering": _ordering(results),
        "wall_s": time.perf_counter() - t_start,
    }
    if out is not None:
        atomic_write_text(out / SUMMARY_FILE, json.dumps(report, indent=2) + "\n")
        report["out_dir"] = str(out)
    return report


def _combine(per_seed: list[dict[str, Any]], curves: list[tuple[list, list]],
             error: str | None) -> dict[str, Any]:
    if error is not None and not per_seed:
        return {"error": error, **{k: None for k in _REPORTED}}
    out: dict[str, Any] = {}
    for key in _REPORTED:
        out[key], out[f"{key}_std"] = _mean_std([s.get(key) for s in per_seed])
    out["perplexity"] = None if out["final_eval_loss"] is None else math.exp(
        out["final_eval_loss"])
    ranks = sorted({s["rank"] for s in per_seed})
    streams = sorted({s["streams"] for s in per_seed if s["streams"] is not None})
    out["rank"] = ranks[0] if len(ranks) == 1 else ranks
    out["streams"] = (streams[0] if len(streams) == 1 else streams) if streams else None
    gaps = [s["predicted"].get("gap") for s in per_seed]
    out["predicted_gap"], _ = _mean_std(gaps)
    out["seeds"] = per_seed
    n = min(len(c[0]) for c in curves)
    out["curves"] = {
        "train_loss": np.mean([c[0][:n] for c in curves], axis=0).tolist(),
        "eval_loss": [None if any(c[1][i] is None for c in curves)
                      else float(np.mean([c[1][i] for c in curves])) for i in range(n)],
    }
    if error is not None:
        out["error"] = error
    return out


def _ordering(results: Mapping[str, Any]) -> dict[str, Any]:
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
