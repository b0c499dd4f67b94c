"""``AirCompStrategy``: a Flower strategy of the Message API whose aggregation goes through
fedopt's physical layer (imports flwr; reached through :mod:`fedopt.flower`).

The wrapped strategy (``flwr.serverapp.strategy.FedAvg``, or any strategy whose aggregation is a
weighted average followed by a server step: FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad)
keeps sampling, configuring, evaluating and aggregating metrics. Only its view of the clients'
arrays changes: in :meth:`AirCompStrategy.aggregate_train` the clients' floating-point arrays
go through the uplink (:func:`fedopt.flower.rounds.over_the_air`), and the wrapped strategy
receives the same replies with those arrays replaced by the over-the-air estimate — all K
replies carry the one estimate, as an AirComp receiver only ever sees the sum — so that its
weighted average is the estimate and its server step (momentum, Adam) acts on it. Robust
aggregators that need each client's own update (FedMedian, Krum, trimmed means) get K copies of
the estimate: AirComp cannot give them more.

A classic-API strategy (``flwr.server.strategy.FedAvg``) passed to :class:`AirCompStrategy`
gives an :class:`~fedopt.flower.classic.AirCompClassicStrategy` instead (same options).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from logging import INFO
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedopt.errors import InvalidArgumentError
from fedopt.flower.rounds import AirRound, UplinkWrapper, over_the_air
from fedopt.flower.uplink import Uplink

__all__ = ["AirCompStrategy"]


def _single(records: dict[str, Any], what: str, node: int) -> tuple[str, Any]:
    if len(records) != 1:
        raise InvalidArgumentError(
            f"reply from node {node}: expected exactly one {what} (as Flower's built-in "
            f"strategies send), got {len(records)}")
    return next(iter(records.items()))


class AirCompStrategy(UplinkWrapper, Strategy):
    """Wrap a Flower strategy so that the clients' updates reach the server through an uplink.

    Parameters
    ----------
    strategy
        The Flower strategy to wrap (Message API: ``flwr.serverapp.strategy.FedAvg``, ...; a
        classic-API strategy gives an :class:`~fedopt.flower.classic.AirCompClassicStrategy`).
    uplink
        A :class:`~fedopt.flower.Uplink`, e.g. ``fedopt.solvers.flower.aircomp_uplink(...)``;
        its K must equal the number of clients that train each round.
    payload
        ``"delta"`` (default): the updates θ_k − θ travel; ``"parameters"``: θ_k themselves.
    device_key
        A metric each client puts in its train reply with its device index 0..K−1 (e.g. its
        ``partition-id``): a client keeps its device, channel and noise from run to run. None
        (default): devices in the order of the node ids. The key is removed from the metrics
        the wrapped strategy aggregates.

    Attributes
    ----------
    history : list of dict
        One record per round (:meth:`fedopt.flower.rounds.AirRound.record`).

    Each round's train metrics gain the uplink's ``uplink-*`` entries
    (:meth:`fedopt.flower.Uplink.metrics`): ``uplink-airtime-s``, ``uplink-latency-s``,
    ``uplink-energy-j``, ``uplink-error`` (‖ĝ − ḡ‖² against the error-free weighted average) ...
    """

    def __new__(cls, strategy: Any = None, *args: Any, **kwargs: Any) -> Any:
        from flwr.server.strategy import Strategy as ClassicStrategy

        if isinstance(strategy, ClassicStrategy):
            from fedopt.flower.classic import AirCompClassicStrategy

            return AirCompClassicStrategy(strategy, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, strategy: Strategy, *, uplink: Uplink, payload: str = "delta",
                 device_key: str | None = None):
        self._wrap(strategy, Strategy, "a Flower strategy (flwr.serverapp.strategy.Strategy or "
                   "flwr.server.strategy.Strategy)", uplink=uplink, payload=payload,
                   device_key=device_key)

    def summary(self) -> None:
        """Log the uplink, then the wrapped strategy's summary."""
        log(INFO, "\t├──> fedopt uplink: %s", self.uplink.describe())
        self.strategy.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The wrapped strategy's messages; the global arrays are kept for the updates."""
        if self.payload == "delta":
            self._sent = {server_round: {k: v.numpy() for k, v in arrays.items()}}
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The wrapped strategy's aggregate of the replies, their arrays passed through the
        uplink; its metrics plus the uplink's ``uplink-*`` metrics."""
        replies = list(replies)
        valid = [m for m in replies if not m.has_error()]
        if not valid:
            return self.strategy.aggregate_train(server_round, replies)
        air = self._air_round(server_round, valid)
        shared = {k: Array(v) for k, v in air.arrays.items()}
        rebuilt = [self._rebuilt(m, shared) for m in valid]
        arrays, metrics = self.strategy.aggregate_train(
            server_round, rebuilt + [m for m in replies if m.has_error()])
        metrics = MetricRecord() if metrics is None else metrics
        for key, value in air.metrics.items():
            metrics[key] = value
        self.history.append(air.record(server_round))
        return arrays, metrics

    def _air_round(self, server_round: int, valid: list[Message]) -> AirRound:
        weight_key = getattr(self.strategy, "weighted_by_key", "num-examples")
        arrays, weights, nodes, reported = [], [], [], []
        for msg in valid:
            node = msg.metadata.src_node_id
            _, record = _single(msg.content.array_records, "ArrayRecord", node)
            _, metrics = _single(msg.content.metric_records, "MetricRecord", node)
            for key in (weight_key, self.device_key):
                if key is not None and key not in metrics:
                    raise InvalidArgumentError(
                        f"round {server_round}: the train reply of node {node} has no metric "
                        f"{key!r} (its MetricRecord has {sorted(metrics)})")
            arrays.append({k: v.numpy() for k, v in record.items()})
            weights.append(float(metrics[weight_key]))
            nodes.append(node)
            if self.device_key is not None:
                reported.append(metrics[self.device_key])
        return over_the_air(self.uplink, server_round, arrays, weights, nodes,
                            reported=reported if self.device_key is not None else None,
                            sent=self._sent.get(server_round), payload=self.payload)

    def _rebuilt(self, msg: Message, shared: dict[str, Array]) -> Message:
        """``msg`` with its travelling arrays replaced by the estimate's and the device key
        dropped from its metrics (the original message is left untouched)."""
        content = RecordDict()
        for name, record in msg.content.items():
            if isinstance(record, ArrayRecord):
                record = ArrayRecord({k: shared.get(k, v) for k, v in record.items()})
            elif isinstance(record, MetricRecord) and self.device_key in record:
                record = MetricRecord({k: v for k, v in record.items()
                                       if k != self.device_key})
            content[name] = record
        return Message(content=content, metadata=copy.copy(msg.metadata))

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """The wrapped strategy's evaluation messages."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        """The wrapped strategy's evaluation metrics."""
        return self.strategy.aggregate_evaluate(server_round, replies)
