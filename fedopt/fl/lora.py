"""LoRA adapters for any ``torch.nn.Module`` with ``nn.Linear`` layers (spec 05 §1, spec 01 §2).

An adapted layer keeps its base weight W0 ∈ R^{d_out × d_in} (and bias b) frozen and learns two
factors A ∈ R^{r × d_in} and B ∈ R^{d_out × r}:

    y = x W0ᵀ + b + (α/r) · ((x Aᵀ) ⊙ m) Bᵀ,        W = W0 + (α/r) B diag(m) A,

with m ∈ R^r the rank mask (all ones by default). Because B A = Σ_i b_i a_iᵀ (b_i the i-th column
of B, a_iᵀ the i-th row of A), a zero in m removes the i-th rank-1 component exactly: it adds
nothing to the output and receives no gradient (SOFT, spec 04 §4). B starts at zero, so the adapted
model reproduces the base model bit for bit until the first update; A starts Kaiming-uniform
(bound 1/√d_in, as ``nn.Linear`` and PEFT) or Gaussian (std 1/r), drawn from a ``torch.Generator``
passed in.

The federated loop does not see modules but one flat vector per client: :func:`flatten_lora`
concatenates, layer by layer in the order of :func:`apply_lora`, A then B (row-major), so its
length is q(r) = r · Σ_l (d_out,l + d_in,l) — exactly ``LoRASpec.params_per_rank · r`` for
``factors="AB"`` on the layers reported by :func:`lora_layer_spec`. ``factors="B"`` / ``"A"``
select the single-factor payloads r · Σ d_out and r · Σ d_in (FFA- / FedSA-style, spec 05 §3).

This module imports torch; ``fedopt`` itself does not import this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedopt.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_TARGETS",
    "LoRALinear",
    "apply_lora",
    "lora_modules",
    "lora_parameters",
    "lora_state",
    "load_lora_state",
    "flatten_lora",
    "unflatten_lora",
    "lora_layer_spec",
    "set_rank_mask",
]

#: Names of the ``nn.Linear`` layers adapted by default: attention projections of the in-repo
#: character transformer (``q``, ``k``, ``v``, ``proj``), a fused ``attn``, GPT-2's ``c_attn``.
DEFAULT_TARGETS: tuple[str, ...] = ("q", "k", "v", "attn", "c_attn", "proj")

_INITS = ("kaiming", "gaussian")
_FACTORS = ("AB", "A", "B")

Target = str | Iterable[str] | Callable[[str, nn.Module], bool]
LoRAModules = Mapping[str, "LoRALinear"] | nn.Module


def _check_rank(rank: Any, name: str, d_out: int, d_in: int) -> int:
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


def _check_alpha(alpha: Any, rank: int) -> float:
    """α as a positive float (default r, i.e. scale α/r = 1)."""
    if alpha is None:
        return float(rank)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (
            math.isfinite(alpha) and alpha > 0):
        raise InvalidArgumentError(f"alpha: expected a positive finite number, got {alpha!r}")
    return float(alpha)


def _check_init(init: Any) -> None:
    if init not in _INITS:
        raise InvalidArgumentError(f"init: expected one of {_INITS}, got {init!r}")


def _check_mask(mask: Any, rank: int, name: str, like: torch.Tensor) -> torch.Tensor:
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
        rank = _check_rank(rank, name, int(d_out), int(d_in))
        alpha = _check_alpha(alpha, rank)
        _check_init(init)
        w = base.weight
        for p in base.parameters():
            p.requires_grad_(False)
        self.base = base
        self.name = name
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        self.init = init
        # draw on the generator's device (CPU unless told otherwise), then move: the same seed
        # gives the same A whatever device or dtype the base model lives on
        dev = generator.device if generator is not None else torch.device("cpu")
        if init == "kaiming":
            # kaiming_uniform_(a=√5) as in nn.Linear / PEFT: bound = √(6 / ((1 + 5) d_in))
            bound = 1.0 / math.sqrt(d_in)
            a0 = torch.rand((rank, d_in), generator=generator, device=dev, dtype=torch.float64)
            a0 = (2.0 * a0 - 1.0) * bound
        else:
            a0 = torch.randn((rank, d_in), generator=generator, device=dev,
                             dtype=torch.float64) / rank
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
        self.rank_mask = _check_mask(mask, self.rank, self.name, self.A)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, d_out={self.d_out}, d_in={self.d_in}, rank={self.rank}, "
                f"alpha={self.alpha:g}")


def _matcher(target: Target) -> Callable[[str, nn.Module], bool]:
    if callable(target):
        return target
    names = (target,) if isinstance(target, str) else tuple(target)
    if not names or not all(isinstance(t, str) and t for t in names):
        raise InvalidArgumentError(
            f"target: expected layer names (strings) or a callable(name, module) -> bool, got "
            f"{target!r}"
        )
    wanted = frozenset(names)
    return lambda name, module: name in wanted or name.rsplit(".", 1)[-1] in wanted


def apply_lora(model: nn.Module, rank: int, *, alpha: float | None = None,
               target: Target = DEFAULT_TARGETS, init: str = "kaiming",
               generator: torch.Generator | None = None) -> dict[str, LoRALinear]:
    """Replace the matching ``nn.Linear`` layers of ``model`` by :class:`LoRALinear`, in place.

    Parameters
    ----------
    model : nn.Module
        Any module; its submodules are visited in ``named_modules`` (registration) order.
    rank : int
        r for every adapted layer, in 1..min(d_out, d_in) of each.
    alpha : float, optional
        α (default r, i.e. scale 1).
    target : str, iterable of str, or callable(name, module) -> bool
        A string matches a layer whose qualified name, or its last dotted component, equals it
        (``"q"`` matches ``blocks.0.attn.q``); a callable decides for each ``nn.Linear``.
    init : {"kaiming", "gaussian"}
        Initialization of A (B is zero).
    generator : torch.Generator, optional
        Draws every A, layer after layer in the returned order.

    Returns
    -------
    dict of str to LoRALinear
        Qualified name → adapter, in module order.

    Every parameter of ``model`` except the A and B of its adapters (new or from an earlier call)
    is frozen. Nothing is changed when an error is raised: no layer matched, a rank out of range,
    or a layer that its parent never calls (``nn.MultiheadAttention.out_proj``).
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    _check_alpha(alpha, 1)
    _check_init(init)
    match = _matcher(target)
    wrapped = {id(m.base) for m in model.modules() if isinstance(m, LoRALinear)}
    linears: list[str] = []
    found: list[tuple[str, nn.Linear]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or id(module) in wrapped:
            continue
        linears.append(name)
        if match(name, module):
            found.append((name, module))
    if not found:
        shown = ", ".join(repr(n) for n in linears[:12]) + (" ..." if len(linears) > 12 else "")
        hint = f"its nn.Linear layers are {shown}" if linears else "it has no nn.Linear layer"
        raise InvalidArgumentError(
            f"apply_lora: no nn.Linear layer of {type(model).__name__} matches target={target!r}; "
            f"{hint}; pass target=(names...) or a callable(name, module) -> bool"
        )
    for name, lin in found:
        if name == "":
            raise InvalidArgumentError(
                "apply_lora: the model itself is an nn.Linear and cannot be replaced in place; "
                "wrap it directly with LoRALinear(model, rank)"
            )
        parent_name = name.rpartition(".")[0]
        if isinstance(model.get_submodule(parent_name), nn.MultiheadAttention):
            raise InvalidArgumentError(
                f"apply_lora: layer {name!r} belongs to an nn.MultiheadAttention, which reads its "
                f"weight directly and never calls it, so a LoRA there would be silently ignored; "
                f"leave it out with target= or build attention from separate nn.Linear layers"
            )
        _check_rank(rank, name, int(lin.weight.shape[0]), int(lin.weight.shape[1]))
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.A.requires_grad_(True)
            m.B.requires_grad_(True)
    out: dict[str, LoRALinear] = {}
    for name, lin in found:
        parent_name, _, child = name.rpartition(".")
        adapter = LoRALinear(lin, rank, alpha=alpha, init=init, generator=generator, name=name)
        setattr(model.get_submodule(parent_name), child, adapter)
        out[name] = adapter
    return out


def lora_modules(modules: LoRAModules) -> dict[str, LoRALinear]:
    """Name → adapter: the mapping itself, or every :class:`LoRALinear` inside a module."""
    if isinstance(modules, nn.Module):
        found = {n: m for n, m in modules.named_modules() if isinstance(m, LoRALinear)}
        if not found:
            raise InvalidArgumentError(
                f"{type(modules).__name__} has no LoRALinear layer; call apply_lora first"
            )
        return found
    if not isinstance(modules, Mapping):
        raise InvalidArgumentError(
            f"expected the name → LoRALinear map returned by apply_lora (or a module), got "
            f"{type(modules).__name__}"
        )
    for name, m in modules.items():
        if not isinstance(m, LoRALinear):
            raise InvalidArgumentError(
                f"{name!r}: expected a LoRALinear, got {type(m).__name__}"
            )
    return dict(modules)


def _check_factors(factors: str) -> str:
    if factors not in _FACTORS:
        raise InvalidArgumentError(f"factors: expected one of {_FACTORS}, got {factors!r}")
    return factors


def _named_parameters(modules: LoRAModules, factors: str) -> list[tuple[str, nn.Parameter]]:
    _check_factors(factors)
    out = []
    for name, m in lora_modules(modules).items():
        if "A" in factors:
            out.append((f"{name}.A", m.A))
        if "B" in factors:
            out.append((f"{name}.B", m.B))
    return out


def lora_parameters(modules: LoRAModules, factors: str = "AB") -> list[nn.Parameter]:
    """The trainable factors in payload order: for each layer A then B (or only one of them)."""
    return [p for _, p in _named_parameters(modules, factors)]


def lora_state(modules: LoRAModules, factors: str = "AB") -> dict[str, torch.Tensor]:
    """``{"<layer>.A": A, "<layer>.B": B, ...}``: detached copies (later training leaves them)."""
    return {k: p.detach().clone() for k, p in _named_parameters(modules, factors)}


def load_lora_state(modules: LoRAModules, state: Mapping[str, torch.Tensor],
                    factors: str = "AB") -> None:
    """Copy a :func:`lora_state` back into the adapters (keys and shapes must match exactly)."""
    params = dict(_named_parameters(modules, factors))
    missing = [k for k in params if k not in state]
    unexpected = [k for k in state if k not in params]
    if missing or unexpected:
        raise InvalidArgumentError(
            f"load_lora_state: keys disagree with the adapters (missing {missing[:6]}, unexpected "
            f"{unexpected[:6]}); was the state saved from the same model, rank and factors?"
        )
    for k, p in params.items():
        v = torch.as_tensor(state[k])
        if tuple(v.shape) != tuple(p.shape):
            raise InvalidArgumentError(
                f"load_lora_state: {k!r} has shape {tuple(v.shape)}, the adapter needs "
                f"{tuple(p.shape)}"
            )
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(state[k])


def flatten_lora(modules: LoRAModules, factors: str = "AB") -> torch.Tensor:
    """The payload vector: A then B of each layer, row-major, concatenated (a new tensor).

    Length q(r) = r · Σ_l (d_out,l + d_in,l) for ``"AB"``, r · Σ d_out for ``"B"``, r · Σ d_in for
    ``"A"`` (spec 01 §2).
    """
    return torch.cat([p.detach().reshape(-1) for p in lora_parameters(modules, factors)])


def unflatten_lora(modules: LoRAModules, vector: torch.Tensor, factors: str = "AB") -> None:
    """Write a payload vector (as from :func:`flatten_lora`) back into the factors, in place."""
    params = lora_parameters(modules, factors)
    n = sum(p.numel() for p in params)
    if not isinstance(vector, torch.Tensor) or vector.ndim != 1 or vector.numel() != n:
        shape = tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise InvalidArgumentError(
            f"unflatten_lora: expected a 1-D tensor of length {n} (r · Σ sizes of factors "
            f"{factors!r}), got {shape}"
        )
    with torch.no_grad():
        offset = 0
        for p in params:
            k = p.numel()
            p.copy_(vector[offset:offset + k].view(p.shape))
            offset += k


def _pattern(name: str) -> str:
    """``blocks.3.attn.q`` → ``blocks.*.attn.q`` (layer indices folded)."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.|$)", "*", name)


def lora_layer_spec(modules: LoRAModules) -> list[dict[str, Any]]:
    """Adapted layers grouped by shape, ready for an instance's ``lora.layers`` (spec 01 §1–2).

    Returns ``[{"name", "d_out", "d_in", "count"}, ...]`` in order of first appearance; a group's
    name lists its layer names with numeric indices folded to ``*``
    (``"blocks.*.attn.q,blocks.*.attn.k"``). Σ count · (d_out + d_in) is the ``"AB"`` payload per
    unit of rank, i.e. ``LoRASpec.params_per_rank``.
    """
    groups: dict[tuple[int, int], dict[str, Any]] = {}
    for name, m in lora_modules(modules).items():
        g = groups.setdefault((m.d_out, m.d_in), {"names": [], "count": 0})
        g["count"] += 1
        p = _pattern(name)
        if p not in g["names"]:
            g["names"].append(p)
    return [{"name": ",".join(g["names"]), "d_out": d_out, "d_in": d_in, "count": g["count"]}
            for (d_out, d_in), g in groups.items()]


def set_rank_mask(modules: LoRAModules, mask: Any | Mapping[str, Any]) -> None:
    """Set the rank mask of every adapter (one vector of length r), or per layer (name → vector).

    Masks are validated before any is set; 1 / ``True`` keeps a component, 0 / ``False`` drops it
    (:func:`fedopt.fl.soft.index_to_mask` gives one from kept indices).
    """
    mods = lora_modules(modules)
    if isinstance(mask, Mapping):
        unknown = [k for k in mask if k not in mods]
        if unknown:
            raise InvalidArgumentError(
                f"set_rank_mask: no adapted layer named {unknown[0]!r}; layers are {list(mods)[:6]}"
            )
        items: Sequence[tuple[str, Any]] = list(mask.items())
    else:
        items = [(k, mask) for k in mods]
    checked = [(mods[k], _check_mask(v, mods[k].rank, k, mods[k].A)) for k, v in items]
    for m, v in checked:
        m.rank_mask = v
