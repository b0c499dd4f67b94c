"""Settings of a federated run and the generators of its random draws (spec 05 §2).

:class:`LoopConfig` holds every setting of :func:`fedopt.fl.loop.run_federated` and validates it
on construction (bad values raise :class:`~fedopt.errors.InvalidArgumentError` naming the field).
Every random draw of round t is a function of (seed, t) alone:

- client k's mini-batches come from :func:`client_rng`, ``SeedSequence(seed, spawn_key=(2, t, k))``;
- the aggregator's noise comes from :func:`round_rng`, ``SeedSequence(seed, spawn_key=(3, t))``.

This module needs numpy only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError

__all__ = ["OPTIMIZERS", "LoopConfig", "client_rng", "round_rng", "require_int", "require_number"]

OPTIMIZERS = ("sgd", "adamw")


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
