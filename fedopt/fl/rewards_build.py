"""Deterministic training of the shipped reward models (:mod:`fedopt.fl.rewards`).

``python -m fedopt.fl.rewards_build [--write]`` trains both models from :data:`RECIPES`, prints
their held-out accuracies and, with ``--write``, writes ``fedopt/assets/<name>.pt`` and prints
the SHA-256 to put in :data:`fedopt.fl.rewards.SHIPPED_SHA256`.

Data (held-in text only). A *source* is a part of the corpus snapshot: ``prose``, ``code``,
``markup``, ``decimal`` (whole domains) or ``mail`` (the ``text/plain``, non-base64 parts of
the e-mail messages of the ``mail`` domain, located in the original text). Every document is
split as the federated loop splits it: task documents (:data:`fedopt.fl.tasks.TASKS`) into
2048-character chunks, each with its last 10 % held out (:mod:`fedopt.fl.tasks`); ``prose``
documents with their last 10 % held out (:func:`fedopt.fl.tasks.base_domain_data`). Training
windows lie entirely inside held-in text, evaluation windows entirely inside held-out text.

Training: AdamW (linear warm-up over the first 5 % of the steps, then cosine decay to 0) on the
binary cross-entropy of the logit; every batch holds ``batch_size / 2`` positive and as many
negative windows, the source of each drawn among its class's sources with probability ∝ (its
number of windows) ** ``source_power`` (0.5: the small ``mail`` source is neither drowned nor
over-sampled), its start uniformly among that source's valid starts (numpy
``default_rng(seed)``); the initial weights come from ``torch.Generator().manual_seed(init_seed)``.
Same recipe, same weights (and the same checkpoint bytes) on the same torch build; each model
trains in about 30 s on one CPU thread.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import functools
import hashlib
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedopt.errors import InvalidArgumentError
from fedopt.fl.corpus import BASE_DOMAIN, load_snapshot
from fedopt.fl.rewards import REWARD_FORMAT, REWARD_VERSION, REWARDS, RewardModel
from fedopt.fl.tasks import _chunks, _cut, task_vocab
from fedopt.io import atomic_write_bytes

__all__ = ["SOURCES", "RECIPES", "source_segments", "windows", "heldout_accuracy",
           "build_reward", "save_reward"]

#: the parts of the snapshot the rewards are trained on (module docstring)
SOURCES = ("prose", "mail", "code", "markup", "decimal")

_COMMON: dict[str, Any] = {
    "arch": {"embed_dim": 16, "channels": 32, "kernel": 5}, "window": 64, "steps": 3000,
    "batch_size": 64, "lr": 1e-2, "schedule": "warmup-5%-cosine", "weight_decay": 0.01,
    "seed": 0, "init_seed": 0, "heldout_fraction": 0.1, "chunk_chars": 2048,
    "source_power": 0.5,
}

#: reward name → everything that determines its weights
RECIPES: dict[str, dict[str, Any]] = {
    "reward-prose": {**_COMMON, "positive": ["prose", "mail"],
                     "negative": ["code", "markup", "decimal"]},
    "reward-structure": {**_COMMON, "positive": ["code", "markup"],
                         "negative": ["prose", "mail", "decimal"]},
}


def _mail_regions(text: str) -> list[tuple[int, int]]:
    """(start, end) of the ``text/plain``, non-base64 parts of one e-mail message."""
    msg = email.message_from_string(text, policy=email.policy.compat32)
    out, pos = [], 0
    for part in msg.walk():
        if part.is_multipart() or part.get_content_type() != "text/plain":
            continue
        if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
            continue
        payload = part.get_payload(decode=False)
        if not isinstance(payload, str) or not payload.strip():
            continue
        start = text.find(payload, pos)
        if start >= 0:
            out.append((start, start + len(payload)))
            pos = start + len(payload)
    return out


def _heldout_mask(domain: str, text: str, heldout_fraction: float, chunk_chars: int
                  ) -> np.ndarray:
    """Boolean mask of the characters of one document the federated loop holds out."""
    mask = np.zeros(len(text), dtype=bool)
    if domain == BASE_DOMAIN:
        mask[_cut(text, heldout_fraction):] = True
        return mask
    start = 0
    for _, chunk in _chunks({"doc": text}, chunk_chars, None):
        mask[start + _cut(chunk, heldout_fraction):start + len(chunk)] = True
        start += len(chunk)
    assert start == len(text), "the chunks cover every document"
    return mask


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of the maximal runs of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


@functools.lru_cache(maxsize=32)
def _segments(source: str, heldout: bool, heldout_fraction: float, chunk_chars: int
              ) -> tuple[np.ndarray, ...]:
    if source not in SOURCES:
        raise InvalidArgumentError(f"source: got {source!r}, must be one of {', '.join(SOURCES)}")
    domains = load_snapshot()
    vocab = task_vocab(domains)
    out = []
    for name in sorted(domains[source]):
        text = domains[source][name]
        if source == "mail" and "/msg_" not in name:
            continue  # mime.types, mailcap: tables, not messages
        keep = np.full(len(text), source != "mail")
        for a, b in _mail_regions(text) if source == "mail" else ():
            keep[a:b] = True
        held = _heldout_mask(source, text, heldout_fraction, chunk_chars)
        for a, b in _runs(keep & (held if heldout else ~held)):
            out.append(vocab.encode(text[a:b]))
    return tuple(out)


def source_segments(source: str, *, heldout: bool, heldout_fraction: float = 0.1,
                    chunk_chars: int = 2048) -> list[np.ndarray]:
    """The contiguous id arrays of ``source``'s held-in (``heldout=False``) or held-out text.

    Parameters
    ----------
    source : str
        One of :data:`SOURCES`.
    heldout : bool
        Held-out text (the last ``heldout_fraction`` of every chunk, or of every ``prose``
        document) or the rest.
    heldout_fraction, chunk_chars : float, int
        The federated loop's split (:func:`fedopt.fl.tasks.make_task_data`).
    """
    return [s.copy() for s in _segments(source, bool(heldout), float(heldout_fraction),
                                        int(chunk_chars))]


def windows(segments: list[np.ndarray], window: int) -> np.ndarray:
    """Non-overlapping ``window``-character windows (N, window) of every segment, in order."""
    rows = [seg[i:i + window] for seg in segments for i in range(0, len(seg) - window + 1, window)]
    return np.stack(rows) if rows else np.zeros((0, window), dtype=np.int64)


class _Pool:
    """Every held-in segment of one source, concatenated, and the starts of valid windows."""

    def __init__(self, segments: list[np.ndarray], window: int):
        self.ids = np.concatenate(segments)
        offsets = np.cumsum([0] + [len(s) for s in segments])
        spans = zip(offsets[:-1], offsets[1:], strict=True)
        self.starts = np.concatenate([np.arange(a, b - window + 1) for a, b in spans
                                      if b - a >= window])
        self.window = window

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        picks = self.starts[rng.integers(0, len(self.starts), size=n)]
        return self.ids[picks[:, None] + np.arange(self.window)[None, :]]


def _batch(rng: np.random.Generator, pos: list[_Pool], neg: list[_Pool], batch_size: int,
           power: float) -> tuple[np.ndarray, np.ndarray]:
    """(ids (batch_size, window), labels) with half positives, half negatives; the source of a
    window is drawn with probability ∝ (its number of valid starts) ** ``power``."""
    rows, labels = [], []
    for pools, label in ((pos, 1.0), (neg, 0.0)):
        sizes = np.array([len(p.starts) for p in pools], dtype=np.float64) ** power
        which = rng.choice(len(pools), size=batch_size // 2, p=sizes / sizes.sum())
        for k, pool in enumerate(pools):
            n = int(np.sum(which == k))
            if n:
                rows.append(pool.draw(rng, n))
                labels.append(np.full(n, label))
    return np.concatenate(rows), np.concatenate(labels)


def _check_recipe(recipe: dict[str, Any]) -> None:
    for key in ("positive", "negative"):
        bad = [s for s in recipe.get(key, []) if s not in SOURCES]
        if not recipe.get(key) or bad:
            raise InvalidArgumentError(f"recipe[{key!r}]: expected a non-empty list of sources "
                                       f"from {list(SOURCES)}, got {recipe.get(key)!r}")
    for key in ("steps", "batch_size", "window"):
        value = recipe.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise InvalidArgumentError(f"recipe[{key!r}]: expected an integer >= 2, got {value!r}")


def heldout_accuracy(model: RewardModel, recipe: dict[str, Any]) -> dict[str, Any]:
    """Accuracy at threshold 0.5 on the held-out windows of ``recipe``'s sources.

    Returns ``{"balanced": ..., "per_source": {source: accuracy}, "windows": {source: N}}``;
    ``balanced`` is the mean of the accuracy on all positive and on all negative windows.
    """
    per, counts, hits = {}, {}, {}
    split = {"heldout_fraction": recipe["heldout_fraction"], "chunk_chars": recipe["chunk_chars"]}
    for label, key in ((True, "positive"), (False, "negative")):
        for src in recipe[key]:
            ids = windows(source_segments(src, heldout=True, **split), recipe["window"])
            with torch.no_grad():
                ok = ((model.score_ids(ids) > 0.5) == label).numpy() if len(ids) else np.zeros(0)
            per[src], counts[src] = float(ok.mean()) if len(ok) else float("nan"), len(ok)
            hits.setdefault(key, []).append(ok)
    cls = [float(np.concatenate(hits[k]).mean()) for k in ("positive", "negative")]
    return {"balanced": float(np.mean(cls)), "per_source": per, "windows": counts}


def _train(model: RewardModel, pos: list[_Pool], neg: list[_Pool], rec: dict[str, Any]
           ) -> list[float]:
    """Train ``model`` in place (module docstring); returns the loss of every step."""
    opt = torch.optim.AdamW(model.parameters(), lr=rec["lr"], weight_decay=rec["weight_decay"])
    steps = int(rec["steps"])
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine decay to 0
        opt, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * t / steps)))
    rng = np.random.default_rng(int(rec["seed"]))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses = []
    model.train()
    for _ in range(steps):
        ids, labels = _batch(rng, pos, neg, int(rec["batch_size"]), float(rec["source_power"]))
        target = torch.as_tensor(labels, dtype=torch.float32)
        loss = loss_fn(model.logit(model.one_hot(ids)), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


def build_reward(name: str, recipe: dict[str, Any] | None = None
                 ) -> tuple[RewardModel, dict[str, Any]]:
    """Train reward ``name`` following ``recipe`` (default ``RECIPES[name]``).

    Returns
    -------
    (RewardModel, dict)
        The model (eval mode) and its metrics: held-out accuracies (:func:`heldout_accuracy`)
        and the mean training loss of the last 50 steps.
    """
    if name not in REWARDS:
        raise InvalidArgumentError(f"reward: got {name!r}, must be one of {', '.join(REWARDS)}")
    rec = dict(RECIPES[name] if recipe is None else recipe)
    _check_recipe(rec)
    split = {"heldout_fraction": rec["heldout_fraction"], "chunk_chars": rec["chunk_chars"]}
    pos, neg = ([_Pool(source_segments(s, heldout=False, **split), rec["window"])
                 for s in rec[key]] for key in ("positive", "negative"))
    model = RewardModel(task_vocab().size, **rec["arch"],
                        generator=torch.Generator().manual_seed(int(rec["init_seed"])))
    losses = _train(model, pos, neg, rec)
    model.eval()
    metrics = {"heldout": heldout_accuracy(model, rec),
               "final_train_loss": float(np.mean(losses[-50:]))}
    return model, metrics


def save_reward(model: RewardModel, name: str, recipe: dict[str, Any], metrics: dict[str, Any],
                path: str | Path) -> str:
    """Write a weights-only checkpoint of ``model`` to ``path``; returns its SHA-256."""
    state = {k: v.detach().to("cpu", torch.float32).clone().contiguous()
             for k, v in model.state_dict().items()}
    blob = {"format": REWARD_FORMAT, "version": REWARD_VERSION, "name": name,
            "vocab_size": model.vocab_size, "config_json": json.dumps(model.config),
            "vocab_json": json.dumps(task_vocab().to_dict()),
            "recipe_json": json.dumps(recipe, sort_keys=True),
            "metrics_json": json.dumps(metrics, sort_keys=True), "torch": str(torch.__version__),
            "state_dict": state}
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    """``python -m fedopt.fl.rewards_build [--write]``: train both; ``--write`` ships them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="write fedopt/assets/<name>.pt (the shipped checkpoints)")
    args = parser.parse_args(argv)
    for name in REWARDS:
        t0 = time.perf_counter()
        model, metrics = build_reward(name)
        print(f"{name}: built in {time.perf_counter() - t0:.1f} s; "
              f"{json.dumps(metrics, sort_keys=True)}")
        if args.write:
            out = Path(__file__).resolve().parents[1] / "assets" / f"{name}.pt"
            digest = save_reward(model, name, RECIPES[name], metrics, out)
            print(f"wrote {out} ({out.stat().st_size} bytes, sha256 {digest}); put it in "
                  "SHIPPED_SHA256")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
