"""The files of a federated run: its digest, checkpoint, per-round log and summary (spec 05 §6).

Output directory (optional): ``rounds.jsonl`` (one JSON record per round, rewritten atomically
after each round), ``checkpoint.npz`` and, at the end, ``summary.json``.

The checkpoint is an ``.npz`` read with ``allow_pickle=False``: a format tag and version, θ, the
next round index, the log so far (as JSON), the run's configuration digest and the aggregator's
own state (keys ``agg.<name>``). The digest (:func:`run_digest`) covers the settings, the weights
φ, the payload layout, the frozen base weights, the data split, the aggregator's description and
the compute time, so a checkpoint can only resume the run that wrote it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch import nn

from fedopt.errors import CheckpointError
from fedopt.io import atomic_savez, atomic_write_text, ensure_dir

__all__ = ["CHECKPOINT_NAME", "LOG_NAME", "SUMMARY_NAME", "RunState", "RunFiles", "run_digest",
           "save_run_checkpoint", "load_run_checkpoint", "check_out_dir", "write_log",
           "is_stateful"]

CHECKPOINT_NAME = "checkpoint.npz"
LOG_NAME = "rounds.jsonl"
SUMMARY_NAME = "summary.json"
_CKPT_FORMAT = "fedopt-fl-run"
_CKPT_VERSION = 1
_HINT = "delete it (or the output directory) to start the run afresh"


def _base_digest(model: nn.Module, mods: Mapping[str, Any]) -> str:
    """SHA-256 of the frozen parameters and buffers and of the adapter layout."""
    h = hashlib.sha256()
    lora_ids = {id(p) for m in mods.values() for p in (m.A, m.B)}
    for name, p in [*model.named_parameters(), *model.named_buffers()]:
        if id(p) in lora_ids:
            continue
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    for name, m in mods.items():
        h.update(f"{name}:{m.rank}:{m.d_out}:{m.d_in}:{m.alpha!r}".encode())
    return h.hexdigest()[:16]


def _config_digest(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16]


def run_digest(*, config: Mapping[str, Any], phi: np.ndarray, q: int, ranks: list[int],
               model: nn.Module, mods: Mapping[str, Any], data_summary: Mapping[str, Any],
               aggregator: Any, compute_time_s: float) -> str:
    """The configuration digest that ties a checkpoint to its run (16 hex digits).

    The frozen base weights and the adapters' layout identify the model, not the current LoRA
    values: a stopped model holds θ_t, and θ comes from the checkpoint anyway.
    """
    describe = getattr(aggregator, "describe", lambda: {"type": type(aggregator).__name__})
    return _config_digest({
        "config": dict(config), "phi": phi.tolist(), "q": q, "ranks": ranks,
        "base": _base_digest(model, mods), "data": data_summary, "aggregator": describe(),
        "compute_time_s": compute_time_s,
    })


def is_stateful(obj: Any) -> bool:
    """Whether ``obj`` has ``state_dict``/``load_state_dict`` (its state is checkpointed)."""
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None))


class RunState(NamedTuple):
    """What a checkpoint restores: θ, the next round, the log so far, the aggregator's state and
    the algorithm's (the clients' private factors and optimizer states)."""

    theta: np.ndarray
    next_round: int
    history: list[dict[str, Any]]
    agg_state: dict[str, np.ndarray]
    alg_state: dict[str, np.ndarray]


def save_run_checkpoint(path: Path, *, theta: np.ndarray, next_round: int, digest: str,
                        history: list[dict[str, Any]],
                        agg_state: Mapping[str, np.ndarray],
                        alg_state: Mapping[str, np.ndarray] | None = None) -> None:
    """Write the checkpoint atomically (a crash never leaves half a file under ``path``)."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array(_CKPT_FORMAT), "version": np.array(_CKPT_VERSION),
        "theta": np.asarray(theta, dtype=np.float64), "next_round": np.array(int(next_round)),
        "digest": np.array(digest), "history_json": np.array(json.dumps(history)),
    }
    for k, v in agg_state.items():
        arrays[f"agg.{k}"] = np.asarray(v)
    for k, v in (alg_state or {}).items():
        arrays[f"alg.{k}"] = np.asarray(v)
    atomic_savez(path, **arrays)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # truncated zip, bad header, object arrays, ...
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or unreadable ({type(exc).__name__}: "
            f"{exc}); {_HINT}") from exc


def load_run_checkpoint(path: Path, digest: str, q: int) -> RunState:
    """Read and check a checkpoint of the run with ``digest`` and payload length ``q``.

    Raises :class:`~fedopt.errors.CheckpointError` (naming the path) when the file is corrupt,
    of another format or version, from another run, or inconsistent.
    """
    data = _read_npz(path)
    try:
        if str(data["format"]) != _CKPT_FORMAT or int(data["version"]) != _CKPT_VERSION:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is not a fedopt FL-run checkpoint of version "
                f"{_CKPT_VERSION}; {_HINT}")
        if str(data["digest"]) != digest:
            raise CheckpointError(
                f"checkpoint {str(path)!r} belongs to a different run (configuration digest "
                f"{str(data['digest'])} != {digest}: model, data, aggregator or settings "
                f"changed); {_HINT}, or resume with the original settings")
        theta = np.asarray(data["theta"], dtype=np.float64)
        history = json.loads(str(data["history_json"]))
        nxt = int(data["next_round"])
    except KeyError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {exc}; {_HINT}") from exc
    if theta.shape != (q,) or not np.all(np.isfinite(theta)) or len(history) != nxt:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is inconsistent (theta shape {theta.shape}, expected "
            f"({q},); {len(history)} logged rounds for next round {nxt}); {_HINT}")
    agg = {k[4:]: v for k, v in data.items() if k.startswith("agg.")}
    alg = {k[4:]: v for k, v in data.items() if k.startswith("alg.")}
    return RunState(theta, nxt, history, agg, alg)


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """The run's output directory, created and checked (:func:`fedopt.io.ensure_dir`)."""
    return ensure_dir(out_dir, "out_dir")


def write_log(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """``rounds.jsonl``: one JSON record per line, rewritten atomically."""
    atomic_write_text(path, "".join(json.dumps(rec) + "\n" for rec in history))


class RunFiles:
    """The output directory of one run (or none: everything stays in memory).

    Parameters
    ----------
    out_dir
        Where the files go (created and checked); None writes nothing.
    digest
        The run's :func:`run_digest`, stored in (and checked against) the checkpoint.
    """

    def __init__(self, out_dir: str | os.PathLike | None, digest: str):
        self.out = check_out_dir(Path(out_dir)) if out_dir is not None else None
        self.digest = digest

    @property
    def checkpoint(self) -> Path | None:
        return self.out / CHECKPOINT_NAME if self.out is not None else None

    @property
    def log(self) -> Path | None:
        return self.out / LOG_NAME if self.out is not None else None

    @property
    def summary(self) -> Path | None:
        return self.out / SUMMARY_NAME if self.out is not None else None

    def restore_or_reset(self, resume: bool, q: int) -> RunState | None:
        """The checkpointed state when resuming from an existing checkpoint; otherwise None,
        after removing a stale checkpoint and summary (a fresh run starts clean)."""
        ckpt = self.checkpoint
        if resume and ckpt is not None and ckpt.exists():
            state = load_run_checkpoint(ckpt, self.digest, q)
            # the checkpoint's log is authoritative: a log line torn by a crash (even after the
            # last round) is repaired here, not carried on
            write_log(self.log, state.history)
            return state
        if self.out is not None:
            for p in (ckpt, self.summary):
                if p.exists():
                    p.unlink()
        return None

    def record_round(self, history: list[dict[str, Any]], theta: np.ndarray, next_round: int,
                     aggregator: Any, algorithm: Any = None) -> None:
        """After a round: rewrite the log, then the checkpoint with the aggregator's and the
        algorithm's state (no-op without a directory)."""
        if self.out is None:
            return
        write_log(self.log, history)
        save_run_checkpoint(self.checkpoint, theta=theta, next_round=next_round,
                            digest=self.digest, history=history,
                            agg_state=aggregator.state_dict() if is_stateful(aggregator) else {},
                            alg_state=algorithm.state_dict() if is_stateful(algorithm) else {})

    def finish(self, summary: Mapping[str, Any], completed: bool) -> dict[str, str]:
        """Write ``summary.json`` for a completed run; the paths written, by role."""
        if self.out is None:
            return {}
        paths = {"log": str(self.log), "checkpoint": str(self.checkpoint)}
        if completed:
            atomic_write_text(self.summary, json.dumps(summary, indent=2) + "\n")
            paths["summary"] = str(self.summary)
        return paths
