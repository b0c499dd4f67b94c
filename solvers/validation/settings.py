"""The settings of a validation run (:class:`ValidateSettings`: the training recipe plus what a
validation runs) and the check of the device the loop trains on.

Public through :mod:`fedopt.solvers.validation` (and :mod:`~fedopt.solvers.validation.driver`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.fl.recipe import TrainingRecipe
from fedopt.instance import Instance

__all__ = ["ValidateSettings", "check_device"]


@dataclass(frozen=True)
class ValidateSettings(TrainingRecipe):
    """Settings of :func:`validate`: the training recipe (:class:`~fedopt.fl.recipe.
    TrainingRecipe`, whose fields and defaults it inherits) plus what a validation runs.

    Attributes
    ----------
    rounds : int
        Rounds T per run.
    seeds : tuple of int
        One run per seed and method (seed: channel draws, mini-batches, LoRA init, noise).
    mode : {"exact", "equivalent"}
        AirComp path: symbol-level simulation or the validated equivalent noise.
    tsfa_v : float
        Lyapunov weight V of the digital baseline's online stage.
    device : str
        Where the loop trains: ``"cpu"`` (bit-exact, the default) or ``"cuda"`` /
        ``"cuda:N"`` where torch sees a GPU.
    """

    rounds: int = 30
    seeds: tuple[int, ...] = (0, 1, 2)
    mode: str = "exact"
    tsfa_v: float = 0.01
    device: str = "cpu"

    @classmethod
    def quick(cls, testbed: str = "pydoc-topics", **changes: Any) -> ValidateSettings:
        """A short run for smoke tests: 8 rounds, one seed, small evaluations (the testbed's
        recipe otherwise)."""
        return cls.for_testbed(testbed, **{"rounds": 8, "seeds": (0,), "eval_every": 2,
                                           "eval_batches": 2, **changes})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                                 or s < 0 for s in self.seeds):
            raise InvalidArgumentError(
                f"seeds: got {list(self.seeds)!r}, must be a non-empty list of integers >= 0")
        if len(set(self.seeds)) != len(self.seeds):
            raise InvalidArgumentError(f"seeds: got {list(self.seeds)!r}, must be distinct")
        if self.mode not in ("exact", "equivalent"):
            raise InvalidArgumentError(
                f"mode: got {self.mode!r}, must be 'exact' or 'equivalent'")
        if not (self.tsfa_v >= 0 and np.isfinite(self.tsfa_v)):
            raise InvalidArgumentError(f"tsfa_v: got {self.tsfa_v!r}, must be >= 0")
        check_device(self.device)
        from fedopt.fl.loop import LoopConfig

        LoopConfig(rounds=self.rounds, optimizer=self.optimizer, lr=self.lr,
                   eval_every=self.eval_every, eval_batches=self.eval_batches,
                   mira_graph=self.mira_graph)

    def loop_config(self, instance: Instance, seed: int, **changes: Any) -> Any:
        """The loop settings of one run (``rounds`` of these settings; the instance's
        algorithm unless ``algorithm`` is given)."""
        return super().loop_config(instance, rounds=changes.pop("rounds", self.rounds),
                                   seed=seed, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["seeds"] = list(self.seeds)
        return d


def check_device(device: str) -> str:
    """``device`` if torch can train there: ``cpu``, or ``cuda[:N]`` with a visible GPU."""
    if device == "cpu":
        return device
    if not isinstance(device, str) or not (device == "cuda" or (
            device.startswith("cuda:") and device[5:].isdigit())):
        raise InvalidArgumentError(f"device: got {device!r}, must be 'cpu', 'cuda' or 'cuda:N'")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device[5:]) if ":" in device else 0
    if index >= count:
        raise InvalidArgumentError(
            f"device: got {device!r}, but torch sees {count} CUDA device(s) on this machine; "
            f"use 'cpu'" + (f" or cuda:0..cuda:{count - 1}" if count else ""))
    return device
