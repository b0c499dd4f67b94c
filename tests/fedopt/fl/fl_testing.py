"""Builders shared by the federated-loop tests (imported as ``fl_testing``; not a test file).

Models are tiny (d_model 16, one block, seq_len 16) so every loop test runs in seconds on a CPU.
The stateful callables stand in for a warm-started beamformer solver and for TSFA's virtual
queue: their outputs depend on every earlier call, so a resume that lost their state shows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedopt.channel import draw_channel
from fedopt.fl.aggregators import AirCompAggregator, DigitalAggregator, IdealAggregator
from fedopt.fl.charmodel import CharTransformer
from fedopt.fl.data import make_federated_data
from fedopt.fl.loop import LoopConfig
from fedopt.fl.lora import apply_lora, lora_modules

TINY = dict(d_model=16, n_heads=2, n_layers=1, seq_len=16)
ALL_LINEAR = ("q", "k", "v", "proj", "fc1", "fc2")
HEAD_TOO = ("q", "k", "v", "proj", "head")


def tiny_model(fed, seed: int, rank: int = 2, target=None) -> CharTransformer:
    """A fresh tiny adapted model; the same ``seed`` gives the same base weights and adapters."""
    model = CharTransformer(fed.vocab.size, **TINY, generator=torch.Generator().manual_seed(seed))
    kw = {} if target is None else {"target": target}
    apply_lora(model, rank, generator=torch.Generator().manual_seed(seed + 1), **kw)
    return model


def loop_cfg(seed: int, **kw) -> LoopConfig:
    """Four short rounds (batch 4, lr 0.5, one held-out batch), overridable."""
    base = dict(rounds=4, batch_size=4, lr=0.5, seed=seed, eval_batches=1)
    base.update(kw)
    return LoopConfig(**base)


def core(history):
    """The records without ``wall_s`` (timing, the only field allowed to differ)."""
    return [{k: v for k, v in rec.items() if k != "wall_s"} for rec in history]


def random_beams(rng, inst, streams: int = 2) -> np.ndarray:
    """Generic complex receive beamformers (M, N_r, streams)."""
    m, nr = inst.n_subcarriers, inst.n_rx
    return rng.standard_normal((m, nr, streams)) + 1j * rng.standard_normal((m, nr, streams))


def aircomp_for(inst, channel_seed: int, beams, sigma2: float, mode: str = "exact", **kw):
    """An AirComp aggregator on ``inst``'s channel (fixed beams or a beamformer callable)."""
    bf = beams if callable(beams) else (lambda t, h: beams)
    return AirCompAggregator(lambda t: draw_channel(inst, channel_seed, t).H, bf,
                             inst.power_per_subcarrier_w, sigma2, mode=mode, **kw)


class WarmStartBeamformers:
    """Beamformers with a warm start: A_t = A_{t−1} + D_t (D_t fixed by (seed, t)), so every
    output depends on the previous call, as a warm-started solver's does."""

    def __init__(self, shape, seed: int):
        self.shape, self.seed = tuple(shape), int(seed)
        self.prev = np.full(self.shape, 2.0 + 1.0j)

    def describe(self):
        return {"type": "warm-start-test", "seed": self.seed, "shape": list(self.shape)}

    def state_dict(self):
        return {"prev": self.prev.copy()}

    def load_state_dict(self, state):
        self.prev = np.array(state["prev"], dtype=complex)

    def __call__(self, t, h):
        g = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(int(t),)))
        self.prev = self.prev + g.standard_normal(self.shape) + 1j * g.standard_normal(self.shape)
        return self.prev


class ForgetfulBeamformers(WarmStartBeamformers):
    """Same description, but ignores a restored state (to show the resume oracle can fail)."""

    def load_state_dict(self, state):
        pass


class QueueDecisions:
    """A decide callable with a virtual queue: kept depends on every earlier call."""

    def __init__(self, k: int, rank: int):
        self.k, self.rank, self.queue = k, rank, 0.0

    def describe(self):
        return {"type": "queue-test", "k": self.k, "rank": self.rank}

    def state_dict(self):
        return {"queue": np.array(self.queue)}

    def load_state_dict(self, state):
        self.queue = float(state["queue"])

    def __call__(self, t):
        self.queue += t + 1.0
        return {"kept": 1 + (int(self.queue) + np.arange(self.k)) % self.rank}


class ForgetfulDecisions(QueueDecisions):
    def load_state_dict(self, state):
        pass


def make_aggregator(kind: str, fed, inst, model, seed: int, forgetful: bool = False):
    """``ideal``, a warm-started ``aircomp`` or a queue-driven ``digital`` aggregator."""
    if kind == "ideal":
        return IdealAggregator()
    if kind == "aircomp":
        cls = ForgetfulBeamformers if forgetful else WarmStartBeamformers
        bf = cls((inst.n_subcarriers, inst.n_rx, 2), seed)
        return aircomp_for(inst, seed, bf, 100 * inst.noise_power_w)
    layers = [(m.d_out, m.d_in) for m in lora_modules(model).values()]
    cls = ForgetfulDecisions if forgetful else QueueDecisions
    return DigitalAggregator(layers, 2, cls(fed.n_clients, 2))


class Recorder(IdealAggregator):
    """The ideal aggregator, keeping every round's (K, payload) input: what travelled."""

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def aggregate(self, updates, weights, round_index, rng):
        self.seen.append(np.array(updates))
        return super().aggregate(updates, weights, round_index, rng)


# fixtures shared by the loop test files (import them by name into a test module)
@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine spinning
    worker threads slow these files ~4×; restored afterwards for the rest of the suite."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fed():
    """K = 3 clients (the ``small`` instance's K), 400 characters per topic."""
    return make_federated_data(3, max_chars_per_topic=400, seed=0)


@pytest.fixture
def seed(rng) -> int:
    return int(rng.integers(0, 2**31))
