"""Unit conversions used throughout fedopt (all power in watts, all gains linear)."""

from __future__ import annotations

import numpy as np

__all__ = ["dbm_to_watt", "watt_to_dbm", "db_to_linear", "linear_to_db"]


def dbm_to_watt(p_dbm):
    """Convert dBm to watts: ``10 ** ((p_dbm - 30) / 10)``."""
    return 10.0 ** ((np.asarray(p_dbm, dtype=float) - 30.0) / 10.0)


def watt_to_dbm(p_w):
    """Convert watts to dBm."""
    return 10.0 * np.log10(np.asarray(p_w, dtype=float)) + 30.0


def db_to_linear(x_db):
    """Convert a power ratio in dB to a linear ratio."""
    return 10.0 ** (np.asarray(x_db, dtype=float) / 10.0)


def linear_to_db(x):
    """Convert a linear power ratio to dB."""
    return 10.0 * np.log10(np.asarray(x, dtype=float))
