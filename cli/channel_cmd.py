"""``fedopt channel``: draw channel realizations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedopt.cli._common import ForceOpt, OutputFormat, check_output, print_json, user_errors

app = typer.Typer(help="Draw block-fading channel realizations (check one against its instance "
                  "with `fedopt instance validate INSTANCE --channel H.npz`).",
                  no_args_is_help=True)


@app.command("draw")
def draw(
    output: Annotated[Path, typer.Option("-o", "--output", help="Channel file to write (.npz).")],
    source: Annotated[str, typer.Argument(help="Instance file or preset name.")] = "default",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Channel seed.")] = 0,
    round_: Annotated[int, typer.Option("--round", min=0, help="Block-fading round t.")] = 0,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
    = OutputFormat.text,
    force: ForceOpt = False,
) -> None:
    """Draw round t of seed s for an instance and save it as .npz (plain arrays)."""
    with user_errors():
        check_output(output, force)
        from fedopt.channel import draw_channel
        from fedopt.instance import load_instance

        inst = load_instance(source)
        ch = draw_channel(inst, seed=seed, round=round_)
        ch.save(output)
        gain = ch.mean_gain() / inst.path_loss
        info = {"output": str(output), "shape": list(ch.shape), "seed": seed, "round": round_,
                "mean_gain_over_path_loss": float(gain.mean())}
        if fmt is OutputFormat.json:
            print_json(info)
        else:
            typer.echo(f"wrote {output}: H shape {ch.shape} (K, M, N_r, N_t), seed {seed}, "
                       f"round {round_}; mean |h|²/β = {gain.mean():.3f}")
