"""The pre-trained base model of the federated loop (spec 05 §1): built deterministically, shipped.

The base is a :class:`~fedopt.fl.charmodel.CharTransformer` (``BASE_CONFIG``) pre-trained with
:func:`~fedopt.fl.charmodel.pretrain` on the *training* part of every ``pydoc_data`` topic (the last
``HELDOUT_FRACTION`` of each topic is never seen, so the loop's held-out sets stay held out
whatever the client split). The recipe (``RECIPE``) fixes every choice: same recipe, same
weights on the same torch build.

Where the weights come from, in order:

1. the checkpoint shipped in the package (``fedopt/assets/char-base.pt``), written by
   ``python -m fedopt.fl.pretrained --write`` — used when its recorded recipe equals ``RECIPE``;
2. the user cache (``$FEDOPT_CACHE_DIR`` or ``~/.cache/fedopt``), under a name derived from the
   recipe's digest;
3. otherwise the model is pre-trained in process (about 15–25 s on a 2-core CPU) and cached.

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

from fedopt.errors import CheckpointError
from fedopt.fl.charmodel import (
    CharTransformer,
    Checkpoint,
    load_checkpoint,
    pretrain,
    save_checkpoint,
)
from fedopt.fl.data import make_federated_data

__all__ = ["BASE_CONFIG", "HELDOUT_FRACTION", "RECIPE", "base_model", "build_base", "recipe_digest"]

#: held-out suffix of every topic (shared with the loop's client split)
HELDOUT_FRACTION = 0.1

#: architecture of the base model (vocab_size comes from the corpus)
BASE_CONFIG: dict[str, Any] = {"d_model": 64, "n_heads": 4, "n_layers": 2, "seq_len": 64}

#: everything that determines the base weights
RECIPE: dict[str, Any] = {
    "config": BASE_CONFIG, "heldout_fraction": HELDOUT_FRACTION, "steps": 600,
    "batch_size": 32, "lr": 3e-3, "seed": 0, "init_seed": 0,
}

_ASSET = "char-base.pt"


def recipe_digest(recipe: dict[str, Any] | None = None) -> str:
    """Short SHA-256 of the recipe (JSON, sorted keys) plus the torch major.minor version."""
    rec = RECIPE if recipe is None else recipe
    text = json.dumps(rec, sort_keys=True) + "|torch" + ".".join(torch.__version__.split(".")[:2])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_base(recipe: dict[str, Any] | None = None) -> Checkpoint:
    """Pre-train the base model from scratch following ``recipe`` (default :data:`RECIPE`)."""
    rec = dict(RECIPE if recipe is None else recipe)
    fed = make_federated_data(1, heldout_fraction=rec["heldout_fraction"], seed=0)
    data = np.concatenate([c.train for c in fed.clients])
    model = CharTransformer(fed.vocab.size, **rec["config"],
                            generator=torch.Generator().manual_seed(int(rec["init_seed"])))
    losses = pretrain(model, data, steps=rec["steps"], batch_size=rec["batch_size"],
                      lr=rec["lr"], seed=rec["seed"])
    model.eval()
    meta = {"recipe": rec, "recipe_digest": recipe_digest(rec),
            "final_train_loss": float(np.mean(losses[-20:])), "torch": torch.__version__}
    return Checkpoint(model=model, vocab=fed.vocab, metadata=meta)


def _cache_dir() -> Path:
    env = os.environ.get("FEDOPT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "fedopt"


def _shipped() -> Checkpoint | None:
    res = resources.files("fedopt") / "assets" / _ASSET
    if not res.is_file():
        return None
    with resources.as_file(res) as path:
        ckpt = load_checkpoint(path)
    return ckpt if ckpt.metadata.get("recipe") == json.loads(json.dumps(RECIPE)) else None


def base_model(*, cache: bool = True) -> Checkpoint:
    """The base model (eval mode) and its vocabulary: shipped, cached, or pre-trained now."""
    ckpt = _shipped()
    if ckpt is not None:
        return ckpt
    path = _cache_dir() / f"char-base-{recipe_digest()}.pt"
    if cache and path.is_file():
        try:
            return load_checkpoint(path)
        except CheckpointError:
            pass  # a corrupt cache entry is rebuilt below
    ckpt = build_base()
    if cache:
        try:
            save_checkpoint(ckpt.model, ckpt.vocab, path, metadata=ckpt.metadata)
        except OSError:
            pass  # an unwritable cache only costs the next run the pre-training again
    return ckpt


def main(argv: list[str] | None = None) -> int:
    """``python -m fedopt.fl.pretrained [--write]``: build the base; ``--write`` ships it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help=f"write fedopt/assets/{_ASSET} (the shipped checkpoint)")
    args = parser.parse_args(argv)
    ckpt = build_base()
    print(json.dumps(ckpt.metadata, indent=2))
    if args.write:
        out = Path(__file__).resolve().parents[1] / "assets" / _ASSET
        save_checkpoint(ckpt.model, ckpt.vocab, out, metadata=ckpt.metadata)
        print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
