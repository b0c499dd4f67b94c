"""LoRA adapters for any ``torch.nn.Module`` with ``nn.Linear`` layers (spec 05 §1, spec 01 §2).

:func:`apply_lora` replaces the matching ``nn.Linear`` layers of a model, in place, by
:class:`LoRALinear` adapters (:mod:`fedopt.fl.adapter`, re-exported here: a frozen base weight W0
plus (α/r) B diag(m) A, B starting at zero and a rank mask m that removes rank-1 components
exactly).

The federated loop does not see modules but one flat vector per client: :func:`flatten_lora`
concatenates, layer by layer in the order of :func:`apply_lora`, A then B (row-major), so its
length is q(r) = r · Σ_l (d_out,l + d_in,l) — exactly ``LoRASpec.params_per_rank · r`` for
``factors="AB"`` on the layers reported by :func:`lora_layer_spec`. ``factors="B"`` / ``"A"``
select the single-factor payloads r · Σ d_out and r · Σ d_in (FFA- / FedSA-style, spec 05 §3).
The same functions read and write the LoRA layers of a PEFT model (:mod:`fedopt.fl.peft_adapter`),
whose A and B are laid out the same way.

This module imports torch; ``fedopt`` itself does not import this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fedopt.errors import InvalidArgumentError
from fedopt.fl.adapter import LoRALinear, check_alpha, check_init, check_mask, check_rank
from fedopt.fl.peft_adapter import PeftLoRA, peft_lora_modules

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
    "layer_groups",
    "set_rank_mask",
]

#: Names of the ``nn.Linear`` layers adapted by default: attention projections of the in-repo
#: character transformer (``q``, ``k``, ``v``, ``proj``), a fused ``attn``, GPT-2's ``c_attn``.
DEFAULT_TARGETS: tuple[str, ...] = ("q", "k", "v", "attn", "c_attn", "proj")

_FACTORS = ("AB", "A", "B")

Target = str | Iterable[str] | Callable[[str, nn.Module], bool]
LoRAModules = Mapping[str, LoRALinear] | nn.Module


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


def _matching_linears(model: nn.Module, match: Callable[[str, nn.Module], bool]
                      ) -> tuple[list[str], list[tuple[str, nn.Linear]]]:
    """(names of all not yet adapted ``nn.Linear`` layers, the matching (name, layer) pairs)."""
    wrapped = {id(m.base) for m in model.modules() if isinstance(m, LoRALinear)}
    linears: list[str] = []
    found: list[tuple[str, nn.Linear]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or id(module) in wrapped:
            continue
        linears.append(name)
        if match(name, module):
            found.append((name, module))
    return linears, found


def _check_targets(model: nn.Module, rank: int, target: Target, linears: list[str],
                   found: list[tuple[str, nn.Linear]]) -> None:
    """Refuse (before anything changes) an empty match, the model itself, layers inside an
    ``nn.MultiheadAttention`` and a rank out of range for any matched layer."""
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
        check_rank(rank, name, int(lin.weight.shape[0]), int(lin.weight.shape[1]))


def _freeze_all_but_adapters(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.A.requires_grad_(True)
            m.B.requires_grad_(True)


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
    check_alpha(alpha, 1)
    check_init(init)
    linears, found = _matching_linears(model, _matcher(target))
    _check_targets(model, rank, target, linears, found)
    _freeze_all_but_adapters(model)
    out: dict[str, LoRALinear] = {}
    for name, lin in found:
        parent_name, _, child = name.rpartition(".")
        adapter = LoRALinear(lin, rank, alpha=alpha, init=init, generator=generator, name=name)
        setattr(model.get_submodule(parent_name), child, adapter)
        out[name] = adapter
    return out


def lora_modules(modules: LoRAModules) -> dict[str, LoRALinear]:
    """Name → adapter: the mapping itself, or every :class:`LoRALinear` inside a module.

    A module without LoRALinear layers but with PEFT LoRA layers (``peft.get_peft_model``, e.g.
    through :func:`fedopt.fl.hf.apply_peft_lora`) gives its :class:`~fedopt.fl.peft_adapter.
    PeftLoRA` views instead: the same A, B, order and payload length.
    """
    if isinstance(modules, nn.Module):
        found = {n: m for n, m in modules.named_modules() if isinstance(m, LoRALinear)}
        if not found:
            found = peft_lora_modules(modules)
        if not found:
            raise InvalidArgumentError(
                f"{type(modules).__name__} has no LoRALinear layer and no PEFT LoRA layer; call "
                f"apply_lora (or fedopt.fl.hf.apply_peft_lora) first"
            )
        return found
    if not isinstance(modules, Mapping):
        raise InvalidArgumentError(
            f"expected the name → LoRALinear map returned by apply_lora (or a module), got "
            f"{type(modules).__name__}"
        )
    for name, m in modules.items():
        if not isinstance(m, (LoRALinear, PeftLoRA)):
            raise InvalidArgumentError(
                f"{name!r}: expected a LoRALinear (or a PeftLoRA view), got {type(m).__name__}"
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
    return layer_groups((name, m.d_out, m.d_in) for name, m in lora_modules(modules).items())


def layer_groups(layers: Iterable[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """(name, d_out, d_in) of adapted weights, grouped by shape as :func:`lora_layer_spec` does
    (for a model not adapted yet: :func:`fedopt.fl.hf.model_layers`)."""
    groups: dict[tuple[int, int], dict[str, Any]] = {}
    for name, d_out, d_in in layers:
        g = groups.setdefault((int(d_out), int(d_in)), {"names": [], "count": 0})
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
    checked = [(mods[k], check_mask(v, mods[k].rank, k, mods[k].A)) for k, v in items]
    for m, v in checked:
        m.rank_mask = v
