"""The report of a calibration: :class:`Calibration`, the measured constants with their fits and
the calibrated instance, and how it is summarized and saved (:meth:`Calibration.summary_lines`,
:meth:`Calibration.save`). The pilot runs that produce it are
:func:`fedopt.solvers.validation.calibrate.calibrate`, which re-exports :class:`Calibration`.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.gap_models.calibration import Fit, UpdateScaleFit
from fedopt.instance import Instance

__all__ = ["Calibration"]


def _num(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _num(obj.item())
    return _num(obj)


def _fmt_list(values: Sequence[float], spec: str = "+.3g", limit: int = 12) -> str:
    shown = ", ".join(format(v, spec) for v in values[:limit])
    return shown + (f", … ({len(values)} values)" if len(values) > limit else "")


def _pm(value: float, se: float) -> str:
    """``value ± se``; without a standard error (as many points as parameters) ``± n/a``."""
    return f"{value:.4g} ± {se:.2g}" if math.isfinite(se) else f"{value:.4g} ± n/a"


def _r2(fit: Fit) -> str:
    return f"R² {fit.r_squared:.4f}" if math.isfinite(fit.r_squared) else "R² n/a"


@dataclass(frozen=True)
class Calibration:
    """Measured constants, their fits and the calibrated instance.

    Attributes
    ----------
    update_scale : float
        v at rank 1 (fitted), in update units.
    update_scale_exponent : float
        β of v(r) = v r^(−β) (clipped to [0, 1]).
    spectrum_values : tuple of float
        Mean sorted singular values of the learned ΔW (largest-rank ideal pilots).
    instance : Instance
        The input instance with these constants in its ``learning`` section.
    smoothness : float
        L_s fitted from the loss differences between the ranks and the ε-tails of the spectrum.
    noise_gain : float
        L_s λ / (2μ) fitted from the loss rises under injected aggregation error.
    measurements : dict
        ``pilots`` (per pilot: kind, rank, seed, noise level, v, injected error, client
        spread, final losses, loss rise, wall time), the resolved arguments, the recipe, the
        base model's loss.
    update_scale_fit, smoothness_fit, noise_gain_fit, grad_variance_fit
        The fits (:class:`~fedopt.gap_models.calibration.Fit`: residuals, standard error, R²);
        ``grad_variance_fit`` is None when not measurable (not SGD with one local step).
    initial_gap : float or None
        Δ0 measured (None: no pilot improved on the base model).
    warnings : tuple of str
        What a reader of the fits should know (curvature, clipping, diverged pilots).
    """

    update_scale: float
    update_scale_exponent: float
    spectrum_values: tuple[float, ...]
    instance: Instance
    smoothness: float = float("nan")
    noise_gain: float = float("nan")
    measurements: dict[str, Any] = field(default_factory=dict)
    update_scale_fit: UpdateScaleFit | None = None
    smoothness_fit: Fit | None = None
    noise_gain_fit: Fit | None = None
    grad_variance_fit: Fit | None = None
    initial_gap: float | None = None
    warnings: tuple[str, ...] = ()

    @property
    def grad_variance(self) -> float | None:
        """σ_g² measured, or None."""
        return None if self.grad_variance_fit is None else self.grad_variance_fit.value

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping (NaN → None): the constants, ``fits`` (each with value,
        std_error, estimate, r_squared, rms, n, residuals, points), ``warnings`` and
        ``measurements``."""
        learning = self.instance.learning
        fits = {"update_scale": self.update_scale_fit, "smoothness": self.smoothness_fit,
                "noise_gain": self.noise_gain_fit, "grad_variance": self.grad_variance_fit}
        return _json_safe({
            "update_scale": self.update_scale,
            "update_scale_exponent": self.update_scale_exponent,
            "smoothness": self.smoothness, "noise_gain": self.noise_gain,
            "grad_variance": self.grad_variance, "initial_gap": self.initial_gap,
            "step_size": learning.step_size, "pl_constant": learning.pl_constant,
            "spectrum_values": list(self.spectrum_values),
            "fits": {k: None if v is None else v.to_dict() for k, v in fits.items()},
            "warnings": list(self.warnings),
            "measurements": self.measurements})

    # -- the report ---------------------------------------------------------------------------
    def command(self) -> str:
        """The ``fedopt calibrate`` command line that repeats these pilots."""
        m = self.measurements
        return (f"fedopt calibrate {self.instance.name} --rounds {m['rounds']} --seeds "
                f"{','.join(map(str, m['seeds']))} --ranks {','.join(map(str, m['ranks']))} "
                f"--noise-levels {','.join(f'{x:g}' for x in m['noise_levels'])} "
                f"--noise-rank {m['noise_rank']}")

    def summary_lines(self) -> list[str]:
        """What was measured and every fit with its standard error, R² and residuals."""
        return [*self._setup_lines(), *self._fit_lines(), *self._measured_lines()]

    def _setup_lines(self) -> list[str]:
        """The instance, the recipe and the pilots run."""
        m = self.measurements
        s = m.get("settings", {})
        n_seeds = len(m["seeds"])
        return [
            f"instance {self.instance.name!r} on the {self.instance.learning.testbed} testbed; "
            f"{m['rounds']} rounds per pilot; seeds {', '.join(map(str, m['seeds']))}; "
            f"{s.get('optimizer', '?')} lr {s.get('lr', float('nan')):g}, batch "
            f"{m.get('batch_size')}, {m.get('local_steps')} local step(s)",
            f"pilots: error-free at ranks {', '.join(map(str, m['ranks']))} (x {n_seeds} seeds);"
            f" injected error of per-entry variance level x v_t² at levels "
            f"{', '.join(f'{x:g}' for x in m['noise_levels'])}, rank {m['noise_rank']} "
            f"(x {n_seeds} seeds); {len(m['pilots'])} pilots, {m.get('wall_s', 0.0):.0f} s",
            "± is one standard error (n/a: as many points as parameters); R² of the fit; "
            "residuals are measured − fitted",
        ]

    def _fit_lines(self) -> list[str]:
        """The update scale, the spectrum (and rank term), L_s and the noise gain."""
        m = self.measurements
        lines: list[str] = []
        u = self.update_scale_fit
        if u is not None:
            e = u.exponent
            unclipped = f", unclipped {e.estimate:.4g}" if e.clipped else ""
            lines += [
                f"update scale   v(r) = v r^(-β): v = {_pm(u.scale, u.scale_std_error)}, "
                f"β = {_pm(e.value, e.std_error)}{unclipped} ({_r2(e)} in log v, n = {e.n})",
                f"    residuals (log v): {_fmt_list(e.residuals)}"]
        spec = m.get("learned_update_spectrum", self.spectrum_values)
        lines.append(f"spectrum       {len(spec)} singular values of the learned update at r = "
                     f"{max(m['ranks'])} (mean over weights and seeds): "
                     f"{_fmt_list(spec, '.3g', 8)}")
        if m.get("truncation") == "loss-profile":
            lines.append("rank term      ε(r) written as the measured loss profile F(r) - "
                         f"F({max(m['ranks'])}) (effective spectrum "
                         f"{_fmt_list(self.spectrum_values, '.3g', 8)})")
        f = self.smoothness_fit
        if f is not None:
            lines += [
                f"smoothness     L_s = {_pm(f.value, f.std_error)} ({_r2(f)}, n = {f.n} ranks; "
                f"F(r) - F({max(m['ranks'])}) = (L_s/2)(tail(r) - tail({max(m['ranks'])})))",
                f"    residuals (nats, ranks {', '.join(map(str, m['ranks'][:-1]))}): "
                f"{_fmt_list(f.residuals)}"]
        g = self.noise_gain_fit
        if g is not None:
            curv = {None: "not tested (fewer than 3 error levels)", False: "none found",
                    True: "YES"}[g.curvature]
            lines += [
                f"noise gain     L_s λ/(2μ) = {_pm(g.value, g.std_error)} ({_r2(g)}, n = {g.n}; "
                f"rise = gain x D); curvature: {curv}",
                f"    residuals (nats, by seed then level): {_fmt_list(g.residuals)}"]
        return lines

    def _measured_lines(self) -> list[str]:
        """σ_g², Δ0, the constants written and the warnings."""
        m = self.measurements
        lines: list[str] = []
        v = self.grad_variance_fit
        if v is not None:
            lines.append(f"grad variance  σ_g² = {_pm(v.value, v.std_error)} per sample (update "
                         f"units, clients' spread at r = {max(m['ranks'])}, n = {v.n} rounds; "
                         f"an upper bound on non-IID clients)")
        else:
            lines.append("grad variance  σ_g² not measured (needs SGD with one local step); "
                         "kept")
        if self.initial_gap is not None:
            lines.append(f"initial gap    Δ0 = {self.initial_gap:.4g} (base loss "
                         f"{m['base_eval_loss']:.4f} - best pilot {m['best_eval_loss']:.4f}; a "
                         f"lower bound)")
        else:
            lines.append("initial gap    Δ0 not measured (no pilot improved on the base "
                         "model); kept")
        lrn = self.instance.learning
        lines.append(f"written        L_s = {lrn.smoothness:.4g}, λ = {lrn.step_size:.4g}, "
                     f"μ = {lrn.pl_constant:.4g} (λ ≤ 1/L_s, λμ ≤ 1/2), σ_g² = "
                     f"{lrn.grad_variance:.4g}, Δ0 = {lrn.initial_gap:.4g}")
        lines += [f"warning: {w}" for w in self.warnings]
        return lines

    def save(self, path: str | Path, *, command: str | None = None) -> Path:
        """Write :attr:`instance` atomically: ``.json`` as plain JSON, otherwise YAML headed by
        a comment block (the command, what was measured, every fit with its standard error, R²
        and residuals). It loads back with :func:`fedopt.instance.load_instance` to an
        instance equal to :attr:`instance`; the comments are for the reader, who may edit the
        values freely."""
        import yaml

        from fedopt.io import atomic_write_text

        path = Path(path)
        if path.suffix.lower() == ".json":
            return self.instance.save(path)
        header = [
            "Calibrated by `fedopt calibrate` (spec 03 §4): the gap-model constants of the",
            "`learning` section were fitted to pilot runs of the federated LoRA loop.",
            f"command: {command or self.command()}",
            "",
            *self.summary_lines(),
            "",
            "A plain instance file: edit any value; `fedopt.instance.load_instance` reads it",
            "(these comments are not read back).",
        ]
        body = yaml.safe_dump(self.instance.to_dict(), sort_keys=False,
                              default_flow_style=None, allow_unicode=True, width=95)
        body = body.replace(
            "\nlearning:\n",
            "\n# fitted by fedopt calibrate (see the header): smoothness, step_size, pl_constant,"
            "\n# update_scale(_exponent), spectrum_values, grad_variance, initial_gap\n"
            "learning:\n", 1)
        wrapped = [part for line in header  # the command stays one line, to copy
                   for part in ([line] if line.startswith("command:") else
                                textwrap.wrap(line, 93, subsequent_indent="    ") or [""])]
        text = "".join(f"# {line}".rstrip() + "\n" for line in wrapped) + body
        atomic_write_text(path, text)
        return path
