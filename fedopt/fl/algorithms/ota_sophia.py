"""Over-the-air Sophia (spec 05 §4): clients send their Sophia statistics, the server steps.

Client k keeps a gradient EMA m_k and a Hessian-diagonal EMA h_k over the LoRA factors. In round
t, at the global θ_t, it forms its mini-batch gradient g_k (the mean over E mini-batches, clipped
like a local step's), m_k ← β1 m_k + (1 − β1) g_k, and when t is a multiple of τ a
Gauss–Newton–Bartlett estimate ĥ_k (:func:`fedopt.fl.sophia.gnb_hessian`, on its first
mini-batch), h_k ← β2 h_k + (1 − β2) ĥ_k. It sends [m_k, h_k]: two vectors of q(r) reals (the
instance's ``payloads_per_round`` is 2, so the planner's airtime and distortion count both).
The server aggregates both — over AirComp both are noisy, each normalized on its own — and
takes the clipped step itself:

    θ_{t+1} = θ_t (1 − η λ) − η · clip(m̂ / max(γ ĥ, ε), 1),   η = lr · server_lr,

λ the decoupled weight decay. With exact aggregation this is SophiaG on the φ-weighted averages
Σ φ_k m_k, Σ φ_k h_k (tested). A noisy ĥ may be negative on some entries; the floor ε then makes
the step there η·sign(m̂) at most, which is what the clip bounds anyway.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedopt.fl.algorithms.base import Algorithm
from fedopt.fl.config import client_rng, hessian_generator
from fedopt.fl.training import batch_gradient

__all__ = ["OTASophia"]


class OTASophia(Algorithm):
    """Clients send (m_k, h_k); the server aggregates both and takes the SophiaG step."""

    name = "ota-sophia"
    blocks = 2

    def bind(self, run: Any, theta: np.ndarray) -> None:
        super().bind(run, theta)
        self.params = self.trained_parameters(run, "AB")
        k, q = run.data.n_clients, theta.size
        self.m = np.zeros((k, q))
        self.h = np.zeros((k, q))

    def client_update(self, run: Any, theta: np.ndarray, t: int,
                      k: int) -> tuple[np.ndarray, float]:
        from fedopt.fl.sophia import gnb_hessian

        cfg = run.cfg
        run.load(theta)
        g, loss, x = batch_gradient(run.model, self.params, run.data.clients[k].train, cfg,
                                    run.seq_len, client_rng(cfg.seed, t, k), run.device)
        self.m[k] = cfg.sophia_beta1 * self.m[k] + (1 - cfg.sophia_beta1) * g
        if t % cfg.sophia_tau == 0:
            est = gnb_hessian(run.model, self.params, x, hessian_generator(cfg.seed, t, k))
            h_hat = np.concatenate([e.detach().reshape(-1).double().cpu().numpy() for e in est])
            self.h[k] = cfg.sophia_beta2 * self.h[k] + (1 - cfg.sophia_beta2) * h_hat
        return np.concatenate([self.m[k], self.h[k]]), loss

    def server_update(self, run: Any, theta: np.ndarray, estimate: np.ndarray,
                      t: int) -> np.ndarray:
        from fedopt.fl.sophia import sophia_direction_np

        cfg = run.cfg
        q = theta.size
        est = np.asarray(estimate, dtype=np.float64)
        eta = cfg.lr * cfg.server_lr
        step = sophia_direction_np(est[:q], est[q:], cfg.sophia_gamma, cfg.sophia_eps)
        return theta * (1.0 - eta * cfg.weight_decay) - eta * step

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"m": self.m.copy(), "h": self.h.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.m = np.array(state["m"], dtype=float)
        self.h = np.array(state["h"], dtype=float)
