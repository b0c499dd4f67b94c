"""``fedopt calibrate``: measure the gap model's update scale and spectrum with pilot runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedopt.cli._common import OutputFormat, print_json, user_errors


def calibrate(
    source: Annotated[str, typer.Argument(help="Instance file or preset name (its LoRA layers "
                                          "must be the loop model's, as in tiny-char).")]
    = "tiny-char",
    rounds: Annotated[int, typer.Option("--rounds", "-n", min=1,
                                        help="Rounds of each pilot run.")] = 20,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the pilot runs.")] = 0,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Write the calibrated instance (.yaml/.json).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output.")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
    = OutputFormat.text,
) -> None:
    """Run three short pilot runs of the FL loop (error-free at a small and at the largest rank,
    then the largest with injected aggregation error) and fit the update scale v(r) = v r^(-β),
    the singular-value spectrum of the learned update, the smoothness L_s and the noise gain
    (spec 03 §4); optionally write the instance with these constants."""
    with user_errors():
        from fedopt.errors import InvalidArgumentError
        from fedopt.instance import load_instance
        from fedopt.solvers.validation import calibrate as run

        if output is not None and output.exists() and not force:
            raise InvalidArgumentError(f"--output: {output} exists; pass --force to overwrite")
        cal = run(load_instance(source), rounds=rounds, seed=seed)
        if output is not None:
            cal.instance.save(output)
        if fmt is OutputFormat.json:
            print_json({**cal.to_dict(), "instance": cal.instance.name,
                        "output": None if output is None else str(output)})
            return
        s = cal.spectrum_values
        lines = [
            f"update scale   v(r) = {cal.update_scale:.4g} · r^(-{cal.update_scale_exponent:.3f})",
            "spectrum       " + ", ".join(f"{x:.3g}" for x in s[:8])
            + (f", … ({len(s)} values)" if len(s) > 8 else ""),
        ]
        for p in cal.measurements["pilots"]:
            lines.append(f"pilot r = {p['rank']:<3d}  v = {p['update_scale']:.4g}, eval loss "
                         f"{p['final_eval_loss']:.4f}, {p['wall_s']:.0f} s")
        if output is not None:
            lines.append(f"calibrated instance written to {output}")
        typer.echo("\n".join(lines))
