"""fedopt's physical layer inside a Flower federation (the ``fedopt[flower]`` extra).

Add one line to a Flower ServerApp and every round's aggregate goes through a planned wireless
uplink — AirComp over-the-air aggregation with receive beamformers re-optimized on each round's
channel, or a digital FDMA uplink with SOFT sparsification and TSFA's online control — and the
round's metrics say what it cost over the air (airtime, latency, energy) and what it did to the
aggregate (‖ĝ − ḡ‖²)::

    from flwr.serverapp.strategy import FedAvg
    from fedopt.flower import AirCompStrategy
    from fedopt.solvers.flower import aircomp_uplink

    strategy = AirCompStrategy(FedAvg(), uplink=aircomp_uplink("small", seed=0))

Rooms:

- :mod:`~fedopt.flower.payload`: named arrays ↔ one real vector per client (numpy);
- :mod:`~fedopt.flower.uplink`: :class:`Uplink`, an aggregator of :mod:`fedopt.fl.aggregators`
  with K, its noise seed and its round metrics (numpy);
- :mod:`~fedopt.flower.rounds`: one round: clients → devices, (K, q) updates, the estimate;
- :mod:`~fedopt.flower.strategy`: :class:`AirCompStrategy`, the Message API
  (``flwr.serverapp.strategy``, what Flower ≥ 1.21 recommends);
- :mod:`~fedopt.flower.classic`: :class:`AirCompClassicStrategy`, the classic API
  (``flwr.server.strategy``).

``import fedopt.flower`` does not import flwr; the two strategies do, on first use, and raise
:class:`~fedopt.errors.MissingDependencyError` without the extra. This package imports no
solver: the uplinks of a plan are built by :mod:`fedopt.solvers.flower`.
"""

from __future__ import annotations

import importlib
from typing import Any

from fedopt.errors import MissingDependencyError

__all__ = ["INSTALL_HINT", "AirCompClassicStrategy", "AirCompStrategy", "Layout", "Uplink"]

INSTALL_HINT = 'pip install "fedopt[flower]"'

_LAZY = {"AirCompStrategy": "fedopt.flower.strategy",
         "AirCompClassicStrategy": "fedopt.flower.classic",
         "Uplink": "fedopt.flower.uplink", "Layout": "fedopt.flower.payload"}
#: the names that need flwr
_NEEDS_FLWR = ("AirCompStrategy", "AirCompClassicStrategy")


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(_LAZY[name])
    except ImportError as exc:
        if name not in _NEEDS_FLWR or not (exc.name or "").startswith("flwr"):
            raise
        raise MissingDependencyError(
            f"fedopt.flower.{name} needs Flower (flwr), which could not be imported ({exc}); "
            f"install the extra: {INSTALL_HINT}") from None
    value = getattr(module, name)
    globals()[name] = value
    return value
