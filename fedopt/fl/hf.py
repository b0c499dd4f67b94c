"""Hugging Face causal LMs with PEFT LoRA in the federated loop (the ``fedopt[hf]`` extra).

Four steps take a model directory into :func:`fedopt.fl.loop.run_federated`:

1. :func:`load_hf_base` reads a local directory, as ``save_pretrained`` writes it (``config.json``,
   safetensors weights, the tokenizer files), with ``local_files_only=True`` and no remote code:
   nothing is downloaded and no pickle is read (a directory with ``pytorch_model.bin`` only is
   refused). The model is wrapped in :class:`HFCausalLM`, which maps token ids (B, L) to logits
   (B, L, V) as the loop's models do, with the ``seq_len`` and ``vocab_size`` the loop reads.
   Dropout stays off (the wrapped model is kept in eval mode), so a round is a function of
   (seed, t) as with the character models.
2. :func:`apply_peft_lora` wraps the model with ``peft.get_peft_model`` at the plan's rank on the
   target modules (default: PEFT's own default for the model type, ``c_attn`` for GPT-2,
   ``q_proj, v_proj`` for Llama), α as the recipe says, no LoRA dropout. A is then redrawn from
   the run's ``torch.Generator`` exactly as :class:`fedopt.fl.adapter.LoRALinear` draws it and B
   is zero, so the same seed gives the same start as fedopt's own adapters.
3. The adapters reach the loop through :mod:`fedopt.fl.peft_adapter`: :func:`fedopt.fl.lora.
   lora_modules` returns PEFT's ``lora_A``/``lora_B`` weights as A (r × d_in) and B (d_out × r),
   so the payload is laid out as for fedopt's adapters (layer by layer, A then B, row-major) and
   has length q(r) = r · Σ (d_out + d_in) over the adapted layers (GPT-2's ``Conv1D`` stores its
   base weight d_in × d_out; its LoRA factors are in the usual orientation).
4. The data (:func:`fedopt.fl.hf_data.tokenize_data`): the testbed's client split, each client's
   text re-tokenized with the model's tokenizer (D_k and φ_k become token counts).

:func:`model_layers` gives the ``lora.layers`` of a model without loading its weights
(``fedopt instance layers --model``); :func:`conv1d_to_linear` turns GPT-2's ``Conv1D`` layers
into ``nn.Linear`` for fedopt's own :func:`~fedopt.fl.lora.apply_lora`. This module imports
torch; transformers and peft are imported when a function needs them (:func:`require_hf`: a
clear error without the extra).
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedopt.errors import CheckpointError, InvalidArgumentError, MissingDependencyError
from fedopt.fl.adapter import check_alpha, check_rank, initial_A
from fedopt.fl.peft_adapter import PeftLoRA, peft_lora_modules

__all__ = ["INSTALL_HINT", "HF_SEQ_LEN", "HFBase", "HFCausalLM", "require_hf",
           "quiet", "load_hf_base", "load_tokenizer", "apply_peft_lora", "resolve_targets",
           "adaptable_layers", "model_layers", "conv1d_to_linear"]

INSTALL_HINT = 'pip install "fedopt[hf]"'
#: window length of a Hugging Face model in the loop (capped by its position embeddings)
HF_SEQ_LEN = 64
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def require_hf(peft: bool = True) -> tuple[Any, Any]:
    """(transformers, peft), or :class:`MissingDependencyError` naming the extra; with
    ``peft=False`` peft is only looked for, not imported (it is slow to import), and None is
    returned in its place."""
    try:
        if not peft and importlib.util.find_spec("peft") is None:
            raise ImportError("No module named 'peft'")
        module = importlib.import_module("peft") if peft else None
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            f"model: a Hugging Face model needs transformers and peft, which could not be "
            f"imported ({exc}); install the extra: {INSTALL_HINT}") from None
    return transformers, module


@contextmanager
def quiet(transformers: Any) -> Iterator[None]:
    """No progress bars or info chatter from transformers, and no PEFT note that it set
    ``fan_in_fan_out`` for a Conv1D (set here already), for the block; restored after."""
    log = transformers.utils.logging
    bar, level = log.is_progress_bar_enabled(), log.get_verbosity()
    log.disable_progress_bar()
    log.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        log.set_verbosity(level)
        if bar:
            log.enable_progress_bar()


def _model_dir(path: Any, *, weights: bool) -> Path:
    """``path`` as a model directory with a config (and, with ``weights``, safetensors)."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise InvalidArgumentError(f"model: expected a directory path, got {path!r}")
    p = Path(path).expanduser()
    what = ("a local Hugging Face model directory as save_pretrained writes it (config.json, "
            "model.safetensors, tokenizer files); nothing is downloaded")
    if not p.is_dir():
        raise InvalidArgumentError(f"model: {str(path)!r} is not a directory; expected {what}")
    if not (p / "config.json").is_file():
        raise CheckpointError(f"model: {p} has no config.json; expected {what}")
    if weights and not any((p / f).is_file() for f in _WEIGHTS):
        pickled = [f for f in _PICKLES if (p / f).is_file()]
        hint = (f"it holds {pickled[0]} (a pickle, which fedopt never loads); re-save it with "
                f"model.save_pretrained(dir, safe_serialization=True)" if pickled
                else "no weights file was found")
        raise CheckpointError(f"model: {p} has no model.safetensors: {hint}")
    return p


class HFCausalLM(nn.Module):
    """A causal LM as the loop sees models: ``forward(ids (B, L)) -> logits (B, L, V)``.

    Parameters
    ----------
    lm : nn.Module
        A transformers causal LM (or the PEFT model wrapping it); kept in eval mode, so dropout
        is off and training is deterministic.
    seq_len : int
        The loop's window length.
    vocab_size : int
        Rows of the input embedding (token ids must lie below it).
    """

    def __init__(self, lm: nn.Module, seq_len: int, vocab_size: int):
        super().__init__()
        self.lm = lm
        self.seq_len = int(seq_len)
        self.vocab_size = int(vocab_size)
        self.lm.eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, L, V) of token ids (B, L)."""
        return self.lm(input_ids=ids, use_cache=False).logits

    def train(self, mode: bool = True) -> HFCausalLM:
        """Set the wrapper's mode; the wrapped model stays in eval mode (dropout off)."""
        super().train(mode)
        self.lm.eval()
        return self


@dataclass(eq=False)
class HFBase:
    """A loaded base: the wrapped model (no adapters), its tokenizer and where it came from."""

    model: HFCausalLM
    tokenizer: Any
    path: str

    def describe(self) -> dict[str, Any]:
        """JSON-safe description (the validation report's ``data.model``)."""
        cfg = self.model.lm.config
        return {"path": self.path, "model_type": getattr(cfg, "model_type", None),
                "vocab_size": self.model.vocab_size, "tokenizer_size": len(self.tokenizer),
                "seq_len": self.model.seq_len,
                "parameters": sum(p.numel() for p in self.model.parameters())}


def _max_positions(config: Any) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_hf_base(path: str | Path, *, seq_len: int = HF_SEQ_LEN) -> HFBase:
    """The model and tokenizer of a local directory (float32, eval mode; module docstring).

    Raises :class:`~fedopt.errors.MissingDependencyError` without the extra, and
    :class:`~fedopt.errors.CheckpointError` (naming the directory and what is missing) when it
    cannot be loaded.
    """
    transformers, _ = require_hf()
    p = _model_dir(path, weights=True)
    with quiet(transformers):
        try:
            lm = transformers.AutoModelForCausalLM.from_pretrained(
                p, local_files_only=True, use_safetensors=True, dtype=torch.float32,
                trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"model: cannot load a causal LM from {p} "
                                  f"({type(exc).__name__}: {exc})") from None
    tok = load_tokenizer(p)
    vocab = int(lm.get_input_embeddings().num_embeddings)
    if len(tok) > vocab:
        raise CheckpointError(f"model: the tokenizer of {p} has {len(tok)} tokens but the model "
                              f"embeds only {vocab}; resize the embeddings "
                              f"(model.resize_token_embeddings) and save again")
    limit = _max_positions(lm.config)
    length = min(int(seq_len), limit) if limit else int(seq_len)
    return HFBase(HFCausalLM(lm, length, vocab), tok, str(p))


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved in the model directory ``path`` (local files only, no remote code)."""
    transformers, _ = require_hf(peft=False)
    p = _model_dir(path, weights=False)
    with quiet(transformers):
        try:
            return transformers.AutoTokenizer.from_pretrained(p, local_files_only=True,
                                                              trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"model: cannot load the tokenizer of {p} "
                                  f"({type(exc).__name__}: {exc}); save it there with "
                                  f"tokenizer.save_pretrained(dir)") from None


def _leaf_names(lm: nn.Module) -> list[str]:
    """Last name components of the model's nn.Linear / Conv1D layers (for error messages)."""
    names = [n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if _is_adaptable(m)]
    return list(dict.fromkeys(names))


def _is_adaptable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (type(module).__name__ == "Conv1D"
                                             and hasattr(module, "nf"))


def resolve_targets(lm: nn.Module, target: Any = None) -> tuple[str, ...]:
    """The target module names: ``target`` (names, or one comma-separated string), or PEFT's
    default for the model type."""
    if target is None:
        require_hf()
        from peft.utils import constants

        kind = getattr(getattr(lm, "config", None), "model_type", None)
        names = getattr(constants, "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING", {}
                        ).get(kind)
        if not names:
            raise InvalidArgumentError(
                f"target: PEFT has no default LoRA target modules for model type {kind!r}; "
                f"name them (--target), e.g. {','.join(_leaf_names(lm)[:4])}")
        return tuple(names)
    names = tuple(x.strip() for x in target.split(",")) if isinstance(target, str) \
        else tuple(target)
    if not names or not all(isinstance(t, str) and t for t in names):
        raise InvalidArgumentError(
            f"target: expected module names such as 'q_proj,v_proj', got {target!r}")
    return names


def adaptable_layers(lm: nn.Module, targets: tuple[str, ...]
                     ) -> list[tuple[str, int, int]]:
    """(name, d_out, d_in) of the layers PEFT adapts for ``targets``, in module order: a name
    matches a target when it equals it or ends with ``.target`` (PEFT's rule). A Conv1D's weight
    is d_in × d_out (its ``nx``, ``nf``). Every target must match, and only nn.Linear or Conv1D
    layers."""
    found, used = [], set()
    for name, module in lm.named_modules():
        hits = [t for t in targets if name == t or name.endswith("." + t)]
        if not hits:
            continue
        used.update(hits)
        if not _is_adaptable(module):
            raise InvalidArgumentError(
                f"target: {hits[0]!r} matches {name!r}, a {type(module).__name__}; LoRA here "
                f"adapts nn.Linear and Conv1D layers: {', '.join(_leaf_names(lm))}")
        if isinstance(module, nn.Linear):
            found.append((name, int(module.out_features), int(module.in_features)))
        else:
            found.append((name, int(module.nf), int(module.weight.shape[0])))
    missing = [t for t in targets if t not in used]
    if missing:
        raise InvalidArgumentError(
            f"target: {', '.join(repr(t) for t in missing)} matches no layer of "
            f"{type(lm).__name__}; its nn.Linear / Conv1D layers are named "
            f"{', '.join(_leaf_names(lm))}")
    return found


def apply_peft_lora(model: HFCausalLM, rank: int, *, alpha: float | None = None,
                    target: Any = None, generator: torch.Generator | None = None
                    ) -> dict[str, PeftLoRA]:
    """Wrap ``model.lm`` with PEFT LoRA at ``rank``, in place; the adapters as fedopt sees them.

    Parameters
    ----------
    model : HFCausalLM
        A wrapped model without adapters (e.g. a deep copy of :attr:`HFBase.model`).
    rank : int
        r, in 1..min(d_out, d_in) of every adapted layer.
    alpha : float, optional
        PEFT's ``lora_alpha`` (default r: scale 1).
    target : names or comma-separated str, optional
        PEFT's ``target_modules`` (default: PEFT's default for the model type).
    generator : torch.Generator, optional
        Draws every A, layer after layer (as :func:`fedopt.fl.lora.apply_lora`); B is zero.

    Returns
    -------
    dict of str to PeftLoRA
        Layer name (of the Hugging Face model) → adapter, in module order.
    """
    transformers, peft = require_hf()
    if not isinstance(model, HFCausalLM):
        raise InvalidArgumentError(
            f"model: expected an HFCausalLM (fedopt.fl.hf.load_hf_base(...).model), got "
            f"{type(model).__name__}")
    if peft_lora_modules(model):
        raise InvalidArgumentError("model: already has PEFT LoRA layers; adapt a fresh copy")
    alpha = check_alpha(alpha, rank)
    targets = resolve_targets(model.lm, target)
    found = adaptable_layers(model.lm, targets)
    for name, d_out, d_in in found:
        check_rank(rank, name, d_out, d_in)
    conv = all(not isinstance(model.lm.get_submodule(n), nn.Linear) for n, _, _ in found)
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets),
                             lora_dropout=0.0, bias="none", fan_in_fan_out=conv)
    with torch.random.fork_rng(devices=[]), quiet(transformers):  # PEFT's own init draws
        model.lm = peft.get_peft_model(model.lm, config)
    model.lm.eval()
    mods = peft_lora_modules(model)
    if list(mods) != [n for n, _, _ in found]:  # pragma: no cover - PEFT's matching rule
        raise InvalidArgumentError(f"target: PEFT adapted {list(mods)[:6]}, expected "
                                   f"{[n for n, _, _ in found][:6]}")
    with torch.no_grad():
        for m in mods.values():
            m.A.copy_(initial_A(m.rank, m.d_in, generator=generator))
            m.B.zero_()
    return mods


def model_layers(path: str | Path, target: Any = None) -> list[dict[str, Any]]:
    """The ``lora.layers`` (name, d_out, d_in, count) that LoRA on ``target`` adapts in the
    model of directory ``path``, built from its config on the meta device (no weights read)."""
    from fedopt.fl.lora import layer_groups

    transformers, _ = require_hf(peft=target is None)  # PEFT only for its default targets
    p = _model_dir(path, weights=False)
    with quiet(transformers):
        try:
            config = transformers.AutoConfig.from_pretrained(p, local_files_only=True,
                                                             trust_remote_code=False)
            with torch.device("meta"):
                lm = transformers.AutoModelForCausalLM.from_config(config)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"model: cannot build a causal LM from {p}/config.json "
                                  f"({type(exc).__name__}: {exc})") from None
    return layer_groups(adaptable_layers(lm, resolve_targets(lm, target)))


def conv1d_to_linear(lm: nn.Module) -> int:
    """Replace every transformers ``Conv1D`` inside ``lm`` by the equivalent ``nn.Linear``
    (weight W.T, so y = x W + b is unchanged), in place; the number replaced. For fedopt's own
    :func:`~fedopt.fl.lora.apply_lora` (which adapts ``nn.Linear`` layers) on GPT-2-style
    models; PEFT needs no such step."""
    swaps = [(n, m) for n, m in lm.named_modules() if _is_adaptable(m)
             and not isinstance(m, nn.Linear)]
    for name, conv in swaps:
        d_in, d_out = conv.weight.shape
        lin = nn.Linear(int(d_in), int(d_out), bias=conv.bias is not None,
                        dtype=conv.weight.dtype, device=conv.weight.device)
        with torch.no_grad():
            lin.weight.copy_(conv.weight.t())
            if conv.bias is not None:
                lin.bias.copy_(conv.bias)
        lin.weight.requires_grad_(conv.weight.requires_grad)
        parent, _, child = name.rpartition(".")
        setattr(lm.get_submodule(parent), child, lin)
    return len(swaps)
