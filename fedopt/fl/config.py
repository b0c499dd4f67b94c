"""Settings of a federated run and the generators of its random draws (spec 05 §2).

:class:`LoopConfig` holds every setting of :func:`fedopt.fl.loop.run_federated` and validates it
on construction (bad values raise :class:`~fedopt.errors.InvalidArgumentError` naming the field).
Every random draw of round t is a function of (seed, t) alone:

- client k's mini-batches come from :func:`client_rng`, ``SeedSequence(seed, spawn_key=(2, t, k))``;
- the aggregator's noise comes from :func:`round_rng`, ``SeedSequence(seed, spawn_key=(3, t))``;
- the labels of Sophia's Hessian estimator (sampled from the model's own softmax) come from
  :func:`hessian_generator`, ``SeedSequence(seed, spawn_key=(6, t, k))``.

This module needs numpy only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.instance.sections import ALGORITHMS

__all__ = ["OPTIMIZERS", "MIRA_GRAPHS", "LOOP_ALGORITHMS", "LoopConfig", "client_rng", "round_rng",
           "hessian_generator", "require_int", "require_number"]

OPTIMIZERS = ("sgd", "adamw", "sophia")
#: MIRA's task-similarity graphs: ``task`` (a_kl = 1 for two clients of one task), ``complete``
#: (a_kl = 1 for all pairs), ``similarity`` (a_kl = max(0, cos(Δ_k, Δ_l)) of the round's updates)
MIRA_GRAPHS = ("task", "complete", "similarity")
#: the federated algorithms :func:`fedopt.fl.loop.run_federated` runs (:mod:`fedopt.fl.algorithms`)
LOOP_ALGORITHMS = ALGORITHMS


def require_int(name: str, value: Any, least: int = 1) -> int:
    """``value`` as an int >= ``least`` (bools refused), or an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise InvalidArgumentError(f"{name}: got {value!r}, must be an integer >= {least}")
    return int(value)


def require_number(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (>= 0 with ``allow_zero``), or an error naming ``name``."""
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
    algorithm : {"fedavg", "ota-sophia", "ffa", "fedsa", "local", "mira", "pwff"}
        What clients compute and send (:mod:`fedopt.fl.algorithms`): ``fedavg`` their LoRA update
        after E local steps (FedSGD with E = 1; Fed-Sophia with ``optimizer="sophia"``);
        ``ota-sophia`` their gradient EMA m and Hessian estimate h (the server takes the
        Sophia step); ``ffa`` (FFA-LoRA) the update of B with A frozen; ``fedsa`` (FedSA-LoRA)
        the update of A, each client keeping its own B; ``local`` nothing (own models);
        ``mira`` its update, pulled towards similar clients' by the server's graph step;
        ``pwff`` the update of its global adapters (its MLP LoRA stays private).
    optimizer : {"sgd", "adamw", "sophia"}
        Local optimizer: SGD, AdamW (β = (0.9, 0.999), fresh each round) or SophiaG
        (:mod:`fedopt.fl.sophia`; each client keeps its m, h across rounds). With
        ``algorithm="ota-sophia"`` the default ``"sgd"`` becomes ``"sophia"`` (the Sophia step is
        the server's; ``"adamw"`` is refused).
    lr : float
        Local learning rate (Sophia: the largest step per coordinate; ``ota-sophia``: the
        server's step, times ``server_lr``).
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
    sophia_beta1, sophia_beta2, sophia_gamma, sophia_eps, sophia_tau
        SophiaG's gradient-EMA and Hessian-EMA weights, clip scale γ, floor ε and Hessian
        refresh period τ (in local steps; in rounds for ``ota-sophia``). Defaults: the Sophia
        reference's (:data:`fedopt.fl.sophia.SOPHIA_DEFAULTS`).
    mira_graph, mira_step
        MIRA's weights a_kl (:data:`MIRA_GRAPHS`, or a K × K matrix of weights >= 0; the
        diagonal is ignored) and ηλ in Δ_k ← Δ_k − ηλ Σ_l a_kl (Δ_k − Δ_l). 0 is local
        training; ηλ · K = 1 on the complete graph is averaging of the updates. Default
        ``task`` (the testbed's task labels are known) and 0.15: on ``char-tasks``' clusters of
        three, ηλ·|c| = 0.45, about halfway between local training and the cluster mean.
    pwff_reward_weight, pwff_floor, pwff_proximity
        PWFF's β (weight of the clients' reward mix), κ (the floor penalty that keeps either
        reward from falling below its value at the start of the round) and ρ (proximity of
        the global part to the broadcast model) (:mod:`fedopt.fl.algorithms.pwff`).
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
    algorithm: str = "fedavg"
    sophia_beta1: float = 0.965
    sophia_beta2: float = 0.99
    sophia_gamma: float = 0.01
    sophia_eps: float = 1e-12
    sophia_tau: int = 10
    mira_graph: Any = "task"
    mira_step: float = 0.15
    pwff_reward_weight: float = 0.1
    pwff_floor: float = 1.0
    pwff_proximity: float = 0.1

    def __post_init__(self) -> None:
        require_int("rounds", self.rounds)
        require_int("local_steps", self.local_steps)
        require_int("batch_size", self.batch_size)
        if self.seq_len is not None:
            require_int("seq_len", self.seq_len)
        if self.optimizer not in OPTIMIZERS:
            raise InvalidArgumentError(
                f"optimizer: got {self.optimizer!r}, must be one of {', '.join(OPTIMIZERS)}")
        require_number("lr", self.lr)
        require_number("weight_decay", self.weight_decay, allow_zero=True)
        require_number("server_lr", self.server_lr)
        if self.grad_clip is not None:
            require_number("grad_clip", self.grad_clip)
        require_int("eval_every", self.eval_every)
        require_int("eval_batches", self.eval_batches)
        require_int("seed", self.seed, least=0)
        self._check_algorithm()

    def _check_algorithm(self) -> None:
        if self.algorithm not in LOOP_ALGORITHMS:
            raise InvalidArgumentError(
                f"algorithm: got {self.algorithm!r}, must be one of {', '.join(LOOP_ALGORITHMS)}")
        if self.algorithm == "ota-sophia":
            if self.optimizer == "adamw":
                raise InvalidArgumentError(
                    "optimizer: got 'adamw' with algorithm 'ota-sophia', whose clients run no "
                    "local optimizer (the server takes the Sophia step); use 'sophia'")
            object.__setattr__(self, "optimizer", "sophia")
        for name in ("sophia_beta1", "sophia_beta2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise InvalidArgumentError(f"{name}: got {v!r}, must be a number in [0, 1)")
        require_number("sophia_gamma", self.sophia_gamma)
        require_number("sophia_eps", self.sophia_eps)
        require_int("sophia_tau", self.sophia_tau)
        require_number("mira_step", self.mira_step, allow_zero=True)
        for name in ("pwff_reward_weight", "pwff_floor", "pwff_proximity"):
            require_number(name, getattr(self, name), allow_zero=True)
        if isinstance(self.mira_graph, str):
            if self.mira_graph not in MIRA_GRAPHS:
                raise InvalidArgumentError(
                    f"mira_graph: got {self.mira_graph!r}, must be one of "
                    f"{', '.join(MIRA_GRAPHS)} or a K x K matrix of weights a_kl >= 0")
        else:
            a = np.asarray(self.mira_graph, dtype=float)
            if a.ndim != 2 or a.shape[0] != a.shape[1] or not np.all(np.isfinite(a)) \
                    or np.any(a < 0):
                raise InvalidArgumentError(
                    f"mira_graph: expected a square matrix of finite weights a_kl >= 0, got "
                    f"shape {a.shape}" + (" with negative entries" if a.ndim == 2 and np.any(
                        a < 0) else ""))
            object.__setattr__(self, "mira_graph", tuple(tuple(float(x) for x in row)
                                                         for row in a))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def client_rng(seed: int, round_index: int, client: int) -> np.random.Generator:
    """Generator of client ``client``'s mini-batches in round ``round_index``."""
    return np.random.default_rng(np.random.SeedSequence(int(seed),
                                                        spawn_key=(2, int(round_index),
                                                                   int(client))))


def hessian_generator(seed: int, round_index: int, client: int) -> Any:
    """The torch generator of client ``client``'s Hessian-estimator labels in round
    ``round_index`` (imports torch)."""
    import torch

    ss = np.random.SeedSequence(int(seed), spawn_key=(6, int(round_index), int(client)))
    return torch.Generator().manual_seed(int(ss.generate_state(1, np.uint64)[0] >> 1))


def round_rng(seed: int, round_index: int) -> np.random.Generator:
    """Generator handed to the aggregator in round ``round_index`` (noise draws)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed),
                                                        spawn_key=(3, int(round_index))))
