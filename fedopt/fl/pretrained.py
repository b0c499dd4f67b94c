"""The pre-trained base models of the federated loop (spec 05 §1): built deterministically, shipped.

Two bases, one per testbed (:mod:`fedopt.fl.testbed`), each a
:class:`~fedopt.fl.charmodel.CharTransformer` pre-trained with
:func:`~fedopt.fl.charmodel.pretrain` on held-in text only:

- ``char-base`` (:data:`RECIPE`): the ``pydoc-topics`` testbed of the ``tiny-char`` preset, on
  the *training* part of every ``pydoc_data`` topic (the last ``HELDOUT_FRACTION`` of each topic
  is never seen, so the loop's held-out sets stay held out whatever the client split);
- ``prose-base`` (:data:`PROSE_RECIPE`): the ``domain-shift`` testbed, on the training part of
  the snapshot's ``prose`` domain only, so that the clients' tasks (code, markup, decimal test
  cases, e-mail) are text it never saw.

A recipe fixes every choice: same recipe, same weights on the same torch build. Where the weights
come from, in order:

1. the checkpoint shipped in the package (``fedopt/assets/<name>.pt``), written by
   ``python -m fedopt.fl.pretrained --write [--base NAME]``; its SHA-256 must equal
   :data:`SHIPPED_SHA256` (else :class:`~fedopt.errors.CheckpointError`) and its recorded recipe
   the current one (else it is skipped);
2. the user cache (``$FEDOPT_CACHE_DIR`` or ``~/.cache/fedopt``), under a name derived from the
   recipe's digest;
3. otherwise the model is pre-trained in process (``char-base`` 15–25 s, ``prose-base`` about
   70 s on a 2-core CPU) and cached.

Every file is read with ``torch.load(weights_only=True)``
(:func:`fedopt.fl.charmodel.load_checkpoint`); a corrupt cache file is re-built, a corrupt shipped
file raises :class:`~fedopt.errors.CheckpointError`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedopt.errors import CheckpointError, InvalidArgumentError
from fedopt.fl.charmodel import (
    CharTransformer,
    Checkpoint,
    load_checkpoint,
    pretrain,
    save_checkpoint,
)
from fedopt.fl.data import make_federated_data

__all__ = ["BASE_CONFIG", "BASES", "HELDOUT_FRACTION", "PROSE_RECIPE", "RECIPE", "SHIPPED_SHA256",
           "base_model", "build_base", "recipe_digest"]

#: held-out suffix of every topic (shared with the loop's client split)
HELDOUT_FRACTION = 0.1

#: architecture of the base model (vocab_size comes from the corpus)
BASE_CONFIG: dict[str, Any] = {"d_model": 64, "n_heads": 4, "n_layers": 2, "seq_len": 64}

#: everything that determines the base weights
RECIPE: dict[str, Any] = {
    "config": BASE_CONFIG, "heldout_fraction": HELDOUT_FRACTION, "steps": 600,
    "batch_size": 32, "lr": 3e-3, "seed": 0, "init_seed": 0,
}

#: the ``domain-shift`` base: the same architecture (so both testbeds adapt the same LoRA
#: layers), pre-trained longer on the ``prose`` domain of the corpus snapshot
PROSE_RECIPE: dict[str, Any] = {
    "config": BASE_CONFIG, "data": "snapshot-prose", "heldout_fraction": HELDOUT_FRACTION,
    "steps": 2000, "batch_size": 32, "lr": 3e-3, "seed": 0, "init_seed": 0,
}

#: base name → recipe
BASES: dict[str, dict[str, Any]] = {"char-base": RECIPE, "prose-base": PROSE_RECIPE}

#: SHA-256 of the shipped checkpoints (``python -m fedopt.fl.pretrained`` prints it)
SHIPPED_SHA256: dict[str, str] = {
    "char-base": "b8f167991c98a5a9dc58eb9996c1d74937507f4e1b42354ce1fdc1397b348c7c",
    "prose-base": "42e1cb7198115337e59b32a33dc9c4796b26c5a591b149affbebc99af009234e",
}


def _recipe(name: str) -> dict[str, Any]:
    if name not in BASES:
        raise InvalidArgumentError(f"base: got {name!r}, must be one of {', '.join(BASES)}")
    return BASES[name]


def recipe_digest(recipe: dict[str, Any] | None = None) -> str:
    """Short SHA-256 of the recipe (JSON, sorted keys) plus the torch major.minor version."""
    rec = RECIPE if recipe is None else recipe
    text = json.dumps(rec, sort_keys=True) + "|torch" + ".".join(torch.__version__.split(".")[:2])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _training_text(rec: dict[str, Any]) -> tuple[Any, np.ndarray]:
    """(vocab, training ids) of a recipe's pre-training data."""
    if rec.get("data") == "snapshot-prose":
        from fedopt.fl.tasks import base_domain_data

        vocab, train, _ = base_domain_data(rec["heldout_fraction"])
        return vocab, train
    fed = make_federated_data(1, heldout_fraction=rec["heldout_fraction"], seed=0)
    return fed.vocab, np.concatenate([c.train for c in fed.clients])


def build_base(recipe: dict[str, Any] | None = None) -> Checkpoint:
    """Pre-train a base model from scratch following ``recipe`` (default :data:`RECIPE`)."""
    rec = dict(RECIPE if recipe is None else recipe)
    vocab, data = _training_text(rec)
    model = CharTransformer(vocab.size, **rec["config"],
                            generator=torch.Generator().manual_seed(int(rec["init_seed"])))
    losses = pretrain(model, data, steps=rec["steps"], batch_size=rec["batch_size"],
                      lr=rec["lr"], seed=rec["seed"])
    model.eval()
    meta = {"recipe": rec, "recipe_digest": recipe_digest(rec),
            "final_train_loss": float(np.mean(losses[-20:])), "torch": torch.__version__}
    return Checkpoint(model=model, vocab=vocab, metadata=meta)


def _cache_dir() -> Path:
    env = os.environ.get("FEDOPT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "fedopt"


def _shipped(name: str) -> Checkpoint | None:
    res = resources.files("fedopt") / "assets" / f"{name}.pt"
    if not res.is_file():
        return None
    digest = hashlib.sha256(res.read_bytes()).hexdigest()
    if digest != SHIPPED_SHA256[name]:
        raise CheckpointError(
            f"fedopt/assets/{name}.pt: SHA-256 {digest[:16]}… does not match the expected "
            f"{SHIPPED_SHA256[name][:16]}… (corrupt or replaced); reinstall fedopt, or rebuild it "
            f"with `python -m fedopt.fl.pretrained --write --base {name}`")
    with resources.as_file(res) as path:
        ckpt = load_checkpoint(path)
    return ckpt if ckpt.metadata.get("recipe") == json.loads(json.dumps(_recipe(name))) else None


def base_model(name: str = "char-base", *, cache: bool = True) -> Checkpoint:
    """The base model ``name`` (:data:`BASES`; eval mode) and its vocabulary: shipped, cached,
    or pre-trained now."""
    recipe = _recipe(name)
    ckpt = _shipped(name)
    if ckpt is not None:
        return ckpt
    path = _cache_dir() / f"{name}-{recipe_digest(recipe)}.pt"
    if cache and path.is_file():
        try:
            return load_checkpoint(path)
        except CheckpointError:
            pass  # a corrupt cache entry is rebuilt below
    ckpt = build_base(recipe)
    if cache:
        try:
            save_checkpoint(ckpt.model, ckpt.vocab, path, metadata=ckpt.metadata)
        except OSError:
            pass  # an unwritable cache only costs the next run the pre-training again
    return ckpt


def main(argv: list[str] | None = None) -> int:
    """``python -m fedopt.fl.pretrained [--write]``: build the base; ``--write`` ships it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", choices=sorted(BASES), default="char-base")
    parser.add_argument("--write", action="store_true",
                        help="write fedopt/assets/<base>.pt (the shipped checkpoint)")
    args = parser.parse_args(argv)
    ckpt = build_base(BASES[args.base])
    print(json.dumps(ckpt.metadata, indent=2))
    if args.write:
        out = Path(__file__).resolve().parents[1] / "assets" / f"{args.base}.pt"
        save_checkpoint(ckpt.model, ckpt.vocab, out, metadata=ckpt.metadata)
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        print(f"wrote {out} ({out.stat().st_size} bytes, sha256 {digest}); put it in "
              "SHIPPED_SHA256")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
