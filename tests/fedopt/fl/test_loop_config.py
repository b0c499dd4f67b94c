"""Settings and generators of a federated run (fedopt.fl.config, spec 05 §2).

Oracles: bad settings are refused with the field named; the batch and noise generators follow
the documented seed sequences (the FedSGD oracle of test_loop.py and every resume rely on it).
"""

from __future__ import annotations

import numpy as np
import pytest

from fedopt.errors import InvalidArgumentError
from fedopt.fl.config import OPTIMIZERS, LoopConfig, client_rng, round_rng


@pytest.fixture
def seed(rng) -> int:
    return int(rng.integers(0, 2**31))


def test_bad_settings_are_refused_with_the_field_named():
    with pytest.raises(InvalidArgumentError, match="optimizer") as info:
        LoopConfig(optimizer="adam")
    assert all(name in str(info.value) for name in OPTIMIZERS)
    for bad in (0.0, -0.1, float("nan"), float("inf"), "fast"):
        with pytest.raises(InvalidArgumentError, match="lr"):
            LoopConfig(lr=bad)
    for field, bad in (("rounds", 0), ("local_steps", 0), ("batch_size", 2.5),
                       ("server_lr", 0.0), ("seed", -1), ("grad_clip", 0.0)):
        with pytest.raises(InvalidArgumentError, match=field):
            LoopConfig(**{field: bad})


def test_the_loop_module_re_exports_the_settings_and_the_run_file_names():
    import fedopt.fl.checkpoint as checkpoint
    import fedopt.fl.config as config
    import fedopt.fl.loop as loop

    for name in ("OPTIMIZERS", "LoopConfig", "client_rng", "round_rng"):
        assert getattr(loop, name) is getattr(config, name), name
    for name in ("CHECKPOINT_NAME", "LOG_NAME", "SUMMARY_NAME", "check_out_dir"):
        assert getattr(loop, name) is getattr(checkpoint, name), name
    assert set(loop.__all__) >= {"run_federated", "RunResult", "LoopConfig", "check_out_dir"}


def test_defaults_are_valid_and_round_trip_through_a_dict():
    cfg = LoopConfig()
    assert cfg.optimizer in OPTIMIZERS
    assert LoopConfig(**cfg.to_dict()) == cfg


def test_generators_follow_the_documented_seed_sequences(seed):
    """Batches of (t, k) come from SeedSequence(seed, (2, t, k)), noise of t from (3, t): the
    FedSGD oracle of test_loop.py and any resume rely on these being functions of
    (seed, t[, k]) only."""
    def draws(g):
        return g.integers(0, 2**62, size=4)

    for t, k in ((0, 0), (0, 2), (5, 1)):
        ref = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, t, k)))
        assert np.array_equal(draws(client_rng(seed, t, k)), draws(ref))
    ref = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, 4)))
    assert np.array_equal(draws(round_rng(seed, 4)), draws(ref))
    assert not np.array_equal(draws(client_rng(seed, 0, 1)), draws(client_rng(seed, 1, 0)))
    assert not np.array_equal(draws(round_rng(seed, 0)), draws(round_rng(seed + 1, 0)))
