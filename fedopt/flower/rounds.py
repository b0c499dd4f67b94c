"""One Flower round through the uplink, shared by the Message-API and the classic strategy.

The strategies hand over what they read from the clients' replies — each client's named
arrays, its weight (its example count), its node id and, optionally, the device index it
reported — and the global arrays they sent. :func:`over_the_air` maps the clients to the uplink's
devices, flattens the updates into the (K, q) matrix of :mod:`fedopt.fl.aggregators`, runs the
uplink's round and unflattens the estimate.

What travels (``payload``):

- ``"delta"`` (the default): each client's update θ_k − θ, the difference to the global arrays
  the round started from; the server adds the aggregate back, θ + ĝ. Over-the-air FL sends
  updates, and fedopt's aggregators normalize and score (SOFT) updates;
- ``"parameters"``: the parameters θ_k themselves (what Flower's FedAvg averages).

This module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.fl.aggregators import AggregationResult
from fedopt.flower.payload import Layout
from fedopt.flower.uplink import Uplink

__all__ = ["PAYLOADS", "AirRound", "check_options", "device_order", "over_the_air"]

PAYLOADS = ("delta", "parameters")


@dataclass(frozen=True)
class AirRound:
    """What one round of the uplink gave.

    Attributes
    ----------
    arrays : dict of str to ndarray
        The aggregated floating-point arrays (θ + ĝ for ``payload="delta"``), in the clients'
        shapes and dtypes.
    metrics : dict
        The round's scalar metrics (:meth:`Uplink.metrics`).
    result : AggregationResult
        The aggregator's result (estimate and exact average of what travelled).
    devices : list of int
        The device each client was assigned to, in the order the clients were given.
    layout : Layout
        The payload's layout.
    """

    arrays: dict[str, np.ndarray]
    metrics: dict[str, int | float]
    result: AggregationResult
    devices: list[int]
    layout: Layout

    def record(self, server_round: int) -> dict[str, Any]:
        """A JSON-safe record of the round: the metrics, the device of each client, and the
        aggregator's per-device facts (energy, kept components, bandwidth)."""
        res = self.result
        extra = {k: res.info[k] for k in ("kept", "bandwidth_hz", "sparsity") if k in res.info}
        energy = None if res.energy_j is None else np.asarray(res.energy_j).tolist()
        return {"round": int(server_round), **self.metrics, "devices": list(self.devices),
                **({"energy_j": energy} if energy is not None else {}), **extra}


def check_options(uplink: Any, payload: str, device_key: str | None) -> None:
    """Validate a strategy's uplink options."""
    if not isinstance(uplink, Uplink):
        raise InvalidArgumentError(
            f"uplink: expected a fedopt.flower.Uplink (e.g. fedopt.solvers.flower."
            f"aircomp_uplink(...)), got {type(uplink).__name__}")
    if payload not in PAYLOADS:
        raise InvalidArgumentError(f"payload: expected one of {PAYLOADS}, got {payload!r}")
    if device_key is not None and not isinstance(device_key, str):
        raise InvalidArgumentError(f"device_key: expected a metric name or None, got "
                                   f"{device_key!r}")


class UplinkWrapper:
    """What both strategies share: the checked options, the per-round history, the arrays sent
    to the clients per round, and the wrapped strategy's other attributes (``__getattr__``)."""

    def _wrap(self, strategy: Any, base: type, expected: str, *, uplink: Any, payload: str,
              device_key: str | None) -> None:
        if not isinstance(strategy, base):
            raise InvalidArgumentError(
                f"strategy: expected {expected}, got {type(strategy).__name__}")
        check_options(uplink, payload, device_key)
        self.strategy, self.uplink = strategy, uplink
        self.payload, self.device_key = payload, device_key
        self.history: list[dict[str, Any]] = []
        self._sent: dict[int, dict[str, np.ndarray]] = {}

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("strategy")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def device_order(node_ids: Sequence[Any], reported: Sequence[Any] | None, k: int,
                 server_round: int, source: str = "") -> list[int]:
    """The device of each client: the index it ``reported`` (its partition id, say), or else
    its rank among the sorted node ids. Raises when there are not exactly ``k`` clients or the
    reported indices are not 0..k−1 once each."""
    n = len(node_ids)
    if n != k:
        where = f" (instance {source!r})" if source else ""
        raise InvalidArgumentError(
            f"round {server_round}: {n} Flower client(s) sent updates but the uplink has K = "
            f"{k} devices{where}: run the federation with {k} clients that all train every "
            f"round (fraction_train=1.0), or build the uplink from an instance with "
            f"devices.count = {n}")
    if reported is None:
        order = sorted(range(n), key=lambda i: node_ids[i])
        return [order.index(i) for i in range(n)]
    try:
        dev = [int(d) for d in reported]
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"round {server_round}: the device indices reported must be integers, got "
            f"{list(reported)!r}") from exc
    if sorted(dev) != list(range(k)) or any(float(d) != float(r) for d, r in
                                            zip(dev, reported, strict=True)):
        raise InvalidArgumentError(
            f"round {server_round}: the clients reported devices {list(reported)!r}; expected "
            f"each of 0..{k - 1} exactly once (one client per device of the uplink)")
    return dev


def over_the_air(uplink: Uplink, server_round: int, arrays: Sequence[Mapping[str, np.ndarray]],
                 weights: Sequence[float], node_ids: Sequence[Any], *,
                 reported: Sequence[Any] | None = None,
                 sent: Mapping[str, np.ndarray] | None = None,
                 payload: str = "delta") -> AirRound:
    """Aggregate the clients' ``arrays`` through ``uplink`` in Flower round ``server_round``
    (the uplink's round ``server_round − 1``).

    Parameters
    ----------
    arrays
        One mapping name → array per client (the reply order).
    weights
        φ_k of each client: its example count.
    node_ids
        Flower node id of each client (orders the devices when nothing is ``reported``).
    reported
        The device index each client reported, or None.
    sent
        The global arrays of the round (required for ``payload="delta"``).
    payload
        ``"delta"`` or ``"parameters"`` (module notes).
    """
    devices = device_order(node_ids, reported, uplink.devices, server_round,
                           uplink.info.get("instance", ""))
    layout = Layout.of(arrays[0])
    uplink.check_layout(layout)
    g = np.empty((uplink.devices, layout.size))
    phi = np.empty(uplink.devices)
    for i, (a, w) in enumerate(zip(arrays, weights, strict=True)):
        g[devices[i]] = layout.flatten(a, where=f"round {server_round}, client on device "
                                                f"{devices[i]} (node {node_ids[i]})")
        phi[devices[i]] = w
    base = None
    if payload == "delta":
        if sent is None:
            raise InvalidArgumentError(
                f"round {server_round}: no global arrays were recorded for this round "
                "(configure_train / configure_fit was not called through the strategy)")
        base = layout.flatten(sent, where=f"round {server_round}, the global model")
        g -= base
    result = uplink.aggregate(g, phi, int(server_round) - 1)
    estimate = result.estimate if base is None else base + result.estimate
    return AirRound(arrays=layout.unflatten(estimate),
                    metrics=uplink.metrics(result, layout.size), result=result,
                    devices=devices, layout=layout)
