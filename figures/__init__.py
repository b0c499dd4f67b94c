"""Figures: one module per figure with ``compute(config) -> data`` and ``plot(data)``.

The first figures (aggregation MSE vs N_r and vs power, gap vs rank, training curves) arrive
with the FL-loop issue; this package may import ``solvers`` and ``fedopt``, never the reverse.
"""
