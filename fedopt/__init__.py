"""fedopt: plan federated LoRA fine-tuning over wireless networks.

The domain layer: network-design instances, channels, AirComp physics and plans. Solvers live
in :mod:`solvers`, gap models in :mod:`gap_models`, the command line in :mod:`cli`.
"""

from fedopt.channel import Channel, draw_channel
from fedopt.errors import (
    ChannelFileError,
    CheckpointError,
    FedOptError,
    InfeasibleError,
    InvalidArgumentError,
    InvalidInstanceError,
    PlanError,
    SolverError,
)
from fedopt.instance import SCHEMA_VERSION, Instance, list_presets, load_instance
from fedopt.plan import Plan

__version__ = "0.1.0"

__all__ = [
    "Channel",
    "ChannelFileError",
    "CheckpointError",
    "FedOptError",
    "InfeasibleError",
    "Instance",
    "InvalidArgumentError",
    "InvalidInstanceError",
    "Plan",
    "PlanError",
    "SCHEMA_VERSION",
    "SolverError",
    "draw_channel",
    "list_presets",
    "load_instance",
]
