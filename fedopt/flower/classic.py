"""``AirCompClassicStrategy``: the uplink around a strategy of Flower's classic API
(``flwr.server.strategy.FedAvg``: ``configure_fit`` / ``aggregate_fit`` over ``FitRes``),
for ServerApps built with ``server_fn`` and ``ServerAppComponents`` (imports flwr).

:class:`fedopt.flower.AirCompStrategy` returns one of these when given a classic strategy; the
options, the metrics and the way the wrapped strategy sees the estimate are those of
:mod:`fedopt.flower.strategy`. Arrays are named by their position (``"0"``, ``"1"``, ...), the
clients' node ids are the proxies' ``cid``, the weights their ``num_examples``.
"""

from __future__ import annotations

from typing import Any

from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarray_to_bytes,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedopt.errors import InvalidArgumentError
from fedopt.flower.rounds import UplinkWrapper, over_the_air
from fedopt.flower.uplink import Uplink

__all__ = ["AirCompClassicStrategy"]


def _node(cid: Any) -> Any:
    """A proxy's cid as a sort key: numeric ids compare as numbers."""
    text = str(cid)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


class AirCompClassicStrategy(UplinkWrapper, Strategy):
    """A classic-API Flower strategy whose ``aggregate_fit`` goes through an uplink.

    Parameters are those of :class:`fedopt.flower.AirCompStrategy`; ``device_key`` is read from
    each ``FitRes.metrics``. Each round's fit metrics gain the ``uplink-*`` entries, and
    :attr:`history` holds one record per round.
    """

    def __init__(self, strategy: Strategy, *, uplink: Uplink, payload: str = "delta",
                 device_key: str | None = None):
        self._wrap(strategy, Strategy, "a classic Flower strategy "
                   "(flwr.server.strategy.Strategy)", uplink=uplink, payload=payload,
                   device_key=device_key)

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """The wrapped strategy's initial parameters."""
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        """The wrapped strategy's fit instructions; the global arrays are kept."""
        if self.payload == "delta":
            self._sent = {server_round: {str(i): a for i, a in
                                         enumerate(parameters_to_ndarrays(parameters))}}
        return self.strategy.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[tuple[ClientProxy, FitRes] | BaseException]
                      ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """The wrapped strategy's aggregate of the results, their arrays passed through the
        uplink; its metrics plus the uplink's ``uplink-*`` metrics."""
        if not results:
            return self.strategy.aggregate_fit(server_round, results, failures)
        arrays = [parameters_to_ndarrays(res.parameters) for _, res in results]
        key = self.device_key
        if key is not None:
            for proxy, res in results:
                if key not in res.metrics:
                    raise InvalidArgumentError(
                        f"round {server_round}: the fit result of client {proxy.cid} has no "
                        f"metric {key!r} (its metrics have {sorted(res.metrics)})")
        air = over_the_air(
            self.uplink, server_round, [{str(i): a for i, a in enumerate(x)} for x in arrays],
            [float(res.num_examples) for _, res in results],
            [_node(proxy.cid) for proxy, _ in results],
            reported=None if key is None else [res.metrics[key] for _, res in results],
            sent=self._sent.get(server_round), payload=self.payload)
        shared = {k: ndarray_to_bytes(v) for k, v in air.arrays.items()}  # serialized once
        rebuilt = []
        for (proxy, res), own in zip(results, arrays, strict=True):
            tensors = [shared.get(str(i)) or ndarray_to_bytes(a) for i, a in enumerate(own)]
            metrics = {k: v for k, v in res.metrics.items() if k != key}
            params = Parameters(tensors=tensors, tensor_type="numpy.ndarray")
            rebuilt.append((proxy, FitRes(res.status, params, res.num_examples, metrics)))
        params, metrics = self.strategy.aggregate_fit(server_round, rebuilt, failures)
        metrics = {**(metrics or {}), **air.metrics}
        self.history.append(air.record(server_round))
        return params, metrics

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager
                           ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """The wrapped strategy's evaluation instructions."""
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int,
                           results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list[tuple[ClientProxy, EvaluateRes] | BaseException]
                           ) -> tuple[float | None, dict[str, Scalar]]:
        """The wrapped strategy's aggregated evaluation."""
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters
                 ) -> tuple[float, dict[str, Scalar]] | None:
        """The wrapped strategy's centralized evaluation."""
        return self.strategy.evaluate(server_round, parameters)
