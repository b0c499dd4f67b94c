"""Pre-training and evaluation of a character model (spec 05 §1).

Pre-training (:func:`pretrain`) is deterministic on CPU: batches come from a numpy generator
seeded with ``seed``, dropout (if any) from torch's generator forked and seeded inside the call
(the caller's global RNG state is restored afterwards), and deterministic algorithms are switched
on for the duration of the call (:func:`deterministic`, which the federated loop uses too).
:func:`evaluate_loss` scores any model mapping ids to logits on fixed, non-overlapping windows;
:func:`local_update` is one client's local steps in a round of :func:`fedopt.fl.loop.run_federated`.

Public through :mod:`fedopt.fl.charmodel`. This module imports torch; ``fedopt`` itself does not.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedopt.errors import InvalidArgumentError
from fedopt.fl.config import LoopConfig
from fedopt.fl.data import sample_batch
from fedopt.fl.transformer import CharTransformer
from fedopt.fl.transformer import positive_int as _pos_int

__all__ = ["pretrain", "EvalResult", "evaluate_loss", "deterministic", "local_update",
           "batch_gradient", "SophiaState"]


def _as_ids(ids: Any, name: str = "ids") -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(
            f"{name}: expected a 1-D integer array of token ids, got shape {arr.shape} and dtype "
            f"{arr.dtype}"
        )
    return arr.astype(np.int64, copy=False)


def _check_id_range(arr: np.ndarray, model: CharTransformer | nn.Module, name: str) -> None:
    v = getattr(model, "vocab_size", None)
    if v is not None and arr.size and (arr.min() < 0 or arr.max() >= v):
        raise InvalidArgumentError(
            f"{name}: ids must lie in 0..{v - 1} (the model's vocab_size), got range "
            f"{int(arr.min())}..{int(arr.max())}; encode with the vocabulary the model was built "
            f"for"
        )


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextmanager
def deterministic(model: nn.Module) -> Iterator[None]:
    """Deterministic torch algorithms (warn only) for the block; on exit the previous setting
    and ``model``'s train/eval mode are restored."""
    was_training = model.training
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        model.train(was_training)


def _batch_loss(model: nn.Module, ids: np.ndarray, cfg: LoopConfig, seq_len: int,
                rng: np.random.Generator, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, mean next-character loss) of one mini-batch of ``ids`` drawn from ``rng``."""
    x, y = sample_batch(ids, cfg.batch_size, seq_len, rng)
    xt = torch.from_numpy(x).to(device)
    logits = model(xt)
    return xt, F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               torch.from_numpy(y).to(device).reshape(-1))


def _optimizer(params: Sequence[nn.Parameter], cfg: LoopConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 foreach=False)
    from fedopt.fl.sophia import SophiaG

    return SophiaG(params, cfg.lr, beta1=cfg.sophia_beta1, beta2=cfg.sophia_beta2,
                   gamma=cfg.sophia_gamma, eps=cfg.sophia_eps, weight_decay=cfg.weight_decay)


@dataclass
class SophiaState:
    """One client's SophiaG state kept across rounds: the EMAs m and h (float64 vectors over the
    trained parameters, in order) and the local step count (the Hessian is refreshed when it is
    a multiple of τ)."""

    m: np.ndarray
    h: np.ndarray
    step: int = 0


def local_update(model: nn.Module, params: Sequence[nn.Parameter], ids: np.ndarray,
                 cfg: LoopConfig, seq_len: int, rng: np.random.Generator,
                 device: torch.device, *, sophia: SophiaState | None = None,
                 generator: torch.Generator | None = None) -> float:
    """One client's E local steps of a federated round, in place (spec 05 §2, §4).

    ``cfg.optimizer``: a fresh SGD or AdamW (β = (0.9, 0.999)) over ``params``, or SophiaG
    continuing from the client's ``sophia`` state (updated in place), its Hessian estimate
    refreshed by the Gauss–Newton–Bartlett estimator (labels from ``generator``) whenever the
    client's step count is a multiple of ``cfg.sophia_tau``. Mini-batches of ``ids`` are drawn
    from ``rng``; optional gradient clipping. Returns the loss of the first mini-batch (at the
    round's starting point θ_t).
    """
    opt = _optimizer(params, cfg)
    if cfg.optimizer == "sophia":
        if sophia is None or generator is None:
            raise InvalidArgumentError("sophia: the SophiaG optimizer needs the client's state "
                                       "and a generator for its Hessian estimator")
        opt.load_flat_state(sophia.m, sophia.h, sophia.step)
    first = float("nan")
    for step in range(cfg.local_steps):
        xt, loss = _batch_loss(model, ids, cfg, seq_len, rng, device)
        if sophia is not None and sophia.step % cfg.sophia_tau == 0:
            from fedopt.fl.sophia import gnb_hessian

            opt.update_hessian(gnb_hessian(model, params, xt, generator))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=False)
        opt.step()
        if sophia is not None:
            sophia.step += 1
        if step == 0:
            first = float(loss.detach())
    if sophia is not None:
        sophia.m, sophia.h, _ = opt.flat_state()
    return first


def batch_gradient(model: nn.Module, params: Sequence[nn.Parameter], ids: np.ndarray,
                   cfg: LoopConfig, seq_len: int, rng: np.random.Generator,
                   device: torch.device) -> tuple[np.ndarray, float, torch.Tensor]:
    """The mean gradient over ``cfg.local_steps`` mini-batches at the current parameters (no
    step; clipped to ``cfg.grad_clip`` like a local step's), as one float64 vector over
    ``params``; with the first mini-batch's loss and inputs."""
    total = [torch.zeros_like(p) for p in params]
    first, first_x = float("nan"), None
    for step in range(cfg.local_steps):
        xt, loss = _batch_loss(model, ids, cfg, seq_len, rng, device)
        grads = torch.autograd.grad(loss, list(params))
        if cfg.grad_clip is not None:
            norm = torch.sqrt(sum(torch.sum(g.double() ** 2) for g in grads))
            scale = min(1.0, cfg.grad_clip / (float(norm) + 1e-6))
            grads = [g * scale for g in grads]
        for acc, g in zip(total, grads, strict=True):
            acc += g / cfg.local_steps
        if step == 0:
            first, first_x = float(loss.detach()), xt
    flat = torch.cat([g.detach().reshape(-1) for g in total]).double().cpu().numpy()
    return flat, first, first_x


def _check_pretrain_args(model: CharTransformer, data: np.ndarray, steps: Any, batch_size: Any,
                         lr: Any, seed: Any, seq_len: Any) -> tuple[int, int, int, np.ndarray]:
    """(steps, batch_size, seq_len, ids) checked, in the order of :func:`pretrain`'s errors."""
    steps = _pos_int("steps", steps)
    batch_size = _pos_int("batch_size", batch_size)
    seq_len = model.config.seq_len if seq_len is None else _pos_int("seq_len", seq_len)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InvalidArgumentError(f"lr: expected a positive finite number, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"seed: expected a non-negative integer, got {seed!r}")
    ids = _as_ids(data, "data")
    _check_id_range(ids, model, "data")
    return steps, batch_size, seq_len, ids


def pretrain(model: CharTransformer, data: np.ndarray, *, steps: int, batch_size: int = 32,
             lr: float = 3e-3, seed: int = 0, weight_decay: float = 0.0,
             grad_clip: float | None = 1.0, seq_len: int | None = None) -> list[float]:
    """Pre-train ``model`` in place with AdamW on random windows of ``data``; deterministic.

    Each step draws ``batch_size`` windows with :func:`fedopt.fl.data.sample_batch` from
    ``np.random.default_rng(seed)``, minimizes the mean next-character cross-entropy, clips the
    gradient norm to ``grad_clip`` and takes one AdamW step (β = (0.9, 0.99)).

    Parameters
    ----------
    model : CharTransformer
        Trained in place (on the device it lives on; CPU for bit-exact reproducibility).
    data : np.ndarray
        1-D int ids (e.g. ``np.concatenate([c.train for c in fed.clients])``).
    steps, batch_size : int
    lr, weight_decay : float
    seed : int
        Seeds the batch draws and (with dropout > 0) the dropout masks.
    grad_clip : float or None
        Max gradient 2-norm; None disables clipping.
    seq_len : int, optional
        Window length, default ``model.seq_len``.

    Returns
    -------
    list of float
        The training loss (nats per character) at every step, before that step's update.
    """
    steps, batch_size, seq_len, ids = _check_pretrain_args(model, data, steps, batch_size, lr,
                                                           seed, seq_len)
    rng = np.random.default_rng(int(seed))
    device = _device_of(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(lr), betas=(0.9, 0.99),
                            weight_decay=float(weight_decay), foreach=False)
    losses: list[float] = []
    with deterministic(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # dropout masks only; global state restored on exit
        model.train()
        for _ in range(steps):
            x, y = sample_batch(ids, batch_size, seq_len, rng)
            xt = torch.from_numpy(x).to(device)
            yt = torch.from_numpy(y).to(device)
            logits = model(xt)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yt.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, float(grad_clip), foreach=False)
            opt.step()
            losses.append(float(loss.detach()))
    return losses


@dataclass(frozen=True)
class EvalResult:
    """Mean next-character cross-entropy ``loss`` (nats) over ``n_tokens`` predicted characters
    and ``perplexity`` = exp(loss)."""

    loss: float
    perplexity: float
    n_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def evaluate_loss(model: nn.Module, ids: np.ndarray, seq_len: int | None = None,
                  batch_size: int = 64, max_batches: int | None = None) -> EvalResult:
    """Cross-entropy of ``model`` on ``ids`` over non-overlapping windows (deterministic).

    Windows start at 0, L, 2L, … (L = ``seq_len``, default the model's) while a full window and
    its next-character targets fit; when ``max_batches`` caps them, the kept windows are spread
    evenly over the whole array (not just its beginning). Data shorter than L + 1 form a single
    window of length len(ids) − 1. The loss is the token-weighted mean over all kept windows; the
    model is put in eval mode for the call and restored after.
    """
    arr = _as_ids(ids)
    if arr.shape[0] < 2:
        raise InvalidArgumentError(
            f"ids: need at least 2 tokens to score next-character predictions, got {arr.shape[0]}"
        )
    _check_id_range(arr, model, "ids")
    if seq_len is None:
        seq_len = getattr(model, "seq_len", None)
        if seq_len is None:
            raise InvalidArgumentError("seq_len: required for a model without a seq_len attribute")
    seq_len = _pos_int("seq_len", seq_len)
    batch_size = _pos_int("batch_size", batch_size)
    if max_batches is not None:
        max_batches = _pos_int("max_batches", max_batches)
    n = arr.shape[0]
    length = min(seq_len, n - 1)
    starts = np.arange(0, n - length, length)
    if max_batches is not None and starts.size > max_batches * batch_size:
        keep = np.linspace(0, starts.size - 1, max_batches * batch_size).round().astype(np.int64)
        starts = starts[np.unique(keep)]
    device = _device_of(model)
    offs = np.arange(length + 1)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, starts.size, batch_size):
            win = torch.from_numpy(arr[starts[i:i + batch_size, None] + offs[None, :]]).to(device)
            logits = model(win[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                   win[:, 1:].reshape(-1), reduction="sum")
            total += float(loss)
            count += int(win.shape[0] * length)
    finally:
        model.train(was_training)
    mean = total / count
    return EvalResult(loss=mean, perplexity=math.exp(mean) if mean < 700 else math.inf,
                      n_tokens=count)

