"""fedopt: plan federated LoRA fine-tuning over wireless networks.

The domain layer: network-design instances, channels, AirComp physics and plans; the federated
LoRA loop lives in :mod:`fedopt.fl`, gap models in :mod:`fedopt.gap_models`, solvers in
:mod:`fedopt.solvers`, the command line in :mod:`fedopt.cli`, figures in :mod:`fedopt.figures`
(docs/architecture.md).

One installed import package. The repository keeps the design card's top-level folders
(``solvers/``, ``gap_models/``, ``cli/``, ``figures/`` beside ``fedopt/``); the installed
distribution maps them under ``fedopt`` (``[tool.setuptools] package-dir`` in pyproject.toml), so
site-packages gains ``fedopt`` alone and a user's own ``solvers.py`` cannot shadow ours. In a
source checkout (the tests run from the repository root, ``python -m benchmarks...``, an
editable install) the folders are not inside ``fedopt/``: :func:`_map_source_tree` then resolves
exactly these four names, ``fedopt.solvers`` → ``<repo>/solvers`` and so on, and nothing else.
"""


import sys as _sys
from pathlib import Path as _Path

from fedopt._lazy import lazy_attributes
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

__version__ = "0.1.0"

#: names served lazily (PEP 562): ``import fedopt.cli`` (``fedopt --help``) need not import
#: numpy; ``from fedopt import Instance`` imports the module that defines it on first use
_LAZY = {"Channel": "fedopt.channel", "draw_channel": "fedopt.channel",
         "SCHEMA_VERSION": "fedopt.instance", "Instance": "fedopt.instance",
         "list_presets": "fedopt.instance", "load_instance": "fedopt.instance",
         "Plan": "fedopt.plan"}


__getattr__ = lazy_attributes(__name__, _LAZY)

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


#: sub-packages that live in top-level folders of the repository
_MAPPED = ("solvers", "gap_models", "cli", "figures")


def _map_source_tree() -> None:
    here = _Path(__file__).resolve().parent
    if (here / "solvers").is_dir():  # the installed layout: nothing to map
        return
    import importlib.util

    root = here.parent

    class _SourceTreeFinder:
        """Finds ``fedopt.<name>`` for the names of :data:`_MAPPED` in ``<repo>/<name>``."""

        @staticmethod
        def find_spec(fullname, path=None, target=None):
            parent, _, name = fullname.partition(".")
            init = root / name / "__init__.py"
            if parent != "fedopt" or name not in _MAPPED or not init.is_file():
                return None
            return importlib.util.spec_from_file_location(
                fullname, init, submodule_search_locations=[str(root / name)])

    if not any(getattr(f, "__name__", "") == "_SourceTreeFinder" for f in _sys.meta_path):
        _sys.meta_path.append(_SourceTreeFinder)  # once, even if fedopt is reloaded


_map_source_tree()
