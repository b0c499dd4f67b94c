"""The ``fedopt`` command line (typer). Heavy libraries are imported inside commands."""
