"""The deterministic-algorithms guard shared by pre-training and the loop (fedopt.fl.training);
pre-training and evaluation themselves: test_charmodel.py."""

from __future__ import annotations

import pytest
import torch

from fedopt.fl.training import deterministic


@pytest.mark.parametrize("training", [True, False])
def test_deterministic_restores_the_setting_and_the_mode_even_on_error(training):
    model = torch.nn.Linear(2, 2).train(training)
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    with pytest.raises(RuntimeError, match="inside"):
        with deterministic(model):
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()
            model.train(not training)
            raise RuntimeError("inside")
    assert (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled()) == before
    assert model.training is training
