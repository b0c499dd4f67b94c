"""Shared fixtures: one seeded generator, the shipped presets, small instance builders.

All randomness in the suite goes through the ``rng`` fixture (``np.random.default_rng(SEED)``);
nothing seeds numpy's global state. Set ``FEDOPT_TEST_SEED`` to rerun the suite on other draws.
"""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Callable

import numpy as np
import pytest

from fedopt.instance import Instance, load_instance

SEED = int(os.environ.get("FEDOPT_TEST_SEED", "20240611"))

# A suite started in the background of a non-interactive shell (`pytest ... &`) inherits SIGINT
# ignored, and so would every command the Ctrl-C tests start (an ignored signal stays ignored
# across exec, and Python then installs no KeyboardInterrupt handler): give Ctrl-C back its
# meaning, as in a terminal. A handled signal is reset to the default in the children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


#: the default output folders of the CLI, created in the working directory: a test that makes
#: one there (instead of under its tmp_path) writes into the checkout, so the run fails
_DEFAULT_OUTS = ("calibrate-out", "validate-out", "figures-out", "sweep-out")
_OUTS_BEFORE = {name for name in _DEFAULT_OUTS if os.path.exists(name)}


def pytest_sessionfinish(session, exitstatus):
    made = [name for name in _DEFAULT_OUTS if os.path.exists(name) and name not in _OUTS_BEFORE]
    if made:
        print(f"\nerror: the tests wrote {', '.join(made)} into {os.getcwd()}; give those "
              "commands an --out under tmp_path or monkeypatch.chdir(tmp_path)")
        session.exitstatus = 1


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


def make_instance(base: Instance | dict, **sections: dict | None) -> Instance:
    """``base`` (an instance or a plain mapping) with some fields of some sections overridden
    (re-validated); ``None`` drops a section (its defaults apply)."""
    data = copy.deepcopy(base.to_dict() if isinstance(base, Instance) else dict(base))
    for section, changes in sections.items():
        if changes is None:
            data.pop(section, None)
        else:
            data.setdefault(section, {}).update(changes)
    return Instance.from_dict(data)


@pytest.fixture
def instance_builder() -> Callable[..., Instance]:
    """``instance_builder(base, server={"n_rx": 8}, ...)``: see :func:`make_instance`."""
    return make_instance


@pytest.fixture
def invoke():
    """``invoke(*args)``: run the ``fedopt`` CLI in-process; user errors must end in a clean
    exit (typer.Exit), never an uncaught exception or a traceback."""
    from typer.testing import CliRunner

    from fedopt.cli.main import app

    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert "Traceback" not in result.output
        return result

    return run


@pytest.fixture
def ctrl_c():
    """``ctrl_c(args, ready, timeout=300) -> (exit code, stderr)``: start ``fedopt ARGS`` in a
    process group of its own, wait until ``ready()`` says it is at work, and send SIGINT to the
    group, as a terminal's Ctrl-C does."""
    import subprocess
    import sys
    import time

    def run(args, ready, timeout=300):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "fedopt.cli.main", *map(str, args)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not ready():
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "the command never got to work"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGINT)
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode, stderr.decode()

    return run
