"""Entry point of the ``fedopt`` command."""

from __future__ import annotations

import typer
import typer.core

from fedopt.cli import (
    calibrate_cmd,
    channel_cmd,
    figures_cmd,
    gap_cmd,
    instance_cmd,
    solve_cmd,
    sweep_cmd,
    tsfa_cmd,
    validate_cmd,
)


def _flag_type_rich(self, ctx):  # noqa: ANN001 - typer's signature
    """A flag takes no value: show no type for it (typer would print ``<bool>``)."""
    if self.is_flag and not self.count:
        return None
    return _option_type_rich(self, ctx)


# typer >= 0.21 renders a flag's type as <bool>; older releases (which Flower pins) show none
_option_type_rich = getattr(typer.core.TyperOption, "display_type_rich", None)
if _option_type_rich is not None:
    typer.core.TyperOption.display_type_rich = _flag_type_rich

app = typer.Typer(
    name="fedopt",
    help="Plan federated LoRA fine-tuning over wireless networks (rank, streams, AirComp "
    "beamforming, digital uplinks).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(instance_cmd.app, name="instance")
app.add_typer(channel_cmd.app, name="channel")
app.command("solve")(solve_cmd.solve)
app.command("gap")(gap_cmd.gap)
app.command("tsfa-simulate")(tsfa_cmd.tsfa_simulate)
app.command("figures")(figures_cmd.figures)
app.command("validate")(validate_cmd.validate)
app.command("calibrate")(calibrate_cmd.calibrate)
app.command("sweep")(sweep_cmd.sweep)


def _print_version(value: bool) -> None:
    # eager callback: runs while parsing, so `fedopt --version` needs no command
    if value:
        from importlib.metadata import version as _v

        typer.echo(f"fedopt {_v('fedopt')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
