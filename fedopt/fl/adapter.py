"""The LoRA adapter layer: a frozen ``nn.Linear`` plus a trainable low-rank update (spec 05 §1).

An adapted layer keeps its base weight W0 ∈ R^{d_out × d_in} (and bias b) frozen and learns two
factors A ∈ R^{r × d_in} and B ∈ R^{d_out × r}:

    y = x W0ᵀ + b + (α/r) · ((x Aᵀ) ⊙ m) Bᵀ,        W = W0 + (α/r) B diag(m) A,

with m ∈ R^r the rank mask (all ones by default). Because B A = Σ_i b_i a_iᵀ (b_i the i-th column
of B, a_iᵀ the i-th row of A), a zero in m removes the i-th rank-1 component exactly: it adds
nothing to the output and receives no gradient (SOFT, spec 04 §4). B starts at zero, so the adapted
model reproduces the base model bit for bit until the first update; A starts Kaiming-uniform
(bound 1/√d_in, as ``nn.Linear`` and PEFT) or Gaussian (std 1/r), drawn from a ``torch.Generator``
passed in.

Public through :mod:`fedopt.fl.lora` (which applies adapters to a model and flattens them). This
module imports torch; ``fedopt`` itself does not import this module.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedopt.errors import InvalidArgumentError

__all__ = ["LoRALinear", "INITS", "check_rank", "check_alpha", "check_init", "check_mask",
           "initial_A"]

#: initializations of A
INITS = ("kaiming", "gaussian")


def check_rank(rank: Any, name: str, d_out: int, d_in: int) -> int:
    """rank as an int in 1..min(d_out, d_in), or an error naming the layer and the range."""
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise InvalidArgumentError(f"rank: expected an integer, got {rank!r}")
    hi = min(d_out, d_in)
    if not 1 <= rank <= hi:
        raise InvalidArgumentError(
            f"rank {rank} is out of range for layer {name!r} ({d_out} × {d_in}): a LoRA rank must "
            f"lie in 1..min(d_out, d_in) = 1..{hi}; pick a smaller rank or leave this layer out "
            f"with target="
        )
    return rank


def check_alpha(alpha: Any, rank: int) -> float:
    """α as a positive float (default r, i.e. scale α/r = 1)."""
    if alpha is None:
        return float(rank)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (
            math.isfinite(alpha) and alpha > 0):
        raise InvalidArgumentError(f"alpha: expected a positive finite number, got {alpha!r}")
    return float(alpha)


def check_init(init: Any) -> None:
    """``init`` must name one of :data:`INITS`."""
    if init not in INITS:
        raise InvalidArgumentError(f"init: expected one of {INITS}, got {init!r}")


def check_mask(mask: Any, rank: int, name: str, like: torch.Tensor) -> torch.Tensor:
    """A rank mask of length ``rank``, finite and real, in the dtype and device of ``like``."""
    m = torch.as_tensor(mask)
    if m.ndim != 1 or m.shape[0] != rank:
        raise InvalidArgumentError(
            f"rank mask for layer {name!r}: expected a vector of length r = {rank}, got shape "
            f"{tuple(m.shape)}"
        )
    if m.is_complex():
        raise InvalidArgumentError(f"rank mask for layer {name!r}: expected bool or real values")
    m = m.to(dtype=like.dtype, device=like.device)
    if not bool(torch.isfinite(m).all()):
        raise InvalidArgumentError(f"rank mask for layer {name!r}: entries must be finite")
    return m


def initial_A(rank: int, d_in: int, *, init: str = "kaiming",
              generator: torch.Generator | None = None) -> torch.Tensor:
    """A's initial value (r × d_in, float64): uniform on ±1/√d_in (``kaiming``) or normal with
    std 1/r (``gaussian``), drawn from ``generator`` on its device (CPU unless told otherwise),
    so the same seed gives the same A whatever device or dtype the model lives on. Used by
    :class:`LoRALinear` and by :func:`fedopt.fl.hf.apply_peft_lora` (same seed, same A)."""
    check_init(init)
    dev = generator.device if generator is not None else torch.device("cpu")
    if init == "kaiming":
        # kaiming_uniform_(a=√5) as in nn.Linear / PEFT: bound = √(6 / ((1 + 5) d_in))
        bound = 1.0 / math.sqrt(d_in)
        a0 = torch.rand((rank, d_in), generator=generator, device=dev, dtype=torch.float64)
        return (2.0 * a0 - 1.0) * bound
    return torch.randn((rank, d_in), generator=generator, device=dev, dtype=torch.float64) / rank


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (module docstring for the math).

    Parameters
    ----------
    base : nn.Linear
        The layer to adapt; its weight (d_out × d_in) and bias are frozen, never copied.
    rank : int
        r, in 1..min(d_out, d_in).
    alpha : float, optional
        α in the scale α/r; default α = r (scale 1).
    init : {"kaiming", "gaussian"}
        Initialization of A: uniform on ±1/√d_in, or normal with std 1/r. B is always zero.
    generator : torch.Generator, optional
        Source of A's initial values (torch's default generator when omitted).
    name : str
        Shown in error messages and ``repr``.

    Attributes
    ----------
    A : nn.Parameter
        r × d_in, dtype and device of the base weight.
    B : nn.Parameter
        d_out × r, zeros at construction.
    rank_mask : torch.Tensor
        Buffer of length r (1 keeps a component, 0 removes it).
    scaling : float
        α/r.
    """

    def __init__(self, base: nn.Linear, rank: int, *, alpha: float | None = None,
                 init: str = "kaiming", generator: torch.Generator | None = None,
                 name: str = "linear"):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise InvalidArgumentError(
                f"layer {name!r}: LoRALinear wraps an nn.Linear, got {type(base).__name__}"
            )
        d_out, d_in = base.weight.shape
        rank = check_rank(rank, name, int(d_out), int(d_in))
        alpha = check_alpha(alpha, rank)
        check_init(init)
        w = base.weight
        for p in base.parameters():
            p.requires_grad_(False)
        self.base = base
        self.name = name
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        self.init = init
        a0 = initial_A(rank, int(d_in), init=init, generator=generator)
        self.A = nn.Parameter(a0.to(dtype=w.dtype, device=w.device))
        self.B = nn.Parameter(torch.zeros((d_out, rank), dtype=w.dtype, device=w.device))
        self.register_buffer("rank_mask", torch.ones(rank, dtype=w.dtype, device=w.device))

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def d_out(self) -> int:
        return int(self.base.weight.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.base.weight.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = base(x) + (α/r) · ((x Aᵀ) ⊙ m) Bᵀ."""
        h = F.linear(x, self.A) * self.rank_mask
        return self.base(x) + F.linear(h, self.B) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """(α/r) B diag(m) A = (α/r) Σ_i m_i b_i a_iᵀ, d_out × d_in (differentiable in A, B)."""
        return ((self.B * self.rank_mask) @ self.A) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        """W0 + (α/r) B diag(m) A: the weight of the equivalent plain ``nn.Linear``."""
        return self.base.weight + self.delta_weight()

    def set_mask(self, mask: Any) -> None:
        """Set the rank mask (bool or real vector of length r; copied, dtype of the weights)."""
        self.rank_mask = check_mask(mask, self.rank, self.name, self.A)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, d_out={self.d_out}, d_in={self.d_in}, rank={self.rank}, "
                f"alpha={self.alpha:g}")

