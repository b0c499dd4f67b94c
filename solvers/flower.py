"""Uplinks for a Flower federation, from an instance and (optionally) a plan file.

One line in a Flower ServerApp puts a planned wireless uplink under the federation's
aggregation (:class:`fedopt.flower.AirCompStrategy`)::

    strategy = AirCompStrategy(FedAvg(), uplink=aircomp_uplink("small", seed=0))

- :func:`aircomp_uplink`: over-the-air aggregation; the plan (given, or solved here by the
  registry's ``method``) fixes the streams L and the beamforming method, and every round's
  receive beamformers are re-optimized on that round's channel
  (:class:`~fedopt.solvers.validation.adapters.RoundBeamformers`, warm-started);
- :func:`digital_uplink`: SOFT-sparsified LoRA factors over FDMA with TSFA's online sparsity
  and bandwidth decisions per round
  (:class:`~fedopt.solvers.validation.adapters.TSFADecisions`); the payload must be the LoRA
  factors of the instance's layers at the plan's rank (``uplink.info["rank"]``).

Round t's channel is ``draw_channel(instance, seed, t)`` (Flower's server round t + 1), as in
``fedopt validate``. The instance's K must equal the number of Flower clients (``clients``
checks it here; the strategy checks it every round). The aggregation weights are the clients'
example counts; the plan was made for the instance's ``dataset_size`` weights, and the ZF
precoders follow the actual weights each round.

This module imports no torch and no FL loop: the uplinks it returns hold numpy aggregators.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from fedopt.channel import draw_channel
from fedopt.errors import InvalidArgumentError, PlanError
from fedopt.flower.uplink import Uplink
from fedopt.instance import Instance, load_instance
from fedopt.plan import AirCompPlan, DigitalPlan, Plan
from fedopt.solvers.validation.adapters import RoundBeamformers, TSFADecisions

__all__ = ["aircomp_uplink", "digital_uplink"]

InstanceLike = Instance | str | os.PathLike
PlanLike = Plan | str | os.PathLike | None


def _instance(instance: InstanceLike, clients: int | None) -> Instance:
    inst = instance if isinstance(instance, Instance) else load_instance(instance)
    if clients is not None:
        if isinstance(clients, bool) or not isinstance(clients, (int, np.integer)) \
                or clients < 1:
            raise InvalidArgumentError(f"clients: expected an integer >= 1, got {clients!r}")
        if int(clients) != inst.n_devices:
            raise InvalidArgumentError(
                f"clients: the Flower federation has {clients} clients but instance "
                f"{inst.name!r} has K = {inst.n_devices} devices (devices.count); one device "
                f"per client: give an instance with devices.count = {clients} (and "
                f"{clients} values in its per-device lists), or run {inst.n_devices} clients")
    return inst


def _plan(plan: PlanLike, inst: Instance, method: str, seed: int, kind: type[Plan]) -> Plan:
    """The typed plan: loaded from a file, given, or solved on the seed's round-0 channel."""
    if plan is None:
        from fedopt.solvers.registry import solve

        out = solve(inst, method, seed=seed).solution
    else:
        out = (plan if isinstance(plan, Plan) else Plan.load(plan)).typed()
        out.check(inst, same_instance=True)
    if not isinstance(out, kind):
        want = "receive beamformers (an AirComp plan)" if kind is AirCompPlan else \
            "a bandwidth split (a digital plan: --method tsfa)"
        raise PlanError(f"plan of method {out.method!r} is a {type(out).__name__}; this uplink "
                        f"needs {want}")
    return out


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"seed: expected an integer >= 0, got {seed!r}")
    return int(seed)


def aircomp_uplink(instance: InstanceLike = "default", *, plan: PlanLike = None, seed: int = 0,
                   mode: str = "exact", method: str = "airfl-lora", clients: int | None = None,
                   noise_power_w: float | None = None, **beamforming: Any) -> Uplink:
    """Over-the-air aggregation planned for ``instance``.

    Parameters
    ----------
    instance
        An :class:`~fedopt.instance.Instance`, a preset name or an instance file.
    plan
        An AirComp plan (or its file) for this instance; None solves one with ``method``.
    seed
        Channel draws (round t: ``draw_channel(instance, seed, t)``) and noise draws.
    mode
        ``"exact"`` (symbol-level simulation) or ``"equivalent"`` (the validated equivalent
        noise: the exact average plus the receiver noise A^H n; fast for large payloads).
    method
        The registry's planner when no plan is given (default ``airfl-lora``).
    clients
        The number of Flower clients; raises when it is not the instance's K.
    noise_power_w
        σ² per subcarrier instead of the instance's (0: noise-free AirComp).
    **beamforming
        Options of the per-round beamforming solves (``RoundBeamformers``).
    """
    seed = _check_seed(seed)
    inst = _instance(instance, clients)
    p = _plan(plan, inst, method, seed, AirCompPlan)
    # the plan's beamformers serve round 0 when they were solved on that very channel
    solved_here = p.channel_seed == seed and p.channel_round in (0, None)
    beams = RoundBeamformers(inst, p.streams, p.beamforming_method, seed,
                             initial=p.receive_beamformers if solved_here else None,
                             **beamforming)
    sigma2 = inst.noise_power_w if noise_power_w is None else noise_power_w
    return Uplink.aircomp(
        lambda t: draw_channel(inst, seed, round=t).H, beams, inst.power_per_subcarrier_w,
        sigma2, symbol_time_s=inst.symbol_time_s,
        compute_time_s=float(np.max(inst.compute_time_s)), mode=mode, seed=seed,
        info={"instance": inst.name, "method": p.method, "rank": p.rank, "streams": p.streams,
              "beamforming": p.beamforming_method})


def digital_uplink(instance: InstanceLike = "default", *, plan: PlanLike = None, seed: int = 0,
                   tsfa_v: float = 0.01, clients: int | None = None) -> Uplink:
    """The digital FDMA uplink with TSFA planned for ``instance``.

    Parameters
    ----------
    instance, seed, clients
        As in :func:`aircomp_uplink`.
    plan
        A digital plan (or its file); None solves one with the registry's ``tsfa``.
    tsfa_v
        Lyapunov weight V of TSFA's online stage.

    The Flower model's arrays must be the LoRA factors of the instance's layers at the plan's
    rank, in fedopt's order (per layer A (r × d_in) then B (d_out × r)):
    ``uplink.payload_shapes``.
    """
    seed = _check_seed(seed)
    inst = _instance(instance, clients)
    p = _plan(plan, inst, "tsfa", seed, DigitalPlan)
    decide = TSFADecisions(inst, p.rank, seed, V=tsfa_v)
    layers = [(layer.d_out, layer.d_in) for layer in inst.lora.layers
              for _ in range(layer.count)]
    return Uplink.digital(layers, p.rank, decide, devices=inst.n_devices,
                          factors=inst.lora.factors, seed=seed,
                          info={"instance": inst.name, "method": p.method, "tsfa_v": tsfa_v})
