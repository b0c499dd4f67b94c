"""The training recipe shared by validation and calibration (spec 05 §2): local steps, learning
rate, LoRA scale, the clients' data split, and the check that an instance describes the model
the loop trains.

One default per field: the dataclass fields of :class:`TrainingRecipe` are the defaults that
``fedopt validate`` and ``fedopt calibrate`` use (``ValidateSettings`` extends it).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, replace
from typing import Any

from fedopt.errors import InvalidArgumentError, PlanError
from fedopt.instance import Instance

__all__ = ["LORA_SCALINGS", "TESTBED_RECIPES", "TrainingRecipe", "check_model_layers",
           "loop_layers", "with_layers"]

#: how the LoRA scale α/r depends on the rank (:attr:`TrainingRecipe.lora_scaling`)
LORA_SCALINGS = ("rank-stabilized", "constant")

#: per testbed, the fields of :class:`TrainingRecipe` that differ from the defaults (the
#: defaults are ``pydoc-topics``'): measured on the testbed, see :class:`TrainingRecipe`
TESTBED_RECIPES: dict[str, dict[str, Any]] = {
    "pydoc-topics": {},
    "domain-shift": {"lr": 1.0, "lora_scaling": "constant", "alpha_scale": 1.0},
}


@dataclass(frozen=True)
class TrainingRecipe:
    """How clients train (loop settings default to the instance's ``learning``).

    Attributes
    ----------
    optimizer, lr, local_steps, batch_size
        Local training (None: the instance's ``learning.local_steps`` / ``batch_size``). lr 1.5:
        at 2.0 the rank-1 runs of FedSGD diverged on one seed in three (30 ideal rounds). ``lr``
        is SGD's; AdamW and SophiaG (local Fed-Sophia steps, and the server's step of
        over-the-air Sophia) take ``adamw_lr`` and ``sophia_lr`` (:meth:`learning_rate`): their
        steps are bounded per coordinate, so they need rates two orders smaller.
    mira_graph : {"task", "complete", "similarity"}
        MIRA's client graph (``LoopConfig.mira_graph``).
    grad_clip : float or None
        Clip of each local gradient's 2-norm. Typical norms are ≈ 0.1, so 1.0 only acts on a
        blow-up.
    eval_every, eval_batches
        Held-out evaluation cadence and size (batches of 64 windows).
    data_seed, concentration, task_mixing
        The client split (fixed across seeds: the instance's data shares); ``task_mixing`` is
        the non-IID knob of the ``domain-shift`` testbed (0: every client on its own task).
    model, target_modules
        A local Hugging Face model directory to fine-tune instead of the testbed's character
        model (the ``fedopt[hf]`` extra; :mod:`fedopt.fl.hf`: PEFT LoRA on ``target_modules``,
        default PEFT's for the model type; the testbed's client text re-tokenized with the
        model's tokenizer). None: the testbed's base model.
    alpha_scale, lora_scaling
        c in the LoRA α: ``"rank-stabilized"`` α = c·√r (the scale α/r = c/√r) or
        ``"constant"`` α = c·r (the scale α/r = c for every rank). On ``pydoc-topics`` at lr
        1.5–2, α = r made FedSGD diverge at large ranks, and c/√r was chosen. With FedSGD
        (E = 1) and B = 0 at the start, one step changes W by (α/r)²·lr·G·AᵀA ≈
        (α/r)²·lr·G·P_r/3 (P_r the projection onto the r rows of A): under c/√r the step shrinks
        like 1/√r and *smaller* ranks train faster at equal rounds (measured on
        ``domain-shift``: r = 4 best, r = 32 worst at lr 1.5, r = 1 best at lr 0.5), so the rank
        would act as a learning rate. Under a constant scale the step is c²·lr·G·P_r/3: a
        larger rank captures more of the gradient at the same step size, which is the setting
        of the gap model (ε(r) falls with r; the per-entry update scale does not depend on r,
        so the aggregation error grows like q(r)). ``domain-shift`` uses it (lr 1.0, c = 1).
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
    task_mixing: float = 0.0
    lora_scaling: str = "rank-stabilized"
    adamw_lr: float = 0.01
    sophia_lr: float = 0.01
    mira_graph: str = "task"
    model: str | None = None
    target_modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self._check_model()
        if not (self.alpha_scale > 0 and math.isfinite(self.alpha_scale)):
            raise InvalidArgumentError(
                f"alpha_scale: got {self.alpha_scale!r}, must be a positive number")
        if self.lora_scaling not in LORA_SCALINGS:
            raise InvalidArgumentError(
                f"lora_scaling: got {self.lora_scaling!r}, must be one of "
                f"{', '.join(LORA_SCALINGS)}")
        if not (isinstance(self.task_mixing, (int, float)) and 0 <= self.task_mixing <= 1):
            raise InvalidArgumentError(
                f"task_mixing: got {self.task_mixing!r}, must be a number in [0, 1]")

    def _check_model(self) -> None:
        """``model`` as a path string; ``target_modules`` as a tuple of names (a comma-separated
        string is split)."""
        if self.model is not None:
            if not isinstance(self.model, (str, os.PathLike)) or not str(self.model):
                raise InvalidArgumentError(
                    f"model: got {self.model!r}, must be a Hugging Face model directory")
            object.__setattr__(self, "model", str(self.model))
        names = self.target_modules
        if names is None:
            return
        names = tuple(x.strip() for x in names.split(",")) if isinstance(names, str) \
            else tuple(names)
        if not names or not all(isinstance(x, str) and x for x in names):
            raise InvalidArgumentError(
                f"target_modules: got {self.target_modules!r}, must be module names such as "
                f"('q_proj', 'v_proj')")
        if self.model is None:
            raise InvalidArgumentError(
                f"target_modules (--target): got {names!r} without model (--model); they name "
                f"modules of a Hugging Face model: set model to its directory")
        object.__setattr__(self, "target_modules", names)

    @classmethod
    def for_testbed(cls, testbed: str, **changes: Any) -> Any:
        """The recipe a testbed trains with (:data:`TESTBED_RECIPES`), with ``changes``."""
        if testbed not in TESTBED_RECIPES:
            raise InvalidArgumentError(
                f"testbed: got {testbed!r}, must be one of {', '.join(TESTBED_RECIPES)}")
        return cls(**{**TESTBED_RECIPES[testbed], **changes})

    def learning_rate(self, algorithm: str = "fedavg") -> float:
        """The local (or, for ``ota-sophia``, the server's) learning rate of ``algorithm`` with
        this recipe's optimizer."""
        if algorithm == "ota-sophia" or self.optimizer == "sophia":
            return self.sophia_lr
        return self.adamw_lr if self.optimizer == "adamw" else self.lr

    def alpha(self, rank: int) -> float:
        """The LoRA α at ``rank`` (``alpha_scale`` and ``lora_scaling``)."""
        if self.lora_scaling == "constant":
            return self.alpha_scale * rank
        return self.alpha_scale * math.sqrt(rank)

    def loop_config(self, instance: Instance, *, rounds: int, seed: int, **changes: Any) -> Any:
        """The :class:`~fedopt.fl.loop.LoopConfig` of a run of ``rounds`` rounds."""
        from fedopt.fl.loop import LoopConfig

        settings = dict(
            rounds=rounds, seed=int(seed), optimizer=self.optimizer,
            lr=self.learning_rate(changes.get("algorithm", instance.algorithm)),
            algorithm=instance.algorithm,
            local_steps=self.local_steps or instance.learning.local_steps,
            batch_size=self.batch_size or instance.learning.batch_size,
            grad_clip=self.grad_clip, eval_every=self.eval_every, eval_batches=self.eval_batches,
            mira_graph=self.mira_graph)
        return LoopConfig(**{**settings, **changes})

    def lora_model(self, base: Any, rank: int, seed: int,
                   algorithm: str = "fedavg") -> tuple[Any, dict[str, Any]]:
        """A copy of the base model with LoRA at ``rank`` (α = :meth:`alpha`, A drawn from
        ``seed``) on its attention projections (and, for ``pwff``, its private part on the MLP
        layers too); returns (model, adapters)."""
        import torch

        from fedopt.fl.hf import HFBase, apply_peft_lora
        from fedopt.fl.lora import DEFAULT_TARGETS, apply_lora

        model = copy.deepcopy(base.model)
        if isinstance(base, HFBase):
            if algorithm == "pwff":
                raise InvalidArgumentError(_NO_PWFF)
            mods = apply_peft_lora(model, rank, alpha=self.alpha(rank),
                                   target=self.target_modules,
                                   generator=torch.Generator().manual_seed(int(seed)))
            return model, mods
        targets = DEFAULT_TARGETS + (("fc1", "fc2") if algorithm == "pwff" else ())
        mods = apply_lora(model, rank, alpha=self.alpha(rank), target=targets,
                          generator=torch.Generator().manual_seed(int(seed)))
        return model, mods

    def client_data(self, instance: Instance | int) -> Any:
        """The clients' training and held-out text on the instance's testbed (an int: that many
        clients on ``pydoc-topics``), one client per device."""
        from fedopt.fl.testbed import get_testbed

        if isinstance(instance, Instance):
            bed, n = get_testbed(instance.learning.testbed), instance.n_devices
        else:
            bed, n = get_testbed("pydoc-topics"), int(instance)
        data = bed.client_data(n, concentration=self.concentration, seed=self.data_seed,
                               task_mixing=self.task_mixing)
        if self.model is None:
            return data
        from fedopt.fl.hf import load_tokenizer
        from fedopt.fl.hf_data import tokenize_data

        return tokenize_data(data, load_tokenizer(self.model))

    def base_eval_loss(self, base: Any, data: Any) -> float:
        """The base model's loss on ``data``'s global held-out set, evaluated as the loop
        evaluates (``eval_batches``; on the recipe's ``device`` if it has one): a LoRA model at
        initialization is the base model, so this is every run's round-0 loss."""
        from fedopt.fl.training import evaluate_loss

        model = copy.deepcopy(base.model).to(getattr(self, "device", "cpu"))
        return float(evaluate_loss(model, data.global_heldout, model.seq_len,
                                   max_batches=self.eval_batches).loss)

    def base_model(self, instance: Instance) -> Any:
        """The pre-trained base model of the instance's testbed, or the Hugging Face model of
        ``model`` (a :class:`~fedopt.fl.hf.HFBase`)."""
        if self.model is not None:
            from fedopt.fl.hf import load_hf_base

            return load_hf_base(self.model)
        from fedopt.fl.testbed import get_testbed

        return get_testbed(instance.learning.testbed).base_model()

    def model_layers(self, instance: Instance) -> list[dict[str, Any]]:
        """The LoRA layers (``lora.layers``) of the model the loop trains for ``instance``."""
        if self.model is None:
            return loop_layers(instance.learning.testbed)
        from fedopt.fl.hf import model_layers

        return model_layers(self.model, self.target_modules)

    def loop_instance(self, instance: Instance, *, adopt: bool = False) -> tuple[Instance, bool]:
        """``instance`` checked against the model the loop trains (:func:`check_model_layers`);
        with a Hugging Face ``model`` and ``adopt``, an instance whose ``lora.layers`` differ
        gets the model's (:func:`with_layers`: q(r) is then the payload actually sent). Returns
        (instance, whether its layers were replaced)."""
        if self.model is None:
            check_model_layers(instance)
            return instance, False
        layers = self.model_layers(instance)
        if adopt and _shapes(layers) != _shapes([asdict(x) for x in instance.lora.layers]):
            return with_layers(instance, layers), True
        check_model_layers(instance, layers)
        return instance, False

    def with_model(self, model: str | os.PathLike | None) -> Any:
        """These settings with ``model`` (a Hugging Face model directory) if given; refused when
        they already name another."""
        if model is None or self.model == str(model):
            return self
        if self.model is not None:
            raise InvalidArgumentError(
                f"model: got {str(model)!r} and settings.model {self.model!r}; give one")
        return replace(self, model=str(model))

    def check_algorithm(self, algorithm: str) -> None:
        """Refuse an algorithm the model cannot run (``pwff`` with a Hugging Face model)."""
        if self.model is not None and algorithm == "pwff":
            raise InvalidArgumentError(_NO_PWFF)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["target_modules"] is not None:
            d["target_modules"] = list(d["target_modules"])
        return d


_NO_PWFF = ("algorithm: 'pwff' scores clients with the character testbeds' reward models, "
            "which a Hugging Face model's tokens do not fit; with model use fedavg, ota-sophia, "
            "ffa, fedsa, local or mira")


def _shapes(layers: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
    return sorted((int(d["d_out"]), int(d["d_in"]), int(d["count"])) for d in layers)


def with_layers(instance: Instance, layers: list[dict[str, Any]]) -> Instance:
    """``instance`` with ``lora.layers`` = ``layers`` (re-validated); candidate ranks above the
    new layers' largest rank min(d_out, d_in) are dropped."""
    top = min(min(int(d["d_out"]), int(d["d_in"])) for d in layers)
    ranks = [r for r in instance.lora.ranks if r <= top]
    if not ranks:
        raise PlanError(
            f"lora.ranks: every candidate rank {list(instance.lora.ranks)} of instance "
            f"{instance.name!r} exceeds {top}, the largest rank of the model's layers")
    d = instance.to_dict()
    d["lora"]["layers"] = [dict(x) for x in layers]
    d["lora"]["ranks"] = ranks
    return Instance.from_dict(d, source=instance.name)


def loop_layers(testbed: str = "pydoc-topics") -> list[dict[str, Any]]:
    """The LoRA layer list (``lora.layers``) of the model the loop trains on ``testbed``."""
    import torch

    from fedopt.fl.lora import apply_lora, lora_layer_spec
    from fedopt.fl.testbed import get_testbed

    model = copy.deepcopy(get_testbed(testbed).base_model().model)
    return lora_layer_spec(apply_lora(model, 1, generator=torch.Generator().manual_seed(0)))


def check_model_layers(instance: Instance, layers: list[dict[str, Any]] | None = None) -> None:
    """Raise :class:`PlanError` unless the instance's LoRA layers are ``layers`` (default: those
    the loop trains on the instance's testbed; otherwise every prediction would describe another
    model's payload q(r)). Which factors travel (``lora.factors``) follows the instance's
    algorithm, which the loop honours."""
    hf = layers is not None
    want = _shapes(loop_layers(instance.learning.testbed) if layers is None else layers)
    have = _shapes([asdict(x) for x in instance.lora.layers])
    if want != have:
        shown = ", ".join(f"{c} x ({o} x {i})" for o, i, c in want)
        hint = ("Write an instance with the model's layers with `fedopt instance layers --model "
                "DIR -o FILE` and plan on it" if hf else
                "Use the 'char-tasks' or 'tiny-char' preset, or copy its lora section into your "
                "instance")
        raise PlanError(
            f"lora.layers: instance {instance.name!r} describes "
            f"{', '.join(f'{c} x ({o} x {i})' for o, i, c in have)}, but the validation loop's "
            f"model adapts {shown}; predictions must describe the model actually trained. "
            f"{hint}")
