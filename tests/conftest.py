"""Shared fixtures: one seeded generator, the shipped presets, small instance builders.

All randomness in the suite goes through the ``rng`` fixture (``np.random.default_rng(SEED)``);
nothing seeds numpy's global state. Set ``FEDOPT_TEST_SEED`` to rerun the suite on other draws.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import numpy as np
import pytest

from fedopt.instance import Instance, load_instance

SEED = int(os.environ.get("FEDOPT_TEST_SEED", "20240611"))


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator per test, seeded from ``SEED`` (tests stay independent of order)."""
    return np.random.default_rng(SEED)


@pytest.fixture
def crandn(rng: np.random.Generator) -> Callable[..., np.ndarray]:
    """``crandn(*shape)``: i.i.d. CN(0, 1) entries (E|z|² = 1) drawn from ``rng``."""

    def draw(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2.0)

    return draw


@pytest.fixture(scope="session")
def default_instance() -> Instance:
    return load_instance("default")


@pytest.fixture(scope="session")
def small_instance() -> Instance:
    return load_instance("small")


@pytest.fixture
def small_dict(small_instance: Instance) -> dict:
    """A deep copy of the ``small`` preset as a plain mapping, free to mutate."""
    return copy.deepcopy(small_instance.to_dict())


def make_instance(base: Instance, **sections: dict) -> Instance:
    """``base`` with some fields of some sections overridden (re-validated)."""
    data = copy.deepcopy(base.to_dict())
    for section, changes in sections.items():
        data[section].update(changes)
    return Instance.from_dict(data)


@pytest.fixture
def instance_builder() -> Callable[..., Instance]:
    """``instance_builder(base, server={"n_rx": 8}, ...)``: see :func:`make_instance`."""
    return make_instance
