"""Averaging of local LoRA updates: FedAvg (FedSGD with E = 1, Fed-Sophia with local SophiaG
steps), FFA-LoRA and FedSA-LoRA (spec 05 §2–§4).

Client k starts from the global LoRA vector θ_t (with its own private factors, if any), runs E
local steps with ``cfg.optimizer`` on the factors it trains, and sends the part of its update
g_k = θ_t − θ_{t,k}^{(E)} that lies on the factors that travel; the server applies
θ_{t+1} = θ_t − η_s ĝ on those entries only.

=========  ===========  ===========  ======================================================
name       trains       sends        stays on the device
=========  ===========  ===========  ======================================================
fedavg     A and B      A and B      nothing (with ``optimizer="sophia"``: Fed-Sophia, the
                                     client's SophiaG state m, h across rounds)
ffa        B            B            nothing; A stays at its seeded initialization A0
                                     everywhere (FFA-LoRA, Sun et al. 2024)
fedsa      A and B      A            each client's B (FedSA-LoRA, Guo et al. 2024: A learns
                                     what clients share, B what is their own)
=========  ===========  ===========  ======================================================

Under FFA the merged update (α/r)·B·A0 lies in span(B)·A0 and the server-side product of the
averaged factors is exact (the covariance and product-noise terms of spec 03 §2 vanish); under
FedSA the server never sees B (its entries of θ keep their initial value).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedopt.fl.algorithms.base import Algorithm, SophiaStates, factor_indices

__all__ = ["FedAvg", "FFALoRA", "FedSALoRA"]


class _Averaging(Algorithm):
    trains = "AB"
    keeps = ""

    def bind(self, run: Any, theta: np.ndarray) -> None:
        super().bind(run, theta)
        self.params = self.trained_parameters(run, self.trains)
        self.kept = factor_indices(run.mods, self.keeps) if self.keeps else None
        k = run.data.n_clients
        self.private = (np.tile(theta[self.kept], (k, 1)) if self.kept is not None else None)
        n_trained = sum(p.numel() for p in self.params)
        self.sophia = (SophiaStates(k, n_trained) if run.cfg.optimizer == "sophia" else None)

    def client_theta(self, theta: np.ndarray, k: int) -> np.ndarray:
        if self.kept is None:
            return theta
        out = theta.copy()
        out[self.kept] = self.private[k]
        return out

    def client_update(self, run: Any, theta: np.ndarray, t: int,
                      k: int) -> tuple[np.ndarray, float]:
        start = self.client_theta(theta, k)
        run.load(start)
        loss = self.local_steps(run, self.params, t, k, self.sophia)
        end = run.flat()
        if self.kept is not None:
            self.private[k] = end[self.kept]
        return (start - end)[self.sent], loss

    def server_update(self, run: Any, theta: np.ndarray, estimate: np.ndarray,
                      t: int) -> np.ndarray:
        out = theta.copy()
        out[self.sent] -= run.cfg.server_lr * np.asarray(estimate, dtype=np.float64)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {} if self.sophia is None else self.sophia.state_dict()
        if self.private is not None:
            out["private"] = self.private.copy()
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if self.sophia is not None:
            self.sophia.load_state_dict(state)
        if self.private is not None:
            self.private = np.array(state["private"], dtype=float)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "trains": self.trains, "keeps": self.keeps}


class FedAvg(_Averaging):
    """FedAvg of LoRA updates (both factors trained and sent)."""

    name = "fedavg"


class FFALoRA(_Averaging):
    """FFA-LoRA: A frozen at its initialization, only B trained and sent (payload r·Σ d_out)."""

    name = "ffa"
    sends = trains = "B"


class FedSALoRA(_Averaging):
    """FedSA-LoRA: A and B trained, only A sent and averaged; each client keeps its own B."""

    name = "fedsa"
    sends = "A"
    keeps = "B"
    personal = True
