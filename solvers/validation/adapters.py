"""Per-round callables that the FL room's aggregators call (spec 05 §3): they carry the
solvers into the loop without the loop importing a solver.

- :class:`RoundBeamformers`, ``(t, H) -> A``: the receive beamformers of round t, re-optimized on
  the round's channel by the plan's beamforming method (warm-started from round t − 1), for
  :class:`fedopt.fl.aggregators.AirCompAggregator`;
- :class:`TSFADecisions`, ``t -> decision``: TSFA's online stage (spec 04 §5) on round t's
  channel, for :class:`fedopt.fl.aggregators.DigitalAggregator`.

Both checkpoint their state (warm start, virtual queue) through ``state_dict`` so that a resumed
run is identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedopt.channel import Channel, draw_channel
from fedopt.digital import snr_hz
from fedopt.instance import Instance
from fedopt.solvers.beamforming import METHODS as BEAMFORMING_TABLE
from fedopt.solvers.beamforming import solve_beamforming
from fedopt.solvers.problem import BeamformingProblem
from fedopt.solvers.tsfa import TSFAController

__all__ = ["RoundBeamformers", "TSFADecisions"]


class RoundBeamformers:
    """``(t, H) -> A``: receive beamformers re-optimized on each round's channel.

    Round 0 uses ``initial`` (the plan's beamformers, solved on that very channel) when given;
    round t > 0 solves the beamforming problem of H with ``method``, warm-started (manifold
    solver) from round t − 1. Solutions are memoized in ``cache`` (shared between methods of one
    validation: same chain, same answer).
    """

    def __init__(self, instance: Instance, streams: int, method: str, seed: int, *,
                 initial: np.ndarray | None = None,
                 cache: dict[tuple, np.ndarray] | None = None, **options: Any):
        self.instance = instance
        self.streams = int(streams)
        self.method = method
        self.seed = int(seed)
        self.initial = None if initial is None else np.array(initial)
        self.options = options
        self.cache = {} if cache is None else cache
        self.prev: np.ndarray | None = None
        self.solves = 0
        self.solve_time_s = 0.0
        tag = b"" if self.initial is None else self.initial.tobytes()
        self._chain = (method, self.streams, self.seed, instance.digest(),
                       hash(tag), json.dumps(options, sort_keys=True, default=str))

    def describe(self) -> dict[str, Any]:
        return {"type": "round-beamformers", "method": self.method, "streams": self.streams,
                "seed": self.seed, "options": {k: str(v) for k, v in self.options.items()}}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The warm start and the running counts (so a resumed run reports every solve)."""
        counts = {"solves": np.array(self.solves, dtype=np.int64),
                  "solve_time_s": np.array(self.solve_time_s)}
        return counts if self.prev is None else {"prev": self.prev, **counts}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.prev = None if "prev" not in state else np.array(state["prev"])
        self.solves = int(state["solves"]) if "solves" in state else 0
        self.solve_time_s = float(state["solve_time_s"]) if "solve_time_s" in state else 0.0

    def __call__(self, t: int, H: np.ndarray) -> np.ndarray:
        key = (*self._chain, int(t))
        if key not in self.cache:
            if t == 0 and self.initial is not None:
                self.cache[key] = self.initial
            else:
                t0 = time.perf_counter()
                problem = BeamformingProblem.from_instance(self.instance, Channel(H=H),
                                                           self.streams)
                kwargs = dict(self.options)
                if BEAMFORMING_TABLE[self.method].uses_init and self.prev is not None:
                    kwargs["init"] = self.prev
                rng = np.random.default_rng(np.random.SeedSequence(
                    self.seed, spawn_key=(4, int(t), self.streams)))
                self.cache[key] = solve_beamforming(problem, self.method, rng=rng,
                                                    **kwargs).solution
                self.solves += 1
                self.solve_time_s += time.perf_counter() - t0
        self.prev = self.cache[key]
        return self.prev


class TSFADecisions:
    """``t -> decision``: TSFA's online stage on round t's channel (spec 04 §5) for the
    :class:`fedopt.fl.aggregators.DigitalAggregator`; the virtual queue is its state."""

    def __init__(self, instance: Instance, rank: int, seed: int, *, V: float, **options: Any):
        self.instance = instance
        self.seed = int(seed)
        self.controller = TSFAController(instance, rank, V=V, **options)
        self.compute_s = np.asarray(instance.compute_time_s, dtype=float)
        self.power_w = np.asarray(instance.power_w, dtype=float)

    def describe(self) -> dict[str, Any]:
        c = self.controller
        return {"type": "tsfa", "rank": c.rank, "V": c.V, "budget_s": c.budget_s,
                "bandwidth_hz": c.bandwidth_hz, "seed": self.seed}

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"queue": np.array(self.controller.queue),
                "round": np.array(self.controller.round)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.controller.queue = float(state["queue"])
        self.controller.round = int(state["round"])

    def __call__(self, t: int) -> dict[str, Any]:
        d = self.controller.step(snr_hz(self.instance,
                                        draw_channel(self.instance, self.seed, round=t)))
        upload = np.maximum(d.latency_s - self.compute_s, 0.0)  # every device ends at τ
        return {"kept": d.kept, "latency_s": d.latency_s, "airtime_s": float(upload.max()),
                "energy_j": self.power_w * upload, "bandwidth_hz": d.bandwidth_hz,
                "sparsity": d.sparsity}
