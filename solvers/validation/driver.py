"""End-to-end validation: run plans through the federated LoRA loop (spec 05, spec 02 §3).

For every method and seed, :func:`validate` resolves the method's typed plan (the given plan, or
one solved by :func:`fedopt.solvers.solve`), builds its run with
:func:`~fedopt.solvers.validation.builder.build_run` (the loop's model with LoRA at the plan's
rank, the plan's aggregator and per-round adapter), runs :func:`fedopt.fl.loop.run_federated`
on the clients' data and collects what was predicted next to what was measured
(:class:`~fedopt.solvers.validation.report.ValidationReport`).

Methods (names of the solver registry, plus two):

- planner methods (``airfl-lora``, ``fixed-rank``, ``single-stream``, ``random-plan``,
  ``centroid-plan``, ...) and beamforming methods: the plan is solved on round 0 of the seed's
  channel; in every round t the channel is redrawn (block fading, ``draw_channel(instance, seed,
  t)``) and the receive beamformers are re-optimized for it by the plan's beamforming method,
  warm-started from round t − 1; AirComp aggregation is simulated symbol by symbol
  (``mode="exact"``) or with the validated equivalent noise;
- ``ideal``: the main method's rank, error-free aggregation;
- ``digital``: TSFA (the registry's ``tsfa``: offline rank, online sparsity and bandwidth per
  round by drift-plus-penalty) with SOFT-sparsified updates over FDMA.

Common random numbers: every method of a seed sees the same data, the same mini-batches (drawn
from (seed, round, client)) and the same channel draws, so differences between methods come from
the methods.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.errors import FedOptError, InvalidArgumentError, PlanError
from fedopt.fl.recipe import check_model_layers, loop_layers
from fedopt.instance import Instance
from fedopt.io import atomic_write_text
from fedopt.plan import Plan
from fedopt.solvers.registry import names as registry_names
from fedopt.solvers.result import Callback
from fedopt.solvers.validation.adapters import RoundBeamformers
from fedopt.solvers.validation.builder import build_run
from fedopt.solvers.validation.report import (
    ValidationReport,
    combine_seeds,
    ordering,
    retained_gains,
)
from fedopt.solvers.validation.settings import ValidateSettings, check_device

__all__ = ["DEFAULT_BASELINES", "EXTRA_METHODS", "ValidateSettings", "check_device",
           "check_model_layers", "loop_layers", "run_plan", "valid_methods", "validate"]

#: the comparison set of ``fedopt validate --baselines``
DEFAULT_BASELINES = ("ideal", "fixed-rank", "random-plan", "single-stream", "digital")
#: validation methods that are not AirComp planners: the error-free reference and TSFA
EXTRA_METHODS = ("ideal", "digital")
#: the registry method behind ``digital``
_DIGITAL_METHOD = "tsfa"
SUMMARY_FILE = "validate.json"


def valid_methods() -> list[str]:
    """Every name :func:`validate` runs: the registry's AirComp methods, ``ideal``, ``digital``."""
    return [*registry_names("planner"), *registry_names("beamforming"), *EXTRA_METHODS]


def _instance_for_data(instance: Instance, data_sizes: np.ndarray) -> Instance:
    if tuple(int(x) for x in data_sizes) == tuple(int(x) for x in
                                                  instance.devices.dataset_size):
        return instance
    return instance.with_devices(dataset_size=[int(x) for x in data_sizes])


def _method_names(plan: Plan | None, method: str, baselines: Sequence[str]) -> list[str]:
    """The main method, the baselines, and ``ideal`` (always: it is the reference of every
    method's retained gain)."""
    names = [method, *[b for b in baselines if b != method]]
    if "ideal" not in names:
        names.append("ideal")
    valid = valid_methods()
    for name in names:
        if name not in valid:
            raise InvalidArgumentError(f"method: got {name!r}, must be one of {', '.join(valid)}")
    if method in EXTRA_METHODS and plan is None:
        raise InvalidArgumentError(
            f"method: {method!r} is a baseline, not a planner; choose a planner such as "
            f"airfl-lora as the main method")
    return names


class _Plans:
    """The typed plan of every (method, seed), each solved once (the main plan also serves the
    ideal reference)."""

    def __init__(self, instance: Instance, given: Plan | None, main: str) -> None:
        self.instance, self.given, self.main = instance, given, main
        self.memo: dict[tuple[str, int], Plan] = {}

    def _solved(self, method: str, seed: int) -> Plan:
        from fedopt.solvers.registry import solve

        if (method, seed) not in self.memo:
            self.memo[(method, seed)] = solve(self.instance, method, seed=seed).solution
        return self.memo[(method, seed)]

    def __call__(self, name: str, seed: int) -> Plan:
        if name in ("ideal", self.main):
            return self.given.typed() if self.given is not None else self._solved(self.main,
                                                                                   seed)
        return self._solved(_DIGITAL_METHOD if name == "digital" else name, seed)


class _Progress:
    """Turns each run's round records into the one callback shape: ``{"done", "total",
    "label"}`` records; remembers whether the callback asked to stop."""

    def __init__(self, callback: Callback | None, total: int) -> None:
        self.callback, self.total, self.done, self.stopped = callback, total, 0, False

    def report(self, done: int, label: str) -> bool:
        self.done = done
        if self.callback is not None and self.callback(
                {"done": done, "total": self.total, "label": label}):
            self.stopped = True
        return self.stopped


@dataclass
class _Context:
    """What every run of one validation shares."""

    instance: Instance
    data: Any
    base: Any
    settings: ValidateSettings
    plans: _Plans
    progress: _Progress
    out: Path | None
    resume: bool
    cache: dict
    algorithm: str = "fedavg"
    suffix: str = ""


def run_plan(plan: Plan, instance: Instance, settings: ValidateSettings, seed: int, *,
             ideal: bool = False, data: Any = None, base: Any = None,
             cache: dict | None = None, out_dir: Path | None = None, resume: bool = False,
             name: str = "run", callback: Callback | None = None
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One run of ``plan`` (or, with ``ideal``, error-free aggregation at its rank) through the
    loop for ``seed``, with the instance's algorithm (``instance.algorithm``;
    :meth:`~fedopt.instance.Instance.with_algorithm` for another): its summary (with ``rank``,
    ``streams``, ``predicted``, ``algorithm``) and history.

    ``data`` and ``base`` default to the instance's testbed (``settings.client_data`` /
    ``settings.base_model``); pass them when running many plans on one split. Raises the
    :class:`~fedopt.errors.FedOptError` that keeps the plan from running (e.g. infeasible) or
    the run from resuming (e.g. a corrupt checkpoint).
    """
    run = build_run(plan, instance, seed=seed, mode=settings.mode, tsfa_v=settings.tsfa_v,
                    ideal=ideal, cache=cache)
    return _execute(run, instance, settings, seed, data=data, base=base, out_dir=out_dir,
                    resume=resume, name=name, callback=callback)


def _execute(run: Any, instance: Instance, settings: ValidateSettings, seed: int, *,
             data: Any, base: Any, out_dir: Path | None, resume: bool, name: str,
             callback: Callback | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train a built run (:func:`build_run`) for ``seed``."""
    from fedopt.fl.loop import run_federated

    data = settings.client_data(instance) if data is None else data
    base = settings.base_model(instance) if base is None else base
    algorithm = instance.algorithm
    model, _ = run.lora_model(base, settings, seed, algorithm)
    model.to(settings.device)
    res = run_federated(
        model, data, run.aggregator,
        settings.loop_config(instance, seed, algorithm=algorithm,
                             lr=settings.learning_rate(algorithm)),
        compute_time_s=float(np.max(instance.compute_time_s)), out_dir=out_dir, resume=resume,
        name=name, metadata={"method": name.split("/")[0], "seed": int(seed), "rank": run.rank,
                             "streams": run.streams, "predicted": run.predicted,
                             "algorithm": algorithm},
        callback=callback)
    summ = {**res.summary, "seed": int(seed), "rank": run.rank, "streams": run.streams,
            "predicted": run.predicted, "algorithm": algorithm}
    if isinstance(run.adapter, RoundBeamformers):
        summ["beamforming_solves"] = run.adapter.solves
        summ["beamforming_time_s"] = run.adapter.solve_time_s
    return summ, res.history


def _run_seed(ctx: _Context, name: str, seed: int) -> tuple[dict[str, Any], Any] | str:
    """One (method, seed) run: its summary and history, or the error that kept its plan from
    running (a run that cannot resume — a corrupt checkpoint — raises)."""
    s = ctx.settings
    try:
        run = build_run(ctx.plans(name, seed), ctx.instance, seed=seed, mode=s.mode,
                        tsfa_v=s.tsfa_v, ideal=name == "ideal", cache=ctx.cache)
    except FedOptError as exc:
        return f"{type(exc).__name__}: {exc}"
    key = name + ctx.suffix
    start, label = ctx.progress.done, f"{key} seed {seed}"
    try:
        out = _execute(run, ctx.instance, s, seed, data=ctx.data, base=ctx.base,
                       out_dir=None if ctx.out is None else ctx.out / key / f"seed-{seed}",
                       resume=ctx.resume, name=f"{key}/seed-{seed}",
                       callback=lambda rec: ctx.progress.report(start + rec["round"] + 1,
                                                                label))
    except PlanError as exc:  # the plan's uplink cannot carry the algorithm (MIRA's graph)
        return f"{type(exc).__name__}: {exc}"
    ctx.progress.done = start + s.rounds
    return out


def _run_method(ctx: _Context, name: str) -> dict[str, Any]:
    """Every seed of one method, combined (an error stops the method, not the validation)."""
    per_seed: list[dict[str, Any]] = []
    curves: list[tuple[list, list]] = []
    error = None
    for i, seed in enumerate(ctx.settings.seeds):
        if ctx.progress.stopped:
            break
        out = _run_seed(ctx, name, seed)
        if isinstance(out, str):
            error = out
            ctx.progress.report(ctx.progress.done + ctx.settings.rounds
                                * (len(ctx.settings.seeds) - i), f"{name}: {error[:60]}")
            break
        summ, history = out
        per_seed.append(summ)
        curves.append(([r["train_loss"] for r in history], [r["eval_loss"] for r in history]))
    return {**combine_seeds(per_seed, curves, error), "algorithm": ctx.algorithm,
            "per_client": _per_client(ctx.data, per_seed)}


def _per_client(data: Any, per_seed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per client: its task and its own held-out loss at the end (mean over seeds;
    each client's own model where the algorithm keeps one)."""
    tasks = list(data.client_tasks) if data.client_tasks else [None] * data.n_clients
    out = []
    for k in range(data.n_clients):
        vals = [s["client_eval_loss"][k] for s in per_seed
                if s.get("client_eval_loss") and s["client_eval_loss"][k] is not None]
        rec = {"client": k, "task": tasks[k],
               "local_eval_loss": float(np.mean(vals)) if vals else None}
        extra = [s["client_metrics"][k] for s in per_seed
                 if s.get("client_metrics") and s["client_metrics"][k] is not None]
        for key in (extra[0] if extra else {}):
            rec[key] = float(np.mean([e[key] for e in extra]))
        out.append(rec)
    return out


def _data_summary(data: Any, base: Any = None, instance: Instance | None = None,
                  replaced: bool = False) -> dict[str, Any]:
    out = {"data_sizes": data.data_sizes.tolist(), "topics_per_client": data.topics_per_client}
    if data.tasks:
        out.update(tasks=list(data.tasks), client_tasks=list(data.client_tasks),
                   task_mixing=data.task_mixing)
    from fedopt.fl.hf import HFBase

    if isinstance(base, HFBase):  # a Hugging Face model: what it is, the layers planned for
        out["model"] = {**base.describe(), "layers_replaced": replaced,
                        "lora_layers": [asdict(x) for x in instance.lora.layers]}
    return out


def _algorithm_names(instance: Instance, plan: Plan | None, algorithms: Sequence[str] | None,
                     settings: ValidateSettings) -> list[str]:
    """The algorithms to run (default: the instance's), each checked with the settings (a bad
    combination is an error before anything runs)."""
    from fedopt.fl.loop import LoopConfig
    from fedopt.instance import ALGORITHMS

    algs = list(dict.fromkeys(algorithms)) if algorithms else [instance.algorithm]
    for alg in algs:
        if alg not in ALGORITHMS:
            raise InvalidArgumentError(
                f"algorithm: got {alg!r}, must be one of {', '.join(ALGORITHMS)}")
        settings.check_algorithm(alg)
        if plan is not None and alg != instance.algorithm:
            raise InvalidArgumentError(
                f"algorithm: got {alg!r}, but the plan was solved for the instance's algorithm "
                f"{instance.algorithm!r} (its payload q(r) differs); validate the instance to "
                f"plan for {alg!r}, or use --algorithm {instance.algorithm}")
        LoopConfig(algorithm=alg, optimizer=settings.optimizer, lr=settings.learning_rate(alg))
    return algs


def validate(instance: Instance, *, plan: Plan | None = None, method: str = "airfl-lora",
             baselines: Sequence[str] = (), algorithms: Sequence[str] | None = None,
             settings: ValidateSettings | None = None,
             out_dir: str | Path | None = None, resume: bool = False,
             callback: Callback | None = None, model: str | Path | None = None
             ) -> ValidationReport:
    """Run the plan (or the instance's ``method`` plan) and ``baselines`` through the FL loop.

    Parameters
    ----------
    instance
        Its LoRA layers must be those of the loop's model (:func:`check_model_layers`; with a
        Hugging Face ``model`` and no ``plan``, an instance with other layers is given the
        model's, reported as ``data["model"]["layers_replaced"]``); its devices' data sizes are
        replaced by the loop's client split (the weights φ_k used by the plan are the ones the
        loop aggregates with).
    plan
        A plan to validate (its rank, streams and beamforming method; its beamformers are used on
        the channel they were solved for). Its shapes must fit the instance. Reported under its
        ``method`` name.
    method
        The planner used when ``plan`` is None (default ``airfl-lora``).
    baselines
        More methods (``DEFAULT_BASELINES`` for the comparison set; :func:`valid_methods`).
    algorithms
        The federated algorithms to run every method with (``fedavg``, ``ota-sophia``, ``ffa``,
        ``fedsa``; default: the instance's ``algorithm``). Each is planned on the instance with
        that algorithm (:meth:`~fedopt.instance.Instance.with_algorithm`: its payload q(r));
        with more than one, the methods are reported as ``NAME@ALGORITHM``, each against its
        own algorithm's ``ideal``.
    settings
        :class:`ValidateSettings`.
    out_dir
        Per run ``<out>/<method>/seed-<s>/`` (``rounds.jsonl``, ``checkpoint.npz``,
        ``summary.json``) and ``<out>/validate.json``; None keeps everything in memory.
    resume
        Continue interrupted runs from their checkpoints (finished runs are not re-run).
    callback
        ``callback({"done", "total", "label"})`` after every round (rounds done of all runs);
        True stops the validation after that round (resume it later with ``resume=True``).
    model
        A local Hugging Face model directory to fine-tune with PEFT LoRA (shortcut for
        ``settings.model``; :mod:`fedopt.fl.hf`).

    Returns
    -------
    ValidationReport
        Per method (``methods[NAME]``) the means over seeds of ``final_train_loss``,
        ``final_eval_loss``, ``perplexity``, ``measured_aggregation_error``,
        ``predicted_aggregation_error``, ``relative_aggregation_error``, ``airtime_s``,
        ``latency_s``, ``energy_j_max`` (each with a ``*_std`` over seeds), the
        ``rank``/``streams`` used, the plan's predictions, per-seed summaries and the per-round
        curves, its ``algorithm``, or ``error`` when the method could not run (e.g.
        infeasible).
    """
    from fedopt.fl.loop import check_out_dir

    t_start = time.perf_counter()
    settings = (settings or ValidateSettings.for_testbed(instance.learning.testbed)
                ).with_model(model)
    instance, replaced = settings.loop_instance(instance, adopt=plan is None)
    if plan is not None:
        plan.check(instance)
        method = plan.method
    names = _method_names(plan, method, baselines)
    algs = _algorithm_names(instance, plan, algorithms, settings)
    out = None if out_dir is None else check_out_dir(out_dir)
    data = settings.client_data(instance)
    inst = _instance_for_data(instance, data.data_sizes)
    if plan is not None and inst is not instance:
        plan.check(inst)
    base = settings.base_model(instance)
    base_loss = settings.base_eval_loss(base, data)
    progress = _Progress(callback, len(algs) * len(names) * len(settings.seeds)
                         * settings.rounds)
    results: dict[str, dict[str, Any]] = {}
    for alg in algs:
        inst_a = inst if inst.algorithm == alg else inst.with_algorithm(alg)
        suffix = "" if len(algs) == 1 else f"@{alg}"
        ctx = _Context(inst_a, data, base, settings, _Plans(inst_a, plan, method), progress,
                       out, resume, {}, algorithm=alg, suffix=suffix)
        group = {name: _run_method(ctx, name) for name in names}
        retained_gains(group, base_loss)
        results.update({name + suffix: entry for name, entry in group.items()})
    report = ValidationReport(
        instance=inst.name, instance_digest=inst.digest(), settings=settings.to_dict(),
        main_method=method, data=_data_summary(data, base, inst, replaced),
        base_eval_loss=base_loss,
        methods=results, ordering=ordering(results), wall_s=time.perf_counter() - t_start,
        out_dir=None if out is None else str(out), stopped=ctx.progress.stopped)
    if out is not None:
        atomic_write_text(out / SUMMARY_FILE, json.dumps(report.to_dict(), indent=2) + "\n")
    return report
