"""PWFF: personalized federated fine-tuning with global and local parameters (spec 05 §3
``partial``, §5; Jiang et al., arXiv 2404.13238).

The model carries two sets of LoRA factors: the **global** part on the attention projections
(the instance's ``lora.layers``: aggregated, the only payload, q(r) of the plan) and the
**local** part on the MLP (``fc1``, ``fc2``: private, never sent; each client's own, checkpointed).
Client k starts from [θ_global, θ_local,k], runs E local steps of its personalized loss

    F_k = CE − β [w_k R_prose + (1 − w_k) R_struct]
          + κ Σ_j max(0, R_j^0 − R_j) + (ρ/2) ‖θ_global − θ_global,t‖²,

and sends the update of its global part; the server averages it (θ_global ← θ_global − η_s ĝ).

- R_prose, R_struct: the two shipped reward models (:mod:`fedopt.fl.rewards`), each scoring the
  model's own predicted next-character distributions of the mini-batch
  (:func:`~fedopt.fl.rewards.expected_reward`: the reward of the soft prediction, differentiable
  in the logits).
- w_k: the client's preference, from its task (:data:`TASK_PREFERENCE`: e-mail clients want
  prose, code and markup clients structure).
- *Multi-objective alignment*: a floor per reward. R_j^0 is reward j of the client's first
  mini-batch at the start of its round (detached); a step that pushes either reward below it is
  penalized with weight κ, so the preferred reward cannot be bought by collapsing the other.
- ρ: proximity of the global part to the broadcast global model (client drift).

Per client the evaluation reports its own model's held-out loss and both rewards on its
held-out text (:meth:`PWFF.client_metrics`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedopt.errors import InvalidArgumentError
from fedopt.fl.algorithms.base import Algorithm
from fedopt.fl.config import client_rng
from fedopt.fl.data import sample_batch

__all__ = ["PWFF", "TASK_PREFERENCE", "LOCAL_TARGETS", "module_indices"]

#: w_k by the client's task: the weight of the prose reward (1 − w_k: the structure reward);
#: clients without a task label get 0.5
TASK_PREFERENCE = {"code": 0.2, "markup": 0.2, "decimal": 0.5, "mail": 0.8}
#: the layers of the local (private) LoRA part
LOCAL_TARGETS = ("fc1", "fc2")


def module_indices(mods: dict[str, Any], local: bool) -> np.ndarray:
    """Positions in the LoRA vector of the local (``fc1``/``fc2``) or global adapters."""
    out, off = [], 0
    for name, m in mods.items():
        n = m.A.numel() + m.B.numel()
        if (name.rsplit(".", 1)[-1] in LOCAL_TARGETS) == local:
            out.append(np.arange(off, off + n))
        off += n
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class PWFF(Algorithm):
    """Global adapters aggregated, local LoRA private, a reward-personalized local loss."""

    name = "pwff"
    personal = True

    def bind(self, run: Any, theta: np.ndarray) -> None:
        from fedopt.fl.rewards import REWARDS, load_reward

        super().bind(run, theta)
        self.sent = module_indices(run.mods, local=False)
        self.local = module_indices(run.mods, local=True)
        if self.local.size == 0:
            raise InvalidArgumentError(
                "model: PWFF needs LoRA on the MLP layers (fc1, fc2) for its local part; build "
                "the model with TrainingRecipe.lora_model(..., algorithm='pwff')")
        self.payload_size = self.sent.size
        self.rewards = [load_reward(n) for n in REWARDS]
        v = getattr(run.model, "vocab_size", None)
        if v is not None and v != self.rewards[0].vocab_size:
            raise InvalidArgumentError(
                f"model: vocab_size {v}, but the reward models score {self.rewards[0].vocab_size}"
                " characters (the domain-shift testbed's vocabulary); PWFF runs on char-tasks")
        tasks = list(run.data.client_tasks) or [None] * run.data.n_clients
        self.w = np.array([TASK_PREFERENCE.get(t, 0.5) for t in tasks])
        self.private = np.tile(theta[self.local], (run.data.n_clients, 1))
        self.params = self.trained_parameters(run, "AB")
        self._mods = run.mods

    def client_theta(self, theta: np.ndarray, k: int) -> np.ndarray:
        out = theta.copy()
        out[self.local] = self.private[k]
        return out

    def _loss(self, run: Any, x: torch.Tensor, y: torch.Tensor, k: int,
              floor: torch.Tensor | None, anchor: list[torch.Tensor]) -> tuple[Any, Any]:
        cfg = run.cfg
        logits = run.model(x)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        from fedopt.fl.rewards import expected_reward

        r = torch.stack([expected_reward(m, logits) for m in self.rewards])
        w = float(self.w[k])
        loss = ce - cfg.pwff_reward_weight * (w * r[0] + (1 - w) * r[1])
        if floor is not None:
            loss = loss + cfg.pwff_floor * torch.relu(floor - r).sum()
        if cfg.pwff_proximity > 0:
            loss = loss + 0.5 * cfg.pwff_proximity * sum(
                torch.sum((p - a) ** 2) for p, a in zip(self._global_params, anchor,
                                                         strict=True))
        return loss, (ce, r.detach())

    def client_update(self, run: Any, theta: np.ndarray, t: int,
                      k: int) -> tuple[np.ndarray, float]:
        cfg = run.cfg
        start = self.client_theta(theta, k)
        run.load(start)
        opt = torch.optim.SGD(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                              foreach=False)
        anchor = [p.detach().clone() for p in self._global_params]
        rng, ids = client_rng(cfg.seed, t, k), run.data.clients[k].train
        first, floor = float("nan"), None
        for step in range(cfg.local_steps):
            xb, yb = sample_batch(ids, cfg.batch_size, run.seq_len, rng)
            x, y = torch.from_numpy(xb).to(run.device), torch.from_numpy(yb).to(run.device)
            loss, (ce, r) = self._loss(run, x, y, k, floor, anchor)
            if step == 0:
                first, floor = float(ce.detach()), r
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip, foreach=False)
            opt.step()
        end = run.flat()
        self.private[k] = end[self.local]
        return (start - end)[self.sent], first

    @property
    def _global_params(self) -> list[torch.nn.Parameter]:
        return [p for name, m in self._mods.items()
                if name.rsplit(".", 1)[-1] not in LOCAL_TARGETS for p in (m.A, m.B)]

    def server_update(self, run: Any, theta: np.ndarray, estimate: np.ndarray,
                      t: int) -> np.ndarray:
        out = theta.copy()
        out[self.sent] -= run.cfg.server_lr * np.asarray(estimate, dtype=np.float64)
        return out

    @torch.no_grad()
    def client_metrics(self, run: Any, k: int) -> dict[str, float]:
        """Both rewards of client k's own model on its held-out text (windows of the loop's
        context, spread over the set as the loss evaluation spreads them; the adapters must
        hold its model)."""
        from fedopt.fl.rewards import expected_reward

        ids = run.data.clients[k].heldout
        length = min(run.seq_len, ids.size)
        count = min(64, max(1, ids.size // length))
        starts = np.linspace(0, ids.size - length, num=count).round().astype(np.int64)
        win = np.stack([ids[s:s + length] for s in starts])
        logits = run.model(torch.from_numpy(win).to(run.device))
        return {"reward_prose": float(expected_reward(self.rewards[0], logits)),
                "reward_structure": float(expected_reward(self.rewards[1], logits))}

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"private": self.private.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.private = np.array(state["private"], dtype=float)
