"""Entry point of the ``fedopt`` command."""

from __future__ import annotations

import typer

from cli import channel_cmd, instance_cmd

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


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        from importlib.metadata import version as _v

        typer.echo(f"fedopt {_v('fedopt')}")
        raise typer.Exit()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
