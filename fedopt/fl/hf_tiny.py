"""A tiny random GPT-2 and its tokenizer, written to a directory: a Hugging Face model to try
``fedopt validate --model`` and ``fedopt instance layers --model`` with, built here, nothing
downloaded (the tests and ``benchmarks/hf_round.py`` use it).

The tokenizer is a byte-level BPE (GPT-2's scheme: every byte is a token, so no text is unknown)
trained on a few built-in strings (or ``texts``), with one special token ``<|endoftext|>``;
the model is ``GPT2LMHeadModel(GPT2Config(...))`` with random weights drawn from ``seed`` (torch's
global generator is restored afterwards). Both are saved with ``save_pretrained``
(``model.safetensors``, ``config.json``, ``tokenizer.json``).

Run:  python -m fedopt.fl.hf_tiny DIR [--layers 2] [--width 32] [--seed 0]

Needs the ``fedopt[hf]`` extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from fedopt.errors import InvalidArgumentError
from fedopt.fl.hf import quiet, require_hf

__all__ = ["TINY_TEXTS", "EOS", "save_tiny_gpt2"]

EOS = "<|endoftext|>"
#: what the default tokenizer is trained on: a little prose, code, markup, numbers and mail
TINY_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog. A federated round sends the update.",
    "def update(theta, grad, lr):\n    return [t - lr * g for t, g in zip(theta, grad)]\n",
    "<html><body><p class=\"note\">Hello, <b>world</b>!</p></body></html>",
    "assert round(3.14159, 2) == 3.14 and 1e-3 < 0.5 and 12345 + 678 == 13023",
    "From: alice@example.org\nTo: bob@example.org\nSubject: Re: the meeting\n\nSee you then.",
)


def _tokenizer(texts: Sequence[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    transformers, _ = require_hf()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts) * 4, trainer=trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS,
                                                bos_token=EOS, unk_token=EOS)


def save_tiny_gpt2(path: str | Path, *, n_layer: int = 2, n_embd: int = 32, n_head: int = 2,
                   n_positions: int = 128, vocab_size: int = 320, seed: int = 0,
                   texts: Sequence[str] = TINY_TEXTS) -> Path:
    """Write a random GPT-2 (``n_layer`` blocks of width ``n_embd``) and a byte-level BPE
    tokenizer of about ``vocab_size`` tokens to the directory ``path`` (new or empty; an
    existing model is never overwritten). Returns the directory."""
    transformers, _ = require_hf()
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidArgumentError(f"path: {out} exists and is not an empty directory; choose "
                                   f"a new directory (nothing is overwritten)")
    if vocab_size < 257:
        raise InvalidArgumentError(f"vocab_size: got {vocab_size}, must be >= 257 (256 bytes "
                                   f"and {EOS})")
    tok = _tokenizer(texts, vocab_size)
    eos = tok.convert_tokens_to_ids(EOS)
    config = transformers.GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=n_embd,
                                     n_layer=n_layer, n_head=n_head, bos_token_id=eos,
                                     eos_token_id=eos)
    with torch.random.fork_rng(devices=[]), quiet(transformers):
        torch.manual_seed(int(seed))
        model = transformers.GPT2LMHeadModel(config)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tok.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m fedopt.fl.hf_tiny DIR``: write a tiny GPT-2 there."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = save_tiny_gpt2(args.dir, n_layer=args.layers, n_embd=args.width, seed=args.seed)
    print(f"wrote {out} (GPT-2, {args.layers} layers, width {args.width}, seed {args.seed})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
