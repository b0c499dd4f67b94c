"""Two trained reward models of character text, differentiable in a soft input (PWFF's loss).

Both are small convolutional classifiers over the vocabulary of the ``domain-shift`` testbed
(:func:`fedopt.fl.tasks.task_vocab`, V = 105), trained by :mod:`fedopt.fl.rewards_build` on
64-character windows of the corpus snapshot (:mod:`fedopt.fl.corpus`), on held-in text only:

- ``reward-prose`` rewards **natural-language prose**: its score is the probability that a window
  is running English text, trained with positives from the ``prose`` domain (the ``pydoc``
  help topics and IDLE's text files) and the e-mail bodies of the ``mail`` domain (the
  ``text/plain``, non-base64 parts of the ``test_email`` messages), and negatives from ``code``
  (Python source), ``markup`` (HTML/XML) and ``decimal`` (the ``decTest`` test cases).
  Held-out balanced accuracy 0.937 (prose 0.930, mail 0.82 = 9/11, code 0.914, markup 0.880,
  decimal 0.992).
- ``reward-structure`` rewards **structured / markup syntax**: the probability that a window is
  program source or markup, trained with positives from ``code`` and ``markup`` and negatives
  from ``prose``, the e-mail bodies and ``decimal`` (whose one-line test cases are neither
  prose nor a programming or markup language). Held-out balanced accuracy 0.928 (code 0.939,
  markup 0.949, prose 0.873, mail 0.91 = 10/11, decimal 0.996).

Message headers, base64 attachments, ``mime.types`` and ``mailcap`` are in neither class (the
scores there mean nothing in particular). Held-out accuracy is measured at threshold 0.5 on
non-overlapping 64-character windows of the held-out text (for the tasks the last 10 % of every
2048-character chunk, :mod:`fedopt.fl.tasks`; for ``prose`` the last 10 % of every document),
balanced: the mean of the accuracy on all positive and on all negative windows.

Architecture (:class:`RewardModel`): ``probs`` (B, T, V), rows probability vectors (one-hot for
real text) → ``probs @ E`` (E a (V, 16) embedding: the *expected* embedding of a soft
character, so the model is differentiable in ``probs``) → Conv1d(16, 32, 5) → ReLU →
Conv1d(32, 32, 5) → ReLU → mean over T → Linear(32, 1) → sigmoid: a score in (0, 1) per row.
Any T ≥ 1 works (the convolutions are zero-padded); the models were trained with T = 64.

How a reward enters a loss (:func:`expected_reward`): the language model's logits (B, T, V)
are turned into its predicted next-character distributions ``softmax(logits)``, and the reward
is the mean score of that *soft text*. This is the standard differentiable surrogate of scoring
sampled text: instead of sampling characters (not differentiable) the reward model scores the
model's own soft prediction of the next characters, and its gradient flows back to the logits.

The checkpoints ship in the package (``fedopt/assets/<name>.pt``, written by
``python -m fedopt.fl.rewards_build --write``); :func:`load_reward` checks each file's SHA-256
against :data:`SHIPPED_SHA256` (else :class:`~fedopt.errors.CheckpointError`) and reads it with
``torch.load(weights_only=True)``: tensors, strings and numbers only, never an arbitrary unpickle.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedopt.errors import CheckpointError, InvalidArgumentError

__all__ = ["REWARDS", "REWARD_FORMAT", "REWARD_VERSION", "SHIPPED_SHA256", "RewardModel",
           "expected_reward", "load_reward"]

#: the shipped reward models
REWARDS = ("reward-prose", "reward-structure")
#: format tag and version of a reward checkpoint
REWARD_FORMAT = "fedopt-reward"
REWARD_VERSION = 1

#: SHA-256 of the shipped checkpoints (``python -m fedopt.fl.rewards_build --write`` prints them)
SHIPPED_SHA256: dict[str, str] = {
    "reward-prose": "735f56ae50ae9f5af7a307dbe0b02322ab387bc83ea9342e4a6bd00809a8be2e",
    "reward-structure": "277a6784a34e04d9f22aa6ba05ca33879e1773a77305aaf23ee8722a21dbfda9",
}


class RewardModel(nn.Module):
    """Score (B,) in (0, 1) of soft character text (B, T, V); see the module docstring.

    Parameters
    ----------
    vocab_size : int
        V, the size of the rows of the input.
    embed_dim, channels, kernel : int
        Width of the embedding E (V, embed_dim), of both convolutions, and their (odd) kernel.
    generator : torch.Generator, optional
        Source of the initial weights (default: seed 0); the global RNG is left alone.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 16, channels: int = 32, kernel: int = 5,
                 *, generator: torch.Generator | None = None):
        super().__init__()
        for field, value, low in (("vocab_size", vocab_size, 2), ("embed_dim", embed_dim, 1),
                                  ("channels", channels, 1), ("kernel", kernel, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise InvalidArgumentError(f"{field}: expected an integer >= {low}, got {value!r}")
        if kernel % 2 == 0:
            raise InvalidArgumentError(f"kernel: expected an odd integer, got {kernel}")
        self.config = {"vocab_size": int(vocab_size), "embed_dim": int(embed_dim),
                       "channels": int(channels), "kernel": int(kernel)}
        with torch.random.fork_rng(devices=[]):  # the real init comes from `generator` below
            self.embed = nn.Parameter(torch.empty(int(vocab_size), int(embed_dim)))
            self.conv1 = nn.Conv1d(embed_dim, channels, kernel, padding=kernel // 2)
            self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
            self.head = nn.Linear(channels, 1)
        self.init_weights(torch.Generator().manual_seed(0) if generator is None else generator)

    @property
    def vocab_size(self) -> int:
        return self.config["vocab_size"]

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """Re-draw every parameter from ``generator``: E ~ N(0, 1); weights and biases of the
        convolutions and the head ~ U(±1/√fan_in) (PyTorch's default bounds)."""
        if not isinstance(generator, torch.Generator):
            raise InvalidArgumentError(
                f"generator: expected a torch.Generator, got {type(generator).__name__}")
        self.embed.copy_(torch.randn(self.embed.shape, generator=generator))
        for mod in (self.conv1, self.conv2, self.head):
            fan_in = mod.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            for p in (mod.weight, mod.bias):
                p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * bound)

    def logit(self, probs: torch.Tensor) -> torch.Tensor:
        """The pre-sigmoid score (B,) of ``probs`` (B, T, V)."""
        if not isinstance(probs, torch.Tensor) or probs.ndim != 3 or (
                probs.shape[-1] != self.vocab_size) or probs.shape[1] < 1:
            got = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
            raise InvalidArgumentError(
                f"probs: expected a tensor of shape (B, T >= 1, {self.vocab_size}), got {got}")
        x = (probs.to(self.embed.dtype) @ self.embed).transpose(1, 2)  # (B, embed_dim, T)
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean(dim=2)).squeeze(-1)

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        """Score (B,) in (0, 1) of ``probs`` (B, T, V), rows probability vectors."""
        return torch.sigmoid(self.logit(probs))

    def one_hot(self, ids: np.ndarray | torch.Tensor) -> torch.Tensor:
        """One-hot rows (B, T, V) of character ids (B, T), in the dtype of the weights."""
        ids = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids)
        if ids.ndim != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool or (
                ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size)):
            raise InvalidArgumentError(
                f"ids: expected integers in [0, {self.vocab_size}) of shape (B, T), got dtype "
                f"{ids.dtype} shape {tuple(ids.shape)}"
                + (f" range [{int(ids.min())}, {int(ids.max())}]" if ids.numel() else ""))
        ids = ids.to(device=self.embed.device, dtype=torch.int64)
        return nn.functional.one_hot(ids, self.vocab_size).to(self.embed.dtype)

    def score_ids(self, ids: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Score (B,) of real text: the character ids (B, T) one-hot encoded, then scored."""
        return self(self.one_hot(ids))


def expected_reward(model: RewardModel, logits: torch.Tensor) -> torch.Tensor:
    """The reward of a language model's predicted next-character distributions (a scalar).

    ``model(softmax(logits, -1)).mean()``: the mean score of the model's own soft prediction of
    the next characters, differentiable w.r.t. ``logits`` (B, T, V) (module docstring).
    """
    if not isinstance(model, RewardModel):
        raise InvalidArgumentError(f"model: expected a RewardModel, got {type(model).__name__}")
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        raise InvalidArgumentError(
            f"logits: expected a floating-point tensor (B, T, {model.vocab_size}), got "
            f"{getattr(logits, 'dtype', type(logits).__name__)}")
    return model(torch.softmax(logits, dim=-1)).mean()


def _check_name(name: Any) -> str:
    if name not in REWARDS:
        raise InvalidArgumentError(f"reward: got {name!r}, must be one of {', '.join(REWARDS)}")
    return name


def _from_blob(blob: Any, where: str, name: str) -> RewardModel:
    """The model (eval mode, frozen) of a checkpoint dict read from ``where``."""
    if not isinstance(blob, dict) or blob.get("format") != REWARD_FORMAT or (
            blob.get("version") != REWARD_VERSION):
        tag = (blob.get("format"), blob.get("version")) if isinstance(blob, dict) else None
        raise CheckpointError(f"{where}: not a {REWARD_FORMAT} checkpoint of version "
                              f"{REWARD_VERSION} (format, version = {tag!r})")
    if blob.get("name") != name:
        raise CheckpointError(f"{where}: holds reward {blob.get('name')!r}, expected {name!r}")
    try:
        model = RewardModel(**json.loads(blob["config_json"]))
        model.load_state_dict(blob["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, InvalidArgumentError) as exc:
        raise CheckpointError(f"{where}: inconsistent checkpoint ({exc})") from exc
    if blob.get("vocab_size") != model.vocab_size:
        raise CheckpointError(f"{where}: vocab_size {blob.get('vocab_size')!r} differs from the "
                              f"model's {model.vocab_size}")
    model.eval()
    model.requires_grad_(False)
    return model


def _load_verified(path: str | os.PathLike, name: str) -> RewardModel:
    """Read the checkpoint file of reward ``name`` at ``path``: its SHA-256 must equal
    ``SHIPPED_SHA256[name]``; the verified bytes are read with ``weights_only=True``."""
    name = _check_name(name)
    where = str(path)
    hint = "reinstall fedopt, or rebuild it with `python -m fedopt.fl.rewards_build --write`"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"reward checkpoint {where!r}: cannot read it ({exc}); {hint}"
                              ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHIPPED_SHA256[name]:
        raise CheckpointError(
            f"reward checkpoint {where!r}: SHA-256 {digest[:16]}… does not match the expected "
            f"{SHIPPED_SHA256[name][:16]}… of {name} (corrupt or replaced); {hint}")
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # disallowed global, corrupt zip, ...
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"reward checkpoint {where!r} is not a weights-only torch file "
                              f"({type(exc).__name__}: {first}); {hint}") from exc
    return _from_blob(blob, f"reward checkpoint {where!r}", name)


def load_reward(name: str) -> RewardModel:
    """The shipped reward model ``name`` (:data:`REWARDS`), in eval mode, parameters frozen.

    Raises
    ------
    InvalidArgumentError
        ``name`` is not one of :data:`REWARDS`.
    CheckpointError
        The shipped file is missing, its SHA-256 is not :data:`SHIPPED_SHA256` ``[name]``, or it
        is not a weights-only reward checkpoint; the message names the path.
    """
    name = _check_name(name)
    res = resources.files("fedopt") / "assets" / f"{name}.pt"
    if not res.is_file():
        raise CheckpointError(f"reward checkpoint fedopt/assets/{name}.pt is missing; reinstall "
                              f"fedopt, or build it with `python -m fedopt.fl.rewards_build "
                              f"--write`")
    with resources.as_file(res) as path:
        return _load_verified(path, name)
