"""Closed-form optimality-gap models (spec 03). May import :mod:`fedopt`, never solvers."""

from fedopt.gap_models.airfl import TERM_NAMES, AirFLGap, GapConstants, RankTruncation
from fedopt.gap_models.factor_error import factor_covariance, factor_error_terms
from fedopt.gap_models.tsfa import TSFA_TERM_NAMES, TSFABound, TSFAConstants, dropped_energy

__all__ = ["AirFLGap", "GapConstants", "RankTruncation", "TERM_NAMES", "TSFABound",
           "TSFAConstants", "TSFA_TERM_NAMES", "dropped_energy", "factor_covariance",
           "factor_error_terms"]
