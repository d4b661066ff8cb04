"""``python -m cmcr``: the same command line as ``cmcr``."""

from cmcr.cli import app

app(prog_name="cmcr")
