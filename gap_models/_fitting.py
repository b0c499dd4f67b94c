"""The least-squares machinery of :mod:`fedopt.gap_models.calibration`: the fit records
(:class:`Fit`, :class:`UpdateScaleFit`) and the private helpers the fits share (argument checks,
the fit through the origin, the curvature test with its Student-t table).

Private: import the public names from :mod:`fedopt.gap_models.calibration`, which re-exports
them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError

__all__ = ["CURVATURE_SHARE", "Fit", "UpdateScaleFit"]

#: the noise fit reports curvature when a quadratic term is significant (at 5 %: about 2
#: standard errors) and worth at least this share of the largest measured loss rise
CURVATURE_SHARE = 0.1


def _num(x: float) -> float | None:
    """JSON-safe float: NaN and ±inf become None."""
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Fit:
    """One fitted (or measured) constant with its uncertainty.

    Attributes
    ----------
    value : float
        The constant to use (``estimate``, clipped or floored where the model requires).
    std_error : float
        Standard error of ``estimate`` (NaN with no degrees of freedom left).
    residuals : tuple of float
        Data − model at ``estimate``, one per point of ``x``/``y``, in the fit's space.
    r_squared : float
        Share of the data's variation the model explains: centered for the power law (it has
        an intercept), uncentered (1 − Σres²/Σy²) for the fits through the origin; NaN where
        the data do not vary.
    n : int
        Number of points fitted.
    estimate : float
        The unconstrained least-squares estimate.
    x, y : tuple of float
        The points fitted (regressor, response), in the order of ``residuals``.
    curvature : bool or None
        Noise-gain fit only: whether the rise bends away from a line (None: not testable, fewer
        than 3 distinct error levels or no degree of freedom).
    warning : str or None
        What a reader should know (a clipped value, curvature, too few points).
    """

    value: float
    std_error: float
    residuals: tuple[float, ...]
    r_squared: float
    n: int
    estimate: float
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    curvature: bool | None = None
    warning: str | None = None

    @property
    def rms(self) -> float:
        """Root mean square of the residuals (NaN without points)."""
        res = np.asarray(self.residuals, dtype=float)
        return float(np.sqrt(np.mean(res**2))) if res.size else float("nan")

    @property
    def clipped(self) -> bool:
        """Whether ``value`` differs from the least-squares ``estimate``."""
        return self.value != self.estimate

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping (NaN → None)."""
        return {"value": _num(self.value), "std_error": _num(self.std_error),
                "estimate": _num(self.estimate), "r_squared": _num(self.r_squared),
                "rms": _num(self.rms), "n": self.n,
                "residuals": [_num(r) for r in self.residuals],
                "x": [_num(v) for v in self.x], "y": [_num(v) for v in self.y],
                "curvature": self.curvature, "warning": self.warning}


@dataclass(frozen=True)
class UpdateScaleFit:
    """The power law v(r) = ``scale`` · r^(−β), β = ``exponent.value``.

    ``exponent`` is the :class:`Fit` of β (x = log r, y = log v, residuals in log v);
    ``scale`` is v at rank 1, the least-squares intercept given the (possibly clipped) β, and
    ``scale_std_error`` its standard error by the delta method (v · se(log v)).
    """

    scale: float
    scale_std_error: float
    exponent: Fit

    def to_dict(self) -> dict[str, Any]:
        return {"scale": _num(self.scale), "scale_std_error": _num(self.scale_std_error),
                "exponent": self.exponent.to_dict()}


def _vector(name: str, values: Any, *, positive: bool = False) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name}: expected a list of numbers, got {values!r}"
                                   ) from None
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise InvalidArgumentError(
            f"{name}: expected a non-empty 1-D list of finite numbers, got {values!r}")
    if positive and np.any(a <= 0):
        raise InvalidArgumentError(f"{name}: every value must be > 0, got {a.tolist()}")
    return a


def _same_length(names: tuple[str, str], a: np.ndarray, b: np.ndarray) -> None:
    if a.size != b.size:
        raise InvalidArgumentError(
            f"{names[0]} and {names[1]}: got {a.size} and {b.size} values, need one each per "
            f"pilot")


def _r_squared(ss_res: float, ss_tot: float) -> float:
    return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


def _through_origin(x: np.ndarray, y: np.ndarray, shared_reference: bool = False
                    ) -> tuple[float, np.ndarray, float, float]:
    """y = s · x by least squares: (s, residuals, se(s), uncentered R²).

    The standard error assumes independent errors, se² = Σres²/(n − 1)/Σx²; with
    ``shared_reference`` the points are differences y_i = F_i − F_0 to one reference, whose
    error e_0 they all share (errors e_i − e_0, e iid of variance σ²): then Var(s) =
    σ² (Σx² + (Σx)²)/(Σx²)² and E Σres² = σ² (2n − 1 − (Σx)²/Σx²), which gives σ̂²."""
    sxx = float(x @ x)
    s = float(x @ y) / sxx
    res = y - s * x
    ss_res = float(res @ res)
    if x.size < 2:
        se = float("nan")
    elif shared_reference:
        sx = float(np.sum(x))
        sigma2 = ss_res / (2 * x.size - 1 - sx**2 / sxx)
        se = math.sqrt(sigma2 * (sxx + sx**2)) / sxx
    else:
        se = math.sqrt(ss_res / (x.size - 1) / sxx)
    return s, res, se, _r_squared(ss_res, float(y @ y))


#: two-sided 95 % quantiles of Student's t by degrees of freedom (1..30; 1.96 beyond)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _t975(dof: int) -> float:
    return _T975[dof - 1] if dof <= len(_T975) else 1.96


def _curvature(d: np.ndarray, y: np.ndarray) -> tuple[bool | None, float]:
    """Fit y = a D + b D² (through the origin): whether b is significant (|b| > t se(b), t the
    two-sided 95 % quantile of Student's t with n − 2 degrees of freedom: ≈ 2 for many points,
    12.7 for three) and material (|b| D_max² ≥ CURVATURE_SHARE · max |y|), and b. None: not
    testable."""
    if np.unique(d).size < 3 or d.size < 3:
        return None, float("nan")
    d_max = float(np.max(d))
    u = d / d_max  # well conditioned whatever the units of D
    design = np.column_stack([u, u**2])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    res = y - design @ coef
    s2 = float(res @ res) / (d.size - 2)
    se_b = math.sqrt(s2 * float(np.linalg.inv(design.T @ design)[1, 1]))
    b = float(coef[1])  # the quadratic term's rise at D_max
    scale = float(np.max(np.abs(y)))
    material = scale > 0 and abs(b) >= CURVATURE_SHARE * scale
    return bool(material and abs(b) > _t975(d.size - 2) * se_b), b / d_max**2
