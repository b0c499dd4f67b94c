"""Exception hierarchy of fedopt.

Every error a user can trigger with bad input derives from :class:`FedOptError`, so that the
CLI can print it without a traceback. Messages name the field, the offending value and what
would be valid (see STYLE.md, "Errors tell the user what to do").
"""

from __future__ import annotations

__all__ = [
    "FedOptError",
    "InvalidInstanceError",
    "InvalidSweepError",
    "InvalidArgumentError",
    "ChannelFileError",
    "PlanError",
    "CheckpointError",
    "CorpusError",
    "InfeasibleError",
    "SolverError",
    "MissingDependencyError",
]


class FedOptError(Exception):
    """Base class of every error raised on purpose by fedopt."""


class InvalidInstanceError(FedOptError, ValueError):
    """A network-design instance (file or object) violates the schema of spec 01 §1.

    Parameters
    ----------
    errors
        One message per problem found, each naming the field path, the value and what is allowed.
    source
        Where the instance came from (a file name or preset), shown in the message.
    """

    def __init__(self, errors: list[str] | str, source: str | None = None):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        self.source = source
        where = f" in {source}" if source else ""
        if len(self.errors) == 1:
            msg = f"invalid instance{where}: {self.errors[0]}"
        else:
            lines = "\n".join(f"  - {e}" for e in self.errors)
            msg = f"invalid instance{where} ({len(self.errors)} problems):\n{lines}"
        super().__init__(msg)


class InvalidSweepError(FedOptError, ValueError):
    """A sweep file (``fedopt sweep SPEC.yaml``) is malformed, or one of its cells' instances
    is invalid.

    Parameters
    ----------
    errors
        One message per problem, each naming the key or field path, the value and what is
        allowed.
    source
        The sweep file, shown in the message.
    """

    def __init__(self, errors: list[str] | str, source: str | None = None):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        self.source = source
        where = f" in {source}" if source else ""
        if len(self.errors) == 1:
            msg = f"invalid sweep{where}: {self.errors[0]}"
        else:
            shown = self.errors[:20]
            more = len(self.errors) - len(shown)
            lines = "\n".join(f"  - {e}" for e in shown)
            tail = f"\n  ... and {more} more" if more else ""
            msg = f"invalid sweep{where} ({len(self.errors)} problems):\n{lines}{tail}"
        super().__init__(msg)


class InvalidArgumentError(FedOptError, ValueError):
    """A function argument (seed, round, rank, ...) is out of its valid range."""


class ChannelFileError(FedOptError, ValueError):
    """A channel array or ``.npz`` channel file is malformed or disagrees with its instance."""


class PlanError(FedOptError, ValueError):
    """A plan (file or object) is malformed or disagrees with its instance."""


class InfeasibleError(FedOptError):
    """The problem has no solution under the given data (e.g. a device in a deep fade)."""


class SolverError(FedOptError, RuntimeError):
    """A numerical solver failed (e.g. cvxpy returned a status other than optimal)."""


class CheckpointError(FedOptError, ValueError):
    """A model checkpoint is missing, unreadable, or not a fedopt character-model checkpoint."""


class CorpusError(FedOptError, ValueError):
    """The shipped text-corpus snapshot is missing, corrupt (checksum mismatch) or of another
    version than this fedopt expects."""


class MissingDependencyError(FedOptError, ImportError):
    """An optional extra that the input asks for is not installed (e.g. ``channel.model:
    sionna`` without ``pip install "fedopt[sionna]"``); the message names the extra."""
