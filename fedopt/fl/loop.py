"""The federated LoRA loop (spec 05 §2, §6): rounds, local steps, aggregation, accounting.

One round t:

1. broadcast the global LoRA vector θ_t (every client loads it into its adapters);
2. client k runs E local steps (SGD or AdamW, a fresh optimizer each round: clients keep no
   state) on mini-batches of its own training text, drawn from
   ``SeedSequence(seed, spawn_key=(2, t, k))``; its update is the pseudo-gradient
   g_k = θ_t − θ_{t,k}^{(E)} (with E = 1 and SGD, g_k = lr · ∇F_k(θ_t): FedSGD);
3. the aggregator (:mod:`fedopt.fl.aggregators`) estimates ḡ = Σ φ_k g_k / Σ φ_k with its own
   generator ``SeedSequence(seed, spawn_key=(3, t))``;
4. the server applies θ_{t+1} = θ_t − η_s ĝ;
5. evaluation (global held-out loss and perplexity; per client at the last round) and
   accounting (measured ‖ĝ − ḡ‖², the aggregator's prediction, airtime, latency, energy).

Every random draw of round t is a function of (seed, t) alone, so the state to resume a run is
θ, the round index, the log so far and the aggregator's own state (warm starts, queues): that
is what the checkpoint holds (an ``.npz`` read with ``allow_pickle=False``). A resumed run is
identical to an uninterrupted one (tested).

Output directory (optional): ``rounds.jsonl`` (one JSON record per round, rewritten atomically
after each round), ``checkpoint.npz`` and, at the end, ``summary.json``.

This module imports torch; ``fedopt`` itself does not import it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedopt.errors import CheckpointError, InvalidArgumentError
from fedopt.fl.aggregators import Aggregator
from fedopt.fl.charmodel import evaluate_loss
from fedopt.fl.data import FederatedData, sample_batch
from fedopt.fl.lora import flatten_lora, lora_modules, lora_parameters, unflatten_lora
from fedopt.io import atomic_savez, atomic_write_text, ensure_dir

__all__ = ["OPTIMIZERS", "LoopConfig", "RunResult", "run_federated", "round_rng", "client_rng",
           "CHECKPOINT_NAME", "LOG_NAME", "SUMMARY_NAME", "check_out_dir"]

OPTIMIZERS = ("sgd", "adamw")
CHECKPOINT_NAME = "checkpoint.npz"
LOG_NAME = "rounds.jsonl"
SUMMARY_NAME = "summary.json"
_CKPT_FORMAT = "fedopt-fl-run"
_CKPT_VERSION = 1


def _pos_int(name: str, value: Any, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise InvalidArgumentError(f"{name}: got {value!r}, must be an integer >= {least}")
    return int(value)


def _pos_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name}: got {value!r}, must be a number") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InvalidArgumentError(
            f"{name}: got {value!r}, must be a finite number {'>= 0' if allow_zero else '> 0'}")
    return v


@dataclass(frozen=True)
class LoopConfig:
    """Settings of a federated run (validated on construction).

    Attributes
    ----------
    rounds : int
        T, communication rounds.
    local_steps : int
        E, local steps per round (1 = FedSGD).
    batch_size : int
        Windows per local mini-batch.
    seq_len : int or None
        Window length (default: the model's ``seq_len``).
    optimizer : {"sgd", "adamw"}
        Local optimizer (AdamW with β = (0.9, 0.999)).
    lr : float
        Local learning rate.
    weight_decay : float
        Decoupled weight decay (AdamW) or L2 (SGD) on the LoRA factors.
    server_lr : float
        η_s in θ ← θ − η_s ĝ.
    grad_clip : float or None
        Clip each local gradient to this 2-norm (None: no clipping).
    eval_every : int
        Evaluate the global model every this many rounds (and always after the last).
    eval_batches : int
        Cap on held-out batches of 64 windows per evaluation (spread over the whole set).
    seed : int
        Seeds batches and aggregation noise (and nothing else: the model and data come in).
    """

    rounds: int = 30
    local_steps: int = 1
    batch_size: int = 16
    seq_len: int | None = None
    optimizer: str = "sgd"
    lr: float = 1.0
    weight_decay: float = 0.0
    server_lr: float = 1.0
    grad_clip: float | None = None
    eval_every: int = 1
    eval_batches: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        _pos_int("rounds", self.rounds)
        _pos_int("local_steps", self.local_steps)
        _pos_int("batch_size", self.batch_size)
        if self.seq_len is not None:
            _pos_int("seq_len", self.seq_len)
        if self.optimizer not in OPTIMIZERS:
            raise InvalidArgumentError(
                f"optimizer: got {self.optimizer!r}, must be one of {', '.join(OPTIMIZERS)}")
        _pos_float("lr", self.lr)
        _pos_float("weight_decay", self.weight_decay, allow_zero=True)
        _pos_float("server_lr", self.server_lr)
        if self.grad_clip is not None:
            _pos_float("grad_clip", self.grad_clip)
        _pos_int("eval_every", self.eval_every)
        _pos_int("eval_batches", self.eval_batches)
        _pos_int("seed", self.seed, least=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def client_rng(seed: int, round_index: int, client: int) -> np.random.Generator:
    """Generator of client ``client``'s mini-batches in round ``round_index``."""
    return np.random.default_rng(np.random.SeedSequence(int(seed),
                                                        spawn_key=(2, int(round_index),
                                                                   int(client))))


def round_rng(seed: int, round_index: int) -> np.random.Generator:
    """Generator handed to the aggregator in round ``round_index`` (noise draws)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed),
                                                        spawn_key=(3, int(round_index))))


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


def _stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None))


def _local_update(model: nn.Module, params: Sequence[nn.Parameter], ids: np.ndarray,
                  cfg: LoopConfig, seq_len: int, rng: np.random.Generator,
                  device: torch.device) -> float:
    """E local steps in place; returns the loss of the first mini-batch (at θ_t)."""
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=cfg.lr,
                                                     weight_decay=cfg.weight_decay,
                                                     foreach=False)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                foreach=False)
    first = float("nan")
    for step in range(cfg.local_steps):
        x, y = sample_batch(ids, cfg.batch_size, seq_len, rng)
        logits = model(torch.from_numpy(x).to(device))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               torch.from_numpy(y).to(device).reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=False)
        opt.step()
        if step == 0:
            first = float(loss.detach())
    return first


def _diverged(t: int, what: str, cfg: LoopConfig) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"round {t}: {what} became non-finite (training diverged); lower lr (now {cfg.lr:g}) or "
        f"server_lr (now {cfg.server_lr:g}), or clip gradients (grad_clip, now {cfg.grad_clip})")


def _base_digest(model: nn.Module, mods: Mapping[str, Any]) -> str:
    """SHA-256 of the frozen parameters and buffers and of the adapter layout."""
    h = hashlib.sha256()
    lora_ids = {id(p) for m in mods.values() for p in (m.A, m.B)}
    for name, p in [*model.named_parameters(), *model.named_buffers()]:
        if id(p) in lora_ids:
            continue
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    for name, m in mods.items():
        h.update(f"{name}:{m.rank}:{m.d_out}:{m.d_in}:{m.alpha!r}".encode())
    return h.hexdigest()[:16]


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def _config_digest(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16]


def _save_checkpoint(path: Path, *, theta: np.ndarray, next_round: int, digest: str,
                     history: list[dict[str, Any]], agg_state: Mapping[str, np.ndarray]) -> None:
    arrays: dict[str, np.ndarray] = {
        "format": np.array(_CKPT_FORMAT), "version": np.array(_CKPT_VERSION),
        "theta": np.asarray(theta, dtype=np.float64), "next_round": np.array(int(next_round)),
        "digest": np.array(digest), "history_json": np.array(json.dumps(history)),
    }
    for k, v in agg_state.items():
        arrays[f"agg.{k}"] = np.asarray(v)
    atomic_savez(path, **arrays)


def _load_checkpoint(path: Path, digest: str, q: int) -> tuple[np.ndarray, int, list[dict],
                                                               dict[str, np.ndarray]]:
    hint = "delete it (or the output directory) to start the run afresh"
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # truncated zip, bad header, object arrays, ...
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or unreadable ({type(exc).__name__}: "
            f"{exc}); {hint}") from exc
    try:
        if str(data["format"]) != _CKPT_FORMAT or int(data["version"]) != _CKPT_VERSION:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is not a fedopt FL-run checkpoint of version "
                f"{_CKPT_VERSION}; {hint}")
        if str(data["digest"]) != digest:
            raise CheckpointError(
                f"checkpoint {str(path)!r} belongs to a different run (configuration digest "
                f"{str(data['digest'])} != {digest}: model, data, aggregator or settings "
                f"changed); {hint}, or resume with the original settings")
        theta = np.asarray(data["theta"], dtype=np.float64)
        history = json.loads(str(data["history_json"]))
        nxt = int(data["next_round"])
    except KeyError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {exc}; {hint}") from exc
    if theta.shape != (q,) or not np.all(np.isfinite(theta)) or len(history) != nxt:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is inconsistent (theta shape {theta.shape}, expected "
            f"({q},); {len(history)} logged rounds for next round {nxt}); {hint}")
    agg = {k[4:]: v for k, v in data.items() if k.startswith("agg.")}
    return theta, nxt, history, agg


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """The run's output directory, created and checked (:func:`fedopt.io.ensure_dir`)."""
    return ensure_dir(out_dir, "out_dir")


def _write_log(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(rec) + "\n" for rec in history))


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


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
        :class:`LoopConfig` (default settings when omitted).
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
    k = data.n_clients
    phi = data.weights if weights is None else np.asarray(weights, dtype=float)
    if phi.shape != (k,) or not np.all(np.isfinite(phi)) or np.any(phi < 0) or phi.sum() <= 0:
        raise InvalidArgumentError(
            f"weights: expected {k} finite φ_k >= 0 with a positive sum (one per client), got "
            f"{np.asarray(weights).tolist()}")
    compute_time_s = _pos_float("compute_time_s", compute_time_s, allow_zero=True)
    seq_len = cfg.seq_len or getattr(model, "seq_len", None)
    if seq_len is None:
        raise InvalidArgumentError("config.seq_len: required for a model without a seq_len")
    for c in data.clients:
        if c.n_train < seq_len + 1:
            raise InvalidArgumentError(
                f"data: client {c.client_id} has {c.n_train} training characters, fewer than one "
                f"window of seq_len + 1 = {seq_len + 1}; use fewer clients or a shorter seq_len")
    device = next(iter(mods.values())).A.device
    theta = flatten_lora(mods).double().cpu().numpy()
    q = theta.size
    ranks = sorted({m.rank for m in mods.values()})
    digest = _config_digest({
        "config": cfg.to_dict(), "phi": phi.tolist(), "q": q, "ranks": ranks,
        # the frozen base weights and the adapters' layout identify the run (not the current
        # LoRA values: a stopped model holds θ_t, and θ comes from the checkpoint anyway)
        "base": _base_digest(model, mods),
        "data": data.summary(), "aggregator": getattr(aggregator, "describe", lambda: {
            "type": type(aggregator).__name__})(),
        "compute_time_s": compute_time_s,
    })

    out = check_out_dir(Path(out_dir)) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out else None
    log_path = out / LOG_NAME if out else None
    history: list[dict[str, Any]] = []
    start = 0
    if resume and ckpt_path is not None and ckpt_path.exists():
        theta, start, history, agg_state = _load_checkpoint(ckpt_path, digest, q)
        if _stateful(aggregator):
            aggregator.load_state_dict(agg_state)
    elif out is not None:
        for p in (ckpt_path, out / SUMMARY_NAME):
            if p.exists():
                p.unlink()

    def load_theta(vec: np.ndarray) -> None:
        unflatten_lora(mods, torch.as_tensor(vec, dtype=params[0].dtype, device=device))

    load_theta(theta)  # a resumed run (even a finished one) starts from its checkpoint

    was_training = model.training
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    completed = True
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        for t in range(start, cfg.rounds):
            t0 = time.perf_counter()
            updates = np.empty((k, q), dtype=np.float64)
            train_losses = np.empty(k)
            model.train()
            for ci, client in enumerate(data.clients):
                load_theta(theta)
                train_losses[ci] = _local_update(model, params, client.train, cfg, seq_len,
                                                 client_rng(cfg.seed, t, ci), device)
                updates[ci] = theta - flatten_lora(mods).double().cpu().numpy()
                if not (math.isfinite(train_losses[ci]) and np.all(np.isfinite(updates[ci]))):
                    raise _diverged(t, f"client {ci}'s local update", cfg)
            res = aggregator.aggregate(updates, phi, t, round_rng(cfg.seed, t))
            theta = theta - cfg.server_lr * np.asarray(res.estimate, dtype=np.float64)
            if not np.all(np.isfinite(theta)):
                raise _diverged(t, "the global LoRA state", cfg)
            load_theta(theta)
            last = t == cfg.rounds - 1
            rec: dict[str, Any] = {"round": t,
                                   "train_loss": float(phi @ train_losses / phi.sum())}
            if last or (t + 1) % cfg.eval_every == 0:
                ev = evaluate_loss(model, data.global_heldout, seq_len,
                                   max_batches=cfg.eval_batches)
                if not math.isfinite(ev.loss):
                    raise _diverged(t, "the held-out loss", cfg)
                rec["eval_loss"], rec["perplexity"] = ev.loss, ev.perplexity
            else:
                rec["eval_loss"] = rec["perplexity"] = None
            norm2 = float(np.sum(res.exact ** 2))
            latency = getattr(res, "latency_s", None)
            airtime = res.airtime_s
            if latency is None:
                latency = compute_time_s + (airtime or 0.0)
            energy = getattr(res, "energy_j", None)
            rec.update({
                "aggregation_error": float(res.error),
                "predicted_aggregation_error": None if res.predicted_error is None
                else float(res.predicted_error),
                "relative_aggregation_error": float(res.error / norm2) if norm2 > 0 else None,
                "update_norm": math.sqrt(norm2),
                "airtime_s": None if airtime is None else float(airtime),
                "latency_s": float(latency),
                "energy_j_max": None if energy is None else float(np.max(energy)),
                "energy_j_mean": None if energy is None else float(np.mean(energy)),
                "wall_s": time.perf_counter() - t0,
            })
            history.append(rec)
            if out is not None:
                _write_log(log_path, history)
                _save_checkpoint(ckpt_path, theta=theta, next_round=t + 1, digest=digest,
                                 history=history,
                                 agg_state=aggregator.state_dict() if _stateful(aggregator)
                                 else {})
            if callback is not None and callback(rec) and not last:
                completed = False
                break
        client_eval = None
        if completed and history:
            model.eval()
            client_eval = [evaluate_loss(model, c.heldout, seq_len,
                                         max_batches=cfg.eval_batches).loss
                           if c.n_heldout >= 2 else None for c in data.clients]
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        model.train(was_training)

    summary = _summarize(history, cfg, name, metadata, client_eval, q, ranks, completed)
    paths = {}
    if out is not None:
        paths = {"log": str(log_path), "checkpoint": str(ckpt_path)}
        if completed:
            atomic_write_text(out / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
            paths["summary"] = str(out / SUMMARY_NAME)
    return RunResult(history=history, summary=summary, theta=theta, completed=completed,
                     paths=paths)


def _summarize(history: list[dict[str, Any]], cfg: LoopConfig, name: str,
               metadata: Mapping[str, Any] | None, client_eval: list[float | None] | None,
               q: int, ranks: list[int], completed: bool) -> dict[str, Any]:
    last = history[-1] if history else {}
    evals = [r for r in history if r.get("eval_loss") is not None]
    final_eval = evals[-1]["eval_loss"] if evals else None
    return {
        "name": name, "completed": completed, "rounds": len(history),
        "payload_reals": q, "ranks": ranks, "config": cfg.to_dict(),
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
