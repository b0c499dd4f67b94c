"""SophiaG, the clipped diagonal second-order optimizer of Liu et al. (2023), used by Fed-Sophia.

Reference: H. Liu, Z. Li, D. Hall, P. Liang, T. Ma, "Sophia: a scalable stochastic second-order
optimizer for language model pre-training", arXiv:2305.14342 (2023).

With gradient g_t, momentum m, diagonal curvature estimate h and step size η, one step is

    m ← β1 m + (1 − β1) g_t
    θ ← θ (1 − η λ)                                   (decoupled weight decay λ)
    θ ← θ − η clip(m / max(γ h, ε), −1, 1)            (elementwise)

and every τ steps the curvature is refreshed, h ← β2 h + (1 − β2) ĥ, with the Gauss–Newton–Bartlett
estimate ĥ of :func:`gnb_hessian`. Where γ h ≫ |m| the step is the Newton step η m / (γ h); where
the curvature is small, negative (after noisy aggregation) or stale, the clip bounds the step by
η per coordinate (sign momentum). The max with ε keeps the ratio finite for h ≤ 0.

Defaults (:data:`SOPHIA_DEFAULTS`): β1 = 0.965, β2 = 0.99 and τ = k = 10 as in the reference
implementation, ε = 1e-12, and γ = 0.01, the low end of the usual range 0.01–0.05.
A smaller γ makes the ratio larger, so the clip binds on more coordinates: more of the update is the
h-free step ±η, which makes it less sensitive to the noise of an h that is refreshed only every τ
steps and, in Fed-Sophia, aggregated over a noisy channel. Tune γ by the fraction of unclipped
coordinates (the reference training script logs it as its "win rate"). Scale convention: E[ĥ] is
the Gauss–Newton diagonal of the *per-token mean* loss (factor n = batch × sequence length), so
γ does not depend on the batch shape; the reference code divides its unscaled ĝ² by
ρ × sequences per batch instead, so its ρ corresponds to γ × sequence length here.

This module imports torch; ``fedopt`` itself does not import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedopt.errors import InvalidArgumentError
from fedopt.fl.config import require_int, require_number

__all__ = ["SOPHIA_DEFAULTS", "sophia_direction", "sophia_direction_np", "gnb_hessian", "SophiaG"]

SOPHIA_DEFAULTS: dict[str, Any] = {"beta1": 0.965, "beta2": 0.99, "gamma": 0.01, "eps": 1e-12,
                                   "tau": 10}
"""Hyperparameters of Fed-Sophia's local optimizer; ``tau`` is the Hessian refresh interval in
steps, kept by the caller (the optimizer refreshes h only in :meth:`SophiaG.update_hessian`)."""


def _require_beta(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1), or an error naming ``name``."""
    v = require_number(name, value, allow_zero=True)
    if v >= 1.0:
        raise InvalidArgumentError(f"{name}: got {value!r}, must be a number in [0, 1)")
    return v


def sophia_direction(m: torch.Tensor, h: torch.Tensor, gamma: float, eps: float) -> torch.Tensor:
    """The clipped preconditioned direction clip(m / max(γ h, ε), −1, 1), elementwise.

    Parameters
    ----------
    m, h : torch.Tensor
        Momentum and diagonal curvature, of the same shape (h may hold negative entries).
    gamma, eps : float
        γ > 0 scales the curvature; ε > 0 floors the denominator.

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``m``, entries in [−1, 1].
    """
    gamma = require_number("gamma", gamma)
    eps = require_number("eps", eps)
    if m.shape != h.shape:
        raise InvalidArgumentError(
            f"h: got shape {tuple(h.shape)}, must match m's shape {tuple(m.shape)}")
    return torch.clamp(m / torch.clamp(gamma * h, min=eps), -1.0, 1.0)


def sophia_direction_np(m: np.ndarray, h: np.ndarray, gamma: float, eps: float) -> np.ndarray:
    """:func:`sophia_direction` on numpy arrays, computed in float64 (e.g. for a server step)."""
    gamma = require_number("gamma", gamma)
    eps = require_number("eps", eps)
    m = np.asarray(m, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    if m.shape != h.shape:
        raise InvalidArgumentError(f"h: got shape {h.shape}, must match m's shape {m.shape}")
    return np.clip(m / np.maximum(gamma * h, eps), -1.0, 1.0)


def gnb_hessian(model: torch.nn.Module, params: Sequence[torch.Tensor], x: torch.Tensor,
                generator: torch.Generator) -> list[torch.Tensor]:
    """Gauss–Newton–Bartlett estimate of the diagonal Gauss–Newton matrix of the mean token loss.

    With logits z_i = f(θ, x)_i at the n = ``logits.numel() / V`` predicted positions (batch ×
    sequence length for (B, T, V) logits), labels ŷ_i ~ softmax(z_i) drawn independently per
    position and L̂ = (1/n) Σ_i CE(z_i, ŷ_i), the gradient is ĝ = (1/n) Σ_i J_iᵀ u_i with
    J_i = ∂z_i/∂θ and u_i = softmax(z_i) − e_ŷi, where E[u_i] = 0 and
    Cov(u_i) = diag p_i − p_i p_iᵀ =: M_i. The u_i are independent, so the cross terms vanish in
    expectation and E[ĝ²] = (1/n²) Σ_i diag(J_iᵀ M_i J_i): E[n ĝ²] is exactly the Gauss–Newton
    diagonal (1/n) Σ_i diag(J_iᵀ M_i J_i) of the mean loss. Hence the factor n (without it the
    estimate would shrink as 1/n with the batch).

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``x`` to logits of shape (..., V); used as is (train/eval mode is the caller's).
    params : sequence of torch.Tensor
        The tensors to estimate for (each requires grad); unused ones get zeros.
    x : torch.Tensor
        Model input, e.g. integer tokens of shape (B, T).
    generator : torch.Generator
        A CPU generator: labels are sampled on the CPU in float64, so a seed gives the same labels
        on every device (for the same logits).

    Returns
    -------
    list of torch.Tensor
        n ĝ_j² for each parameter, in order, of its shape and dtype. ``.grad`` is not touched.
    """
    params = list(params)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise InvalidArgumentError(f"generator: got {generator!r}, must be a CPU torch.Generator")
    for j, p in enumerate(params):
        if not p.requires_grad:
            raise InvalidArgumentError(f"params[{j}]: got a tensor without requires_grad, "
                                       "must be a tensor that requires grad")
    with torch.enable_grad():
        logits = model(x)
        vocab = logits.shape[-1]
        flat = logits.reshape(-1, vocab)
        probs = torch.softmax(flat.detach().to(device="cpu", dtype=torch.float64), dim=-1)
        labels = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        loss = F.cross_entropy(flat, labels.to(flat.device))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    n = flat.shape[0]
    return [torch.zeros_like(p) if g is None else n * g.detach() ** 2
            for p, g in zip(params, grads, strict=True)]


def _check_group(group: dict[str, Any]) -> None:
    """Validate one parameter group's hyperparameters (errors name the field)."""
    require_number("lr", group["lr"])
    _require_beta("beta1", group["beta1"])
    _require_beta("beta2", group["beta2"])
    require_number("gamma", group["gamma"])
    require_number("eps", group["eps"])
    require_number("weight_decay", group["weight_decay"], allow_zero=True)


class SophiaG(torch.optim.Optimizer):
    """SophiaG with decoupled weight decay (see the module docstring for the update).

    Parameters
    ----------
    params : iterable of tensors or of dicts
        Parameters or parameter groups (groups may override any hyperparameter below).
    lr : float
        Step size η > 0: no coordinate moves by more than η per step (plus weight decay).
    beta1, beta2 : float
        Momentum and curvature EMA factors in [0, 1).
    gamma : float
        γ > 0, the curvature scale in the denominator.
    eps : float
        ε > 0, floor of the denominator.
    weight_decay : float
        Decoupled weight decay λ >= 0: θ ← θ (1 − η λ) before each step.

    Notes
    -----
    State per parameter: ``exp_avg`` (m), ``hessian`` (h), both zeros at first, and ``step`` (int).
    :meth:`step` uses ``.grad``; :meth:`update_hessian` takes the estimates (e.g. from
    :func:`gnb_hessian`) and is called by the user every τ steps. Plain per-tensor loops keep the
    result deterministic.
    """

    def __init__(self, params: Iterable[Any], lr: float, *, beta1: float = 0.965,
                 beta2: float = 0.99, gamma: float = 0.01, eps: float = 1e-12,
                 weight_decay: float = 0.0):
        defaults = {"lr": lr, "beta1": beta1, "beta2": beta2, "gamma": gamma, "eps": eps,
                    "weight_decay": weight_decay}
        _check_group(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group after validating its hyperparameters (defaults fill the missing ones)."""
        _check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _state_of(self, p: torch.Tensor) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["hessian"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One SophiaG step for every parameter with a ``.grad``; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise InvalidArgumentError("grad: got a sparse gradient, must be dense")
                state = self._state_of(p)
                m = state["exp_avg"]
                m.mul_(group["beta1"]).add_(p.grad, alpha=1.0 - group["beta1"])
                if wd != 0:
                    p.mul_(1.0 - lr * wd)
                p.add_(sophia_direction(m, state["hessian"], group["gamma"], group["eps"]),
                       alpha=-lr)
                state["step"] += 1
        return loss

    @torch.no_grad()
    def update_hessian(self, estimates: Sequence[torch.Tensor]) -> None:
        """h ← β2 h + (1 − β2) ĥ for every parameter, in order (all groups, one estimate each).

        Raises
        ------
        InvalidArgumentError
            On a wrong number of estimates or an estimate of the wrong shape (nothing is updated).
        """
        estimates = list(estimates)
        params = self._params()
        if len(estimates) != len(params):
            raise InvalidArgumentError(f"estimates: got {len(estimates)} tensors, must be one per "
                                       f"parameter ({len(params)})")
        for j, (p, e) in enumerate(zip(params, estimates, strict=True)):
            if not isinstance(e, torch.Tensor) or e.shape != p.shape:
                got = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
                raise InvalidArgumentError(f"estimates[{j}]: got {got}, must be a tensor of "
                                           f"shape {tuple(p.shape)} (parameter {j})")
        pending = iter(estimates)
        for group in self.param_groups:
            beta2 = group["beta2"]
            for p in group["params"]:
                e = next(pending)
                h = self._state_of(p)["hessian"]
                h.mul_(beta2).add_(e.to(dtype=h.dtype, device=h.device), alpha=1.0 - beta2)

    def flat_state(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(m, h, step): the states as float64 vectors (parameters in order, each flattened
        row-major, zeros where a parameter has no state yet) and the largest step count (0 if
        none)."""
        ms, hs, step = [], [], 0
        for p in self._params():
            state = self.state.get(p, {})
            for key, out in (("exp_avg", ms), ("hessian", hs)):
                t = state.get(key)
                out.append(np.zeros(p.numel()) if t is None
                           else t.detach().to("cpu", torch.float64).reshape(-1).numpy())
            step = max(step, int(state.get("step", 0)))
        empty = np.zeros(0)
        return (np.concatenate(ms) if ms else empty, np.concatenate(hs) if hs else empty, step)

    def load_flat_state(self, m: np.ndarray, h: np.ndarray, step: int) -> None:
        """Inverse of :meth:`flat_state`: every parameter gets its slice of ``m`` and ``h`` (cast
        to its dtype and device) and the step count ``step``."""
        step = require_int("step", step, least=0)
        params = self._params()
        total = sum(p.numel() for p in params)
        vectors = {}
        for name, v in (("m", m), ("h", h)):
            arr = np.asarray(v, dtype=np.float64)
            if arr.shape != (total,):
                raise InvalidArgumentError(f"{name}: got shape {arr.shape}, must be a vector of "
                                           f"length {total} (the parameters' total size)")
            vectors[name] = arr
        offset = 0
        for p in params:
            k = p.numel()
            state = self.state[p]
            for key, name in (("exp_avg", "m"), ("hessian", "h")):
                chunk = vectors[name][offset:offset + k].reshape(p.shape)
                state[key] = torch.tensor(chunk, dtype=p.dtype, device=p.device)
            state["step"] = step
            offset += k
