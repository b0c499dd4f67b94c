"""The training recipe shared by validation and calibration (spec 05 §2): local steps, learning
rate, LoRA scale, the clients' data split, and the check that an instance describes the model
the loop trains.

One default per field: the dataclass fields of :class:`TrainingRecipe` are the defaults that
``fedopt validate`` and ``fedopt calibrate`` use (``ValidateSettings`` extends it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

from fedopt.errors import InvalidArgumentError, PlanError
from fedopt.instance import Instance

__all__ = ["TrainingRecipe", "check_model_layers", "loop_layers"]


@dataclass(frozen=True)
class TrainingRecipe:
    """How clients train (loop settings default to the instance's ``learning``).

    Attributes
    ----------
    optimizer, lr, local_steps, batch_size
        Local training (None: the instance's ``learning.local_steps`` / ``batch_size``). lr 1.5:
        at 2.0 the rank-1 runs of FedSGD diverged on one seed in three (30 ideal rounds).
    grad_clip : float or None
        Clip of each local gradient's 2-norm. Typical norms are ≈ 0.1, so 1.0 only acts on a
        blow-up.
    eval_every, eval_batches
        Held-out evaluation cadence and size (batches of 64 windows).
    data_seed, concentration
        The client split (fixed across seeds: the instance's data shares).
    alpha_scale : float
        c in the LoRA α = c·√r, i.e. the scale α/r = c/√r (rank-stabilized LoRA). With α = r
        (scale 1) the size of an SGD step on W grows like r and FedSGD at a fixed learning rate
        diverges at large ranks (measured: r = 16 and 32 at lr 2); c/√r keeps the step size
        independent of r, so that methods with different ranks are compared at equal step.
    """

    optimizer: str = "sgd"
    lr: float = 1.5
    local_steps: int | None = None
    batch_size: int | None = None
    grad_clip: float | None = 1.0
    eval_every: int = 1
    eval_batches: int = 4
    data_seed: int = 0
    concentration: float = 1.0
    alpha_scale: float = 2.0

    def __post_init__(self) -> None:
        if not (self.alpha_scale > 0 and math.isfinite(self.alpha_scale)):
            raise InvalidArgumentError(
                f"alpha_scale: got {self.alpha_scale!r}, must be a positive number")

    def loop_config(self, instance: Instance, *, rounds: int, seed: int, **changes: Any) -> Any:
        """The :class:`~fedopt.fl.loop.LoopConfig` of a run of ``rounds`` rounds."""
        from fedopt.fl.loop import LoopConfig

        settings = dict(
            rounds=rounds, seed=int(seed), optimizer=self.optimizer, lr=self.lr,
            local_steps=self.local_steps or instance.learning.local_steps,
            batch_size=self.batch_size or instance.learning.batch_size,
            grad_clip=self.grad_clip, eval_every=self.eval_every, eval_batches=self.eval_batches)
        return LoopConfig(**{**settings, **changes})

    def lora_model(self, base: Any, rank: int, seed: int) -> tuple[Any, dict[str, Any]]:
        """A copy of the base model with LoRA at ``rank`` (α = ``alpha_scale``·√r, A drawn
        from ``seed``) on its attention projections; returns (model, adapters)."""
        import torch

        from fedopt.fl.lora import apply_lora

        model = copy.deepcopy(base.model)
        mods = apply_lora(model, rank, alpha=self.alpha_scale * math.sqrt(rank),
                          generator=torch.Generator().manual_seed(int(seed)))
        return model, mods

    def client_data(self, n_clients: int) -> Any:
        """The clients' training and held-out text (:func:`fedopt.fl.data.make_federated_data`)."""
        from fedopt.fl.data import make_federated_data

        return make_federated_data(n_clients, concentration=self.concentration,
                                   seed=self.data_seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def loop_layers() -> list[dict[str, Any]]:
    """The LoRA layer list (``lora.layers``) of the model the loop trains."""
    import torch

    from fedopt.fl.lora import apply_lora, lora_layer_spec
    from fedopt.fl.pretrained import base_model

    model = copy.deepcopy(base_model().model)
    return lora_layer_spec(apply_lora(model, 1, generator=torch.Generator().manual_seed(0)))


def check_model_layers(instance: Instance) -> None:
    """Raise :class:`PlanError` unless the instance's LoRA layers are those the loop trains
    (otherwise every prediction would describe another model's payload q(r))."""
    want = sorted((d["d_out"], d["d_in"], d["count"]) for d in loop_layers())
    have = sorted((layer.d_out, layer.d_in, layer.count) for layer in instance.lora.layers)
    if want != have or instance.lora.factors != "AB":
        shown = ", ".join(f"{c} x ({o} x {i})" for o, i, c in want)
        raise PlanError(
            f"lora.layers: instance {instance.name!r} describes "
            f"{', '.join(f'{c} x ({o} x {i})' for o, i, c in have)} (factors "
            f"{instance.lora.factors}), but the validation loop's model adapts {shown} (factors "
            f"AB); predictions must describe the model actually trained. Use the 'tiny-char' "
            f"preset, or copy its lora section into your instance")
