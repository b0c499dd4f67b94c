"""Closed-form optimality-gap models (spec 03)."""
