"""The federated LoRA loop (spec 05 §2, §6): rounds, local steps, aggregation, accounting.

One round t:

1. broadcast the global LoRA vector θ_t (every client loads it into its adapters);
2. client k computes what the algorithm (``LoopConfig.algorithm``, :mod:`fedopt.fl.algorithms`)
   has it send. For ``fedavg`` it runs E local steps (SGD or AdamW, a fresh optimizer each
   round; SophiaG continuing the client's own state) on mini-batches of its own training text,
   drawn from ``SeedSequence(seed, spawn_key=(2, t, k))``, and sends the pseudo-gradient
   g_k = θ_t − θ_{t,k}^{(E)} (with E = 1 and SGD, g_k = lr · ∇F_k(θ_t): FedSGD); ``ffa`` /
   ``fedsa`` send only B's / A's part of it, ``ota-sophia`` its Sophia statistics (m_k, h_k);
3. the aggregator (:mod:`fedopt.fl.aggregators`) estimates ḡ = Σ φ_k g_k / Σ φ_k with its own
   generator ``SeedSequence(seed, spawn_key=(3, t))``;
4. the algorithm's server step: θ_{t+1} = θ_t − η_s ĝ on the entries sent (``ota-sophia``: the
   clipped Sophia step on (m̂, ĥ));
5. evaluation (global held-out loss and perplexity; per client at the last round) and
   accounting (measured ‖ĝ − ḡ‖², the aggregator's prediction, airtime, latency, energy).

Every random draw of round t is a function of (seed, t) alone (:mod:`fedopt.fl.config`: settings
and generators), so the state to resume a run is θ, the round index, the log so far, the
aggregator's own state (warm starts, queues) and the algorithm's (each client's private B, its
SophiaG or over-the-air Sophia statistics): that is what the checkpoint holds
(:mod:`fedopt.fl.checkpoint`: ``rounds.jsonl``, ``checkpoint.npz``, ``summary.json``). A resumed
run is identical to an uninterrupted one (tested). Both modules' public names are re-exported
here. This module imports torch; ``fedopt`` itself does not import it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fedopt.errors import InvalidArgumentError
from fedopt.fl.aggregators import AggregationResult, Aggregator
from fedopt.fl.algorithms import Algorithm, make_algorithm
from fedopt.fl.checkpoint import (
    CHECKPOINT_NAME,
    LOG_NAME,
    SUMMARY_NAME,
    RunFiles,
    check_out_dir,
    is_stateful,
    run_digest,
)
from fedopt.fl.config import OPTIMIZERS, LoopConfig, client_rng, require_number, round_rng
from fedopt.fl.data import FederatedData
from fedopt.fl.lora import LoRALinear, flatten_lora, lora_modules, lora_parameters, unflatten_lora
from fedopt.fl.training import deterministic, evaluate_loss

__all__ = ["OPTIMIZERS", "LoopConfig", "RunResult", "run_federated", "round_rng", "client_rng",
           "CHECKPOINT_NAME", "LOG_NAME", "SUMMARY_NAME", "check_out_dir"]


@dataclass
class RunResult:
    """A finished (or stopped) run.

    Attributes
    ----------
    history : list of dict
        One record per completed round (see :func:`run_federated`).
    summary : dict
        Final metrics and the run's description (what ``summary.json`` holds).
    theta : np.ndarray
        Final global LoRA vector (float64).
    completed : bool
        False when a callback stopped the run early.
    """

    history: list[dict[str, Any]]
    summary: dict[str, Any]
    theta: np.ndarray
    completed: bool = True
    paths: dict[str, str] = field(default_factory=dict)


@dataclass
class _Run:
    """The checked inputs of one run and what is derived from them."""

    model: nn.Module
    data: FederatedData
    aggregator: Aggregator
    cfg: LoopConfig
    mods: dict[str, LoRALinear]
    params: list[nn.Parameter]
    phi: np.ndarray
    compute_time_s: float
    seq_len: int
    device: torch.device
    algorithm: Algorithm

    def flat(self) -> np.ndarray:
        """The adapters' current LoRA vector (float64)."""
        return flatten_lora(self.mods).double().cpu().numpy()

    def load(self, theta: np.ndarray) -> None:
        """Load a LoRA vector into the adapters (in their dtype, on their device)."""
        unflatten_lora(self.mods, torch.as_tensor(theta, dtype=self.params[0].dtype,
                                                  device=self.device))

    def ranks(self) -> list[int]:
        return sorted({m.rank for m in self.mods.values()})


def _check_weights(weights: Sequence[float] | None, data: FederatedData) -> np.ndarray:
    k = data.n_clients
    phi = data.weights if weights is None else np.asarray(weights, dtype=float)
    if phi.shape != (k,) or not np.all(np.isfinite(phi)) or np.any(phi < 0) or phi.sum() <= 0:
        raise InvalidArgumentError(
            f"weights: expected {k} finite φ_k >= 0 with a positive sum (one per client), got "
            f"{np.asarray(weights).tolist()}")
    return phi


def _check_seq_len(cfg: LoopConfig, model: nn.Module, data: FederatedData) -> int:
    seq_len = cfg.seq_len or getattr(model, "seq_len", None)
    if seq_len is None:
        raise InvalidArgumentError("config.seq_len: required for a model without a seq_len")
    for c in data.clients:
        if c.n_train < seq_len + 1:
            raise InvalidArgumentError(
                f"data: client {c.client_id} has {c.n_train} training characters, fewer than one "
                f"window of seq_len + 1 = {seq_len + 1}; use fewer clients or a shorter seq_len")
    return seq_len


def _prepare(model: nn.Module, data: FederatedData, aggregator: Aggregator,
             config: LoopConfig | None, weights: Sequence[float] | None,
             compute_time_s: float) -> _Run:
    """Check the arguments of :func:`run_federated` (in the order of its signature)."""
    cfg = config or LoopConfig()
    if not isinstance(cfg, LoopConfig):
        raise InvalidArgumentError(f"config: expected a LoopConfig, got {type(cfg).__name__}")
    if not callable(getattr(aggregator, "aggregate", None)):
        raise InvalidArgumentError(
            f"aggregator: expected an object with aggregate(updates, weights, round, rng), got "
            f"{type(aggregator).__name__}")
    mods = lora_modules(model)
    if not mods:
        raise InvalidArgumentError(
            "model: has no LoRA adapters; call fedopt.fl.lora.apply_lora(model, rank) first")
    params = lora_parameters(mods)
    phi = _check_weights(weights, data)
    compute_time_s = require_number("compute_time_s", compute_time_s, allow_zero=True)
    seq_len = _check_seq_len(cfg, model, data)
    run = _Run(model=model, data=data, aggregator=aggregator, cfg=cfg, mods=mods,
               params=params, phi=phi, compute_time_s=compute_time_s, seq_len=seq_len,
               device=next(iter(mods.values())).A.device, algorithm=make_algorithm(cfg.algorithm))
    run.algorithm.bind(run, run.flat())
    return run


def _diverged(t: int, what: str, cfg: LoopConfig) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"round {t}: {what} became non-finite (training diverged); lower lr (now {cfg.lr:g}) or "
        f"server_lr (now {cfg.server_lr:g}), or clip gradients (grad_clip, now {cfg.grad_clip})")


def _client_updates(run: _Run, theta: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1–2: every client starts from θ_t; what it sends (its update g_k, or what the
    algorithm has it send) and its first-batch loss."""
    k = run.data.n_clients
    updates = np.empty((k, run.algorithm.payload_size), dtype=np.float64)
    train_losses = np.empty(k)
    run.model.train()
    for ci in range(k):
        updates[ci], train_losses[ci] = run.algorithm.client_update(run, theta, t, ci)
        if not (math.isfinite(train_losses[ci]) and np.all(np.isfinite(updates[ci]))):
            raise _diverged(t, f"client {ci}'s local update", run.cfg)
    return updates, train_losses


def _server_step(run: _Run, theta: np.ndarray, updates: np.ndarray,
                 t: int) -> tuple[np.ndarray, AggregationResult]:
    """Steps 3–4: aggregate, the algorithm's server step (θ_{t+1} = θ_t − η_s ĝ for averaging),
    loaded into the adapters."""
    res = run.algorithm.aggregate(run, updates, t)
    theta = run.algorithm.server_update(run, theta, res.estimate, t)
    if not np.all(np.isfinite(theta)):
        raise _diverged(t, "the global LoRA state", run.cfg)
    run.load(theta)
    return theta, res


def _evaluation(run: _Run, theta: np.ndarray, t: int) -> dict[str, float | None]:
    """Step 5a: the global held-out loss and perplexity (None on rounds without evaluation)."""
    cfg = run.cfg
    if t == cfg.rounds - 1 or (t + 1) % cfg.eval_every == 0:
        loss = _global_loss(run, theta)
        if not math.isfinite(loss):
            raise _diverged(t, "the held-out loss", cfg)
        return {"eval_loss": loss, "perplexity": _perplexity(loss)}
    return {"eval_loss": None, "perplexity": None}


def _global_loss(run: _Run, theta: np.ndarray) -> float:
    """The global held-out loss of θ; for an algorithm with private parameters, the φ-weighted
    mean over clients of their own models' losses on it (the adapters end holding θ)."""
    def loss() -> float:
        return evaluate_loss(run.model, run.data.global_heldout, run.seq_len,
                             max_batches=run.cfg.eval_batches).loss

    if not run.algorithm.personal:
        return loss()
    losses = []
    for k in range(run.data.n_clients):
        run.load(run.algorithm.client_theta(theta, k))
        losses.append(loss())
    run.load(theta)
    return float(run.phi @ np.asarray(losses) / run.phi.sum())


def _accounting(res: AggregationResult, compute_time_s: float) -> dict[str, Any]:
    """Step 5b: measured and predicted aggregation error, airtime, latency, energy."""
    norm2 = float(np.sum(res.exact ** 2))
    latency = getattr(res, "latency_s", None)
    airtime = res.airtime_s
    if latency is None:
        latency = compute_time_s + (airtime or 0.0)
    energy = getattr(res, "energy_j", None)
    return {
        "aggregation_error": float(res.error),
        "predicted_aggregation_error": None if res.predicted_error is None
        else float(res.predicted_error),
        "relative_aggregation_error": float(res.error / norm2) if norm2 > 0 else None,
        "update_norm": math.sqrt(norm2),
        "airtime_s": None if airtime is None else float(airtime),
        "latency_s": float(latency),
        "energy_j_max": None if energy is None else float(np.max(energy)),
        "energy_j_mean": None if energy is None else float(np.mean(energy)),
    }


def _one_round(run: _Run, theta: np.ndarray, t: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Round t: local updates, aggregation and server step, evaluation and accounting."""
    t0 = time.perf_counter()
    updates, train_losses = _client_updates(run, theta, t)
    theta, res = _server_step(run, theta, updates, t)
    rec: dict[str, Any] = {"round": t,
                           "train_loss": float(run.phi @ train_losses / run.phi.sum())}
    rec.update(_evaluation(run, theta, t))
    rec.update(_accounting(res, run.compute_time_s))
    rec["wall_s"] = time.perf_counter() - t0
    return theta, rec


def _run_rounds(run: _Run, files: RunFiles, theta: np.ndarray, start: int,
                history: list[dict[str, Any]],
                callback: Callable[[dict[str, Any]], bool | None] | None
                ) -> tuple[np.ndarray, bool]:
    """Rounds start..T−1, each logged and checkpointed; (final θ, whether all rounds ran)."""
    for t in range(start, run.cfg.rounds):
        theta, rec = _one_round(run, theta, t)
        history.append(rec)
        files.record_round(history, theta, t + 1, run.aggregator, run.algorithm)
        if callback is not None and callback(rec) and t != run.cfg.rounds - 1:
            return theta, False
    return theta, True


def _client_eval(run: _Run, theta: np.ndarray) -> tuple[list[float | None], list | None]:
    """Per-client held-out losses of the final model, each client's own where it keeps private
    parameters (None for a client with < 2 held out), and the algorithm's per-client metrics
    (PWFF's rewards; None without); the adapters end holding θ."""
    run.model.eval()
    out: list[float | None] = []
    metrics = getattr(run.algorithm, "client_metrics", None)
    extra = [] if callable(metrics) else None
    for k, c in enumerate(run.data.clients):
        run.load(run.algorithm.client_theta(theta, k))
        out.append(evaluate_loss(run.model, c.heldout, run.seq_len,
                                 max_batches=run.cfg.eval_batches).loss
                   if c.n_heldout >= 2 else None)
        if extra is not None:
            extra.append(metrics(run, k) if c.n_heldout >= 2 else None)
    run.load(theta)
    return out, extra


def _restore_or_start(run: _Run, files: RunFiles, resume: bool, theta: np.ndarray
                      ) -> tuple[np.ndarray, int, list[dict[str, Any]]]:
    """(θ, first round, log so far): from the checkpoint when resuming, else a fresh start.
    The adapters are loaded with that θ (a resumed run, even a finished one, starts there)."""
    state = files.restore_or_reset(resume, theta.size)
    start, history = 0, []
    if state is not None:
        theta, start, history = state.theta, state.next_round, state.history
        if is_stateful(run.aggregator):
            run.aggregator.load_state_dict(state.agg_state)
        run.algorithm.load_state_dict(state.alg_state)
    run.load(theta)
    return theta, start, history


def run_federated(model: nn.Module, data: FederatedData, aggregator: Aggregator,
                  config: LoopConfig | None = None, *, weights: Sequence[float] | None = None,
                  compute_time_s: float = 0.0, out_dir: str | os.PathLike | None = None,
                  resume: bool = False, name: str = "run",
                  metadata: Mapping[str, Any] | None = None,
                  callback: Callable[[dict[str, Any]], bool | None] | None = None
                  ) -> RunResult:
    """Federated LoRA fine-tuning of ``model`` (adapted with :func:`fedopt.fl.lora.apply_lora`).

    Parameters
    ----------
    model
        Any ``nn.Module`` with LoRA adapters; only the adapters' A and B are trained and sent,
        in :func:`fedopt.fl.lora.flatten_lora` order (length q(r)). It is modified in place and ends
        holding the final global LoRA state.
    data
        The clients' training and held-out text (:func:`fedopt.fl.data.make_federated_data`).
    aggregator
        Anything with ``aggregate(updates, weights, round_index, rng)``
        (:mod:`fedopt.fl.aggregators`); if it has ``state_dict``/``load_state_dict`` its state is
        checkpointed.
    config
        :class:`LoopConfig` (default settings when omitted); its ``algorithm`` says what the
        clients send (``fedavg``, ``ota-sophia``, ``ffa``, ``fedsa``, ``local``, ``mira``,
        ``pwff``), and the aggregator receives (K, payload) arrays of that algorithm's payload
        (``summary["payload_reals"]``; MIRA makes one call per task cluster over AirComp).
    weights
        φ_k (default: the data shares D_k / Σ D_j).
    compute_time_s
        Local compute time per round, added to the airtime when the aggregator reports no
        latency of its own.
    out_dir
        Where to write ``rounds.jsonl``, ``checkpoint.npz`` and ``summary.json``; None keeps
        everything in memory.
    resume
        Continue from ``out_dir/checkpoint.npz`` if it exists (it must come from the same run:
        the checkpoint stores a digest of the configuration).
    name, metadata
        Recorded in the summary.
    callback
        Called with each round's record; returning True stops the run after that round (the
        checkpoint is written first, so it can be resumed).

    Returns
    -------
    RunResult
        Per-round records with keys ``round``, ``train_loss`` (φ-weighted loss of the clients'
        first local mini-batch, at θ_t), ``eval_loss`` / ``perplexity`` (global held-out, after
        the update; None on rounds without evaluation), ``aggregation_error`` (‖ĝ − ḡ‖²),
        ``predicted_aggregation_error``, ``relative_aggregation_error`` (‖ĝ − ḡ‖² / ‖ḡ‖²),
        ``update_norm`` (‖ḡ‖), ``airtime_s``, ``latency_s``, ``energy_j_max``, ``energy_j_mean``,
        ``wall_s``; and the summary (means over rounds, final losses, per-client held-out losses).
    """
    run = _prepare(model, data, aggregator, config, weights, compute_time_s)
    theta = run.flat()
    files = RunFiles(out_dir, run_digest(
        config=run.cfg.to_dict(), phi=run.phi, q=theta.size, ranks=run.ranks(), model=model,
        mods=run.mods, data_summary=data.summary(), aggregator=aggregator,
        compute_time_s=run.compute_time_s))
    theta, start, history = _restore_or_start(run, files, resume, theta)
    client_eval = client_metrics = None
    with deterministic(model):
        theta, completed = _run_rounds(run, files, theta, start, history, callback)
        if completed and history:
            client_eval, client_metrics = _client_eval(run, theta)
    summary = _summarize(history, run.cfg, name, metadata, client_eval,
                         run.algorithm.payload_size, run.ranks(), completed)
    if client_metrics is not None:
        summary["client_metrics"] = client_metrics
    return RunResult(history=history, summary=summary, theta=theta, completed=completed,
                     paths=files.finish(summary, completed))


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _summarize(history: list[dict[str, Any]], cfg: LoopConfig, name: str,
               metadata: Mapping[str, Any] | None, client_eval: list[float | None] | None,
               q: int, ranks: list[int], completed: bool) -> dict[str, Any]:
    last = history[-1] if history else {}
    evals = [r for r in history if r.get("eval_loss") is not None]
    final_eval = evals[-1]["eval_loss"] if evals else None
    return {
        "name": name, "completed": completed, "rounds": len(history),
        "algorithm": cfg.algorithm, "payload_reals": q, "ranks": ranks,
        "config": cfg.to_dict(),
        "final_train_loss": last.get("train_loss"),
        "final_eval_loss": final_eval,
        "perplexity": None if final_eval is None else _perplexity(final_eval),
        "measured_aggregation_error": _mean([r["aggregation_error"] for r in history]),
        "predicted_aggregation_error": _mean([r["predicted_aggregation_error"]
                                              for r in history]),
        "relative_aggregation_error": _mean([r["relative_aggregation_error"] for r in history]),
        "airtime_s": _mean([r["airtime_s"] for r in history]),
        "latency_s": _mean([r["latency_s"] for r in history]),
        "energy_j_max": _mean([r["energy_j_max"] for r in history]),
        "total_latency_s": float(sum(r["latency_s"] for r in history)),
        "client_eval_loss": client_eval,
        "metadata": dict(metadata or {}),
    }
