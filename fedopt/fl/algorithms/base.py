"""What every federated algorithm of the loop shares (spec 05 §2–§4): the protocol the loop
calls, the positions of the LoRA factors in the payload vector, and the clients' persistent
SophiaG state.

An algorithm decides what a client computes and sends, and how the server applies the
aggregate. The loop (:func:`fedopt.fl.loop.run_federated`) holds the global LoRA vector θ (A then
B of every layer, :func:`fedopt.fl.lora.flatten_lora` order) and calls, in round t,

1. ``client_update(run, theta, t, k) -> (payload, train_loss)`` for every client k (the payload
   is what travels: a real vector of :attr:`Algorithm.payload_size` entries);
2. ``aggregate(run, payloads, t)``: by default the aggregator on the (K, payload_size)
   payloads (MIRA asks for every client's own update, or one AirComp slot per task cluster);
3. ``server_update(run, theta, estimate, t) -> theta``.

``client_theta(theta, k)`` is the model client k runs and is evaluated with (θ itself unless the
algorithm keeps private parameters on the device). ``state_dict``/``load_state_dict`` carry the
per-client state through checkpoints (resume bit for bit).

This module imports torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from fedopt.fl.aggregators import AggregationResult
from fedopt.fl.config import LoopConfig, client_rng, hessian_generator, round_rng
from fedopt.fl.lora import lora_parameters
from fedopt.fl.training import SophiaState, local_update

__all__ = ["Algorithm", "factor_indices", "SophiaStates"]


def factor_indices(mods: dict[str, Any], factors: str) -> np.ndarray:
    """Positions of the ``factors`` (``"AB"``, ``"A"`` or ``"B"``) in the AB payload vector,
    ascending (so θ[idx] is :func:`~fedopt.fl.lora.flatten_lora` of those factors)."""
    out, off = [], 0
    for m in mods.values():
        for name in ("A", "B"):
            n = getattr(m, name).numel()
            if name in factors:
                out.append(np.arange(off, off + n))
            off += n
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class SophiaStates:
    """Every client's SophiaG state (m, h over ``n`` trained reals; the step count), kept across
    rounds and checkpointed under ``prefix``."""

    def __init__(self, n_clients: int, n: int, prefix: str = "sophia"):
        self.m = np.zeros((n_clients, n))
        self.h = np.zeros((n_clients, n))
        self.step = np.zeros(n_clients, dtype=np.int64)
        self.prefix = prefix

    def get(self, k: int) -> SophiaState:
        return SophiaState(self.m[k].copy(), self.h[k].copy(), int(self.step[k]))

    def put(self, k: int, state: SophiaState) -> None:
        self.m[k], self.h[k], self.step[k] = state.m, state.h, state.step

    def state_dict(self) -> dict[str, np.ndarray]:
        p = self.prefix
        return {f"{p}_m": self.m.copy(), f"{p}_h": self.h.copy(), f"{p}_step": self.step.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        p = self.prefix
        self.m = np.array(state[f"{p}_m"], dtype=float)
        self.h = np.array(state[f"{p}_h"], dtype=float)
        self.step = np.array(state[f"{p}_step"], dtype=np.int64)


class Algorithm:
    """Base class: the names, the payload layout and the default (stateless) behaviour.

    Attributes
    ----------
    name : str
        The algorithm's name (``LoopConfig.algorithm``).
    sends : {"AB", "A", "B"}
        The LoRA factors whose entries travel (``lora.factors`` of the instance it is planned on).
    blocks : int
        Vectors of that size each client sends per round (2 for over-the-air Sophia).
    """

    name = "base"
    sends = "AB"
    blocks = 1
    #: True when clients keep private parameters (the global loss is then the mean of the
    #: clients' own models on the global held-out set)
    personal = False

    def bind(self, run: Any, theta: np.ndarray) -> None:
        """Called once before round 0 (and before a checkpoint is restored)."""
        self.cfg: LoopConfig = run.cfg
        self.sent = factor_indices(run.mods, self.sends)
        self.payload_size = self.blocks * self.sent.size

    def client_theta(self, theta: np.ndarray, k: int) -> np.ndarray:
        """The LoRA vector client k trains from and is evaluated with."""
        return theta

    def client_update(self, run: Any, theta: np.ndarray, t: int,
                      k: int) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def server_update(self, run: Any, theta: np.ndarray, estimate: np.ndarray,
                      t: int) -> np.ndarray:
        raise NotImplementedError

    def aggregate(self, run: Any, payloads: np.ndarray, t: int) -> AggregationResult:
        """Step 3: the round's aggregation of the (K, payload_size) payloads (by default the
        aggregator's φ-weighted average, its noise from :func:`round_rng`; nothing is sent when
        the payload is empty)."""
        if payloads.shape[1] == 0:
            z = np.zeros(0)
            return AggregationResult(estimate=z, exact=z, error=0.0, predicted_error=0.0,
                                     airtime_s=0.0, info={"mode": "nothing sent"},
                                     energy_j=np.zeros(payloads.shape[0]))
        return run.aggregator.aggregate(payloads, run.phi, t, round_rng(run.cfg.seed, t))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        del state

    def describe(self) -> dict[str, Any]:
        """JSON-safe description (part of the run's configuration digest)."""
        return {"algorithm": self.name, "sends": self.sends, "blocks": self.blocks}

    @staticmethod
    def trained_parameters(run: Any, factors: str) -> list[nn.Parameter]:
        return lora_parameters(run.mods, factors)

    def local_steps(self, run: Any, params: list[nn.Parameter], t: int, k: int,
                    sophia: SophiaStates | None) -> float:
        """Client k's E local steps of round t on ``params`` (its SophiaG state continued when
        the local optimizer is Sophia); the first mini-batch's loss."""
        client = run.data.clients[k]
        state = sophia.get(k) if sophia is not None else None
        loss = local_update(run.model, params, client.train, run.cfg, run.seq_len,
                            client_rng(run.cfg.seed, t, k), run.device, sophia=state,
                            generator=hessian_generator(run.cfg.seed, t, k)
                            if state is not None else None)
        if sophia is not None:
            sophia.put(k, state)
        return loss
