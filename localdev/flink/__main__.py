"""`python -m localdev.flink install|start|stop|status`: see cli.py."""

from localdev.flink.cli import main
from plumbing import cli

cli.run(main)
