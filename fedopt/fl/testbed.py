"""The fine-tuning testbeds of the validation loop: which base model the clients adapt and which
text they fine-tune on (spec 05 §1). An instance names its testbed in ``learning.testbed``.

- ``pydoc-topics`` (the ``tiny-char`` preset): the ``char-base`` model, pre-trained on the
  training part of every ``pydoc_data`` help topic; clients hold whole topics of the same text
  (a Dirichlet size knob). Fine-tuning gains little (≈ 2 %): there is no domain shift.
- ``domain-shift`` (the ``char-tasks`` preset, ``fedopt validate``'s default): the
  ``prose-base`` model, pre-trained on the snapshot's ``prose`` domain only; clients are grouped
  by the downstream tasks ``code``, ``markup``, ``decimal`` and ``mail`` (text the base never
  saw), with the non-IID knob ``task_mixing`` (:func:`fedopt.fl.tasks.make_task_data`).

This module needs numpy only; the base models load torch lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedopt.errors import InvalidArgumentError
from fedopt.instance import TESTBEDS

__all__ = ["TESTBEDS", "Testbed", "get_testbed"]


@dataclass(frozen=True)
class Testbed:
    """One testbed: its ``name``, the base model it adapts (``base``, a name of
    :data:`fedopt.fl.pretrained.BASES`) and a one-line ``summary``."""

    name: str
    base: str
    summary: str

    def base_model(self) -> Any:
        """The pre-trained base :class:`~fedopt.fl.charmodel.Checkpoint`."""
        from fedopt.fl.pretrained import base_model

        return base_model(self.base)

    def client_data(self, n_clients: int, *, concentration: float = 1.0, seed: int = 0,
                    task_mixing: float = 0.0) -> Any:
        """The clients' training and held-out text (:class:`~fedopt.fl.data.FederatedData`)."""
        if self.name == "domain-shift":
            from fedopt.fl.tasks import make_task_data

            return make_task_data(n_clients, task_mixing=task_mixing,
                                  concentration=concentration, seed=seed)
        from fedopt.fl.data import make_federated_data

        return make_federated_data(n_clients, concentration=concentration, seed=seed)


_TESTBEDS = {
    "pydoc-topics": Testbed("pydoc-topics", "char-base",
                            "base and clients on the pydoc help topics (no domain shift)"),
    "domain-shift": Testbed("domain-shift", "prose-base",
                            "base on prose; clients on code, markup, decimal and mail tasks"),
}
assert tuple(_TESTBEDS) == TESTBEDS


def get_testbed(name: str) -> Testbed:
    """The testbed called ``name`` (one of :data:`TESTBEDS`)."""
    if name not in _TESTBEDS:
        raise InvalidArgumentError(f"testbed: got {name!r}, must be one of {', '.join(TESTBEDS)}")
    return _TESTBEDS[name]
