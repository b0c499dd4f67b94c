"""PEFT's LoRA layers seen as fedopt adapters: the same A, B, payload order and q(r).

A PEFT LoRA layer (``peft.tuners.lora.Linear``, wrapping an ``nn.Linear`` or GPT-2's
``Conv1D``) holds, for its adapter, ``lora_A`` (an ``nn.Linear(d_in, r)``, weight r × d_in) and
``lora_B`` (an ``nn.Linear(r, d_out)``, weight d_out × r) and computes

    y = base(x) + s · lora_B(lora_A(x)),        s = α/r (α/√r with rsLoRA),

so its two weights are exactly the A and B of :class:`fedopt.fl.adapter.LoRALinear`, in the same
orientation, whatever the base layer: a ``Conv1D`` stores its *base* weight transposed
(d_in × d_out, y = x W + b), never its LoRA factors. :class:`PeftLoRA` exposes those two
parameters (the same ``nn.Parameter`` objects, so training moves them and
:func:`fedopt.fl.lora.unflatten_lora` writes into them) under LoRALinear's names, so that
:func:`fedopt.fl.lora.lora_modules` finds the adapters of a PEFT model and the loop, the
algorithms and the aggregators see one flat vector laid out as for fedopt's own adapters:
layer by layer in module order, A then B, row-major, q(r) = r · Σ (d_out + d_in).

Supported: plain LoRA with one active adapter, no LoRA bias, not merged. DoRA, LoRA on
embeddings, several adapters and rank masks (SOFT) are refused with an error. This module needs
torch only: it recognizes PEFT layers by their attributes and never imports peft.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fedopt.errors import InvalidArgumentError

__all__ = ["PeftLoRA", "is_peft_lora_layer", "peft_lora_modules", "base_weight"]

#: the prefix PEFT puts before the wrapped model's module names
_PEFT_PREFIX = "base_model.model."


def is_peft_lora_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a PEFT LoRA layer (it has ``lora_A``/``lora_B`` module dicts and a
    ``base_layer``)."""
    return (isinstance(getattr(module, "lora_A", None), nn.ModuleDict)
            and isinstance(getattr(module, "lora_B", None), nn.ModuleDict)
            and isinstance(getattr(module, "base_layer", None), nn.Module))


def base_weight(layer: nn.Module) -> torch.Tensor:
    """The weight of an ``nn.Linear`` or a ``Conv1D`` as d_out × d_in (a Conv1D's is stored
    d_in × d_out and returned transposed, as a view)."""
    w = layer.weight
    if isinstance(layer, nn.Linear):
        return w
    if type(layer).__name__ == "Conv1D" and hasattr(layer, "nf"):
        return w.t()
    raise InvalidArgumentError(
        f"base layer: expected an nn.Linear or a transformers Conv1D, got {type(layer).__name__}")


def _adapter_name(layer: nn.Module, name: str) -> str:
    """The layer's one active adapter, after refusing what fedopt cannot send as (A, B)."""
    active = list(getattr(layer, "active_adapters", None) or [])
    if len(active) != 1:
        raise InvalidArgumentError(
            f"PEFT layer {name!r}: expected exactly one active adapter, got {active}; activate "
            f"one with model.set_adapter(name)")
    adapter = active[0]
    problems = []
    if adapter not in layer.lora_A:
        problems.append("LoRA on an embedding (lora_embedding_A/B) is not supported")
    if getattr(layer, "use_dora", {}).get(adapter):
        problems.append("DoRA adds a magnitude vector the payload does not carry")
    if getattr(layer, "lora_bias", {}).get(adapter):
        problems.append("lora_bias adds a bias the payload does not carry")
    if getattr(layer, "merged", False):
        problems.append("the adapter is merged into the base weight; unmerge it first")
    if adapter in getattr(layer, "lora_variant", {}):
        problems.append(f"the LoRA variant {type(layer.lora_variant[adapter]).__name__} is not "
                        "plain LoRA")
    if problems:
        raise InvalidArgumentError(f"PEFT layer {name!r}, adapter {adapter!r}: "
                                   + "; ".join(problems) + " (use plain LoRA: LoraConfig(r, "
                                   "lora_alpha, target_modules))")
    return adapter


class PeftLoRA:
    """:class:`~fedopt.fl.adapter.LoRALinear`'s interface over one PEFT LoRA layer.

    Parameters
    ----------
    layer : nn.Module
        A PEFT LoRA layer (:func:`is_peft_lora_layer`).
    name : str
        The layer's name in the wrapped model (``transformer.h.0.attn.c_attn``).

    Attributes
    ----------
    A, B : nn.Parameter
        The adapter's ``lora_A`` weight (r × d_in) and ``lora_B`` weight (d_out × r): PEFT's own
        parameters, not copies.
    rank, d_out, d_in, alpha, scaling
        r, the adapted weight's shape (d_out × d_in, also for a Conv1D base), α and PEFT's
        scale s (α/r, or α/√r with rsLoRA).
    """

    def __init__(self, layer: nn.Module, name: str):
        self.layer = layer
        self.name = name
        self.adapter = _adapter_name(layer, name)

    @property
    def A(self) -> nn.Parameter:
        return self.layer.lora_A[self.adapter].weight

    @property
    def B(self) -> nn.Parameter:
        return self.layer.lora_B[self.adapter].weight

    @property
    def base(self) -> nn.Module:
        return self.layer.base_layer

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def d_out(self) -> int:
        return int(self.B.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.A.shape[1])

    @property
    def alpha(self) -> float:
        return float(self.layer.lora_alpha[self.adapter])

    @property
    def scaling(self) -> float:
        return float(self.layer.scaling[self.adapter])

    @property
    def rank_mask(self) -> torch.Tensor:
        """All ones: PEFT layers have no rank mask."""
        return torch.ones(self.rank, dtype=self.A.dtype, device=self.A.device)

    @rank_mask.setter
    def rank_mask(self, value: Any) -> None:
        raise InvalidArgumentError(
            f"rank mask for layer {self.name!r}: PEFT LoRA layers have no rank mask (SOFT's "
            f"masked components need fedopt's own LoRALinear); send the full payload instead")

    def set_mask(self, mask: Any) -> None:
        self.rank_mask = mask

    def delta_weight(self) -> torch.Tensor:
        """s · B A, d_out × d_in (differentiable in A, B)."""
        return (self.B @ self.A) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        """W0 + s · B A with W0 as d_out × d_in (a Conv1D's weight transposed)."""
        return base_weight(self.base) + self.delta_weight()

    def __repr__(self) -> str:
        return (f"PeftLoRA(name={self.name!r}, d_out={self.d_out}, d_in={self.d_in}, "
                f"rank={self.rank}, alpha={self.alpha:g})")


def peft_lora_modules(model: nn.Module) -> dict[str, PeftLoRA]:
    """Name → :class:`PeftLoRA` of every PEFT LoRA layer inside ``model``, in module order.

    Names are those of the wrapped Hugging Face model (the ``base_model.model.`` prefix that
    PEFT adds, and anything before it, dropped), as in an instance's ``lora.layers``.
    """
    out: dict[str, PeftLoRA] = {}
    for name, module in model.named_modules():
        if is_peft_lora_layer(module):
            short = name.split(_PEFT_PREFIX, 1)[1] if _PEFT_PREFIX in name else name
            out[short] = PeftLoRA(module, short)
    return out
