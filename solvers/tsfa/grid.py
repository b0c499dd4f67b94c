"""The deadline grid of TSFA's round solver and the LP relaxation of its knapsack (spec 04 §5).

Item (k, j) of the knapsack raises device k from level j to j + 1 (m from j + 1 to j + 2); at
each deadline τ_p of the grid the items are sorted by decreasing gain / extra band, the order in
which the greedy that solves the LP relaxation takes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GRID_FIELDS", "Grid", "GridStore", "LPRelaxation"]

GRID_FIELDS = ("tau", "band", "slope", "order", "dband", "gain", "dev", "lvl")


@dataclass
class Grid:
    """Deadlines τ_p and, at each, the bands, their slopes and the sorted items of
    the knapsack (item (k, j) raises device k from level j to j + 1, i.e. m from j + 1 to j + 2).
    """

    tau: np.ndarray        # (P,)
    band: np.ndarray       # (P, K, r): b_k(m = j + 1, τ_p)
    slope: np.ndarray      # (P, K, r): −∂b_k/∂τ at τ_p (≥ 0), shrunk so that tangents stay below
    order: np.ndarray      # (P, n): items by decreasing gain / extra band (ties: lower level)
    dband: np.ndarray      # (P, n): the item's extra band b_k(j + 1) − b_k(j), in that order
    gain: np.ndarray       # (P, n): its objective decrease V p_k (E(j) − E(j + 1))
    dev: np.ndarray        # (P, n): its device
    lvl: np.ndarray        # (P, n): its level j

    def take(self, idx: Any) -> Grid:
        return Grid(*(getattr(self, f)[idx] for f in GRID_FIELDS))


class GridStore:
    """The deadline grid of a round: rows appended in place (no copying of the (P, K, r) band
    tables as the grid grows), read in increasing τ through ``perm``."""

    def __init__(self, capacity: int):
        self.capacity = max(int(capacity), 1)
        self.n = 0
        self.buf: Grid | None = None
        self.phi_buf = np.empty(self.capacity)
        self.perm = np.empty(0, dtype=np.int64)

    def add(self, new: Grid, phi: np.ndarray) -> None:
        p = len(new.tau)
        if self.buf is None or self.n + p > self.capacity:
            cap = max(2 * self.capacity, self.n + p)
            fields = {}
            for f in GRID_FIELDS:
                x = getattr(new, f)
                arr = np.empty((cap,) + x.shape[1:], dtype=x.dtype)
                if self.buf is not None:
                    arr[:self.n] = getattr(self.buf, f)[:self.n]
                fields[f] = arr
            phi_buf = np.empty(cap)
            phi_buf[:self.n] = self.phi_buf[:self.n]
            self.buf, self.phi_buf, self.capacity = Grid(**fields), phi_buf, cap
        for f in GRID_FIELDS:
            getattr(self.buf, f)[self.n:self.n + p] = getattr(new, f)
        self.phi_buf[self.n:self.n + p] = phi
        self.n += p
        self.perm = np.argsort(self.buf.tau[:self.n], kind="stable")

    @property
    def tau(self) -> np.ndarray:
        """Deadlines, ascending."""
        return self.buf.tau[self.perm]

    @property
    def phi(self) -> np.ndarray:
        """Q τ + D_LP(τ) of the full box at each deadline, ascending τ."""
        return self.phi_buf[self.perm]

    def take(self, idx: Any) -> Grid:
        """Rows at positions ``idx`` of the ascending order."""
        return self.buf.take(self.perm[idx])

    def rows(self) -> Grid:
        """All rows, in insertion order (views)."""
        return self.buf.take(slice(0, self.n))


@dataclass
class LPRelaxation:
    """The LP relaxation (= Lagrangian dual) of the knapsack on a box at each deadline of a grid.
    """

    value: np.ndarray      # (P,): D_LP (+inf where even the box's lowest levels do not fit)
    nu: np.ndarray         # (P,): its multiplier on bandwidth (the break item's ratio; 0 if none)
    taken: np.ndarray      # (P, n): items taken whole
    brk: np.ndarray        # (P,): position of the fractional (break) item
    has_break: np.ndarray  # (P,)
    resid: np.ndarray      # (P,): band left above the box's lowest levels
    elig: np.ndarray       # (n,): items inside the box (unsorted item order)
