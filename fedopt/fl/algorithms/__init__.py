"""The federated algorithms of the loop (spec 05 §2–§4): what a client computes and sends, and
how the server applies the aggregate (the protocol: :mod:`fedopt.fl.algorithms.base`).

- ``fedavg`` (:class:`FedAvg`): LoRA updates after E local steps (FedSGD with E = 1 and SGD;
  Fed-Sophia with the local optimizer ``sophia``);
- ``ota-sophia`` (:class:`OTASophia`): clients send their Sophia statistics m and h, the server
  aggregates both and takes the clipped step;
- ``ffa`` (:class:`FFALoRA`): only B is trained and sent, A frozen at initialization;
- ``fedsa`` (:class:`FedSALoRA`): A and B trained, only A sent; B stays on each device;
- ``local`` (:class:`LocalTraining`): every client trains its own LoRA, nothing is sent;
- ``mira`` (:class:`MIRA`): every client keeps its own LoRA; the server pulls the updates of
  clients with similar tasks together (:mod:`~fedopt.fl.algorithms.personal`);
- ``pwff`` (:class:`PWFF`): global adapters aggregated, a private LoRA on the MLP, a local loss
  personalized by two reward models (:mod:`~fedopt.fl.algorithms.pwff`).

The names are those of ``learning.algorithm`` in an instance (which sets the payload the planner
sees) and of ``LoopConfig.algorithm``.
"""

from __future__ import annotations

from fedopt.errors import InvalidArgumentError
from fedopt.fl.algorithms.averaging import FedAvg, FedSALoRA, FFALoRA
from fedopt.fl.algorithms.base import Algorithm, factor_indices
from fedopt.fl.algorithms.ota_sophia import OTASophia
from fedopt.fl.algorithms.personal import MIRA, LocalTraining
from fedopt.fl.algorithms.pwff import PWFF

__all__ = ["ALGORITHM_CLASSES", "Algorithm", "FedAvg", "FFALoRA", "FedSALoRA", "LocalTraining",
           "MIRA", "OTASophia", "PWFF",
           "factor_indices", "make_algorithm"]

#: ``LoopConfig.algorithm`` → its class
ALGORITHM_CLASSES: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (FedAvg, OTASophia, FFALoRA, FedSALoRA, LocalTraining, MIRA,
                                      PWFF)}


def make_algorithm(name: str) -> Algorithm:
    """A fresh algorithm object by name."""
    if name not in ALGORITHM_CLASSES:
        raise InvalidArgumentError(
            f"algorithm: got {name!r}, must be one of {', '.join(ALGORITHM_CLASSES)}")
    return ALGORITHM_CLASSES[name]()
