"""`python -m localdev.flink install|start|stop|status`: see cli.py."""

import sys

from localdev.flink.cli import main

sys.exit(main())
