# PYTHON_ARGCOMPLETE_OK: the marker argcomplete's global completion looks for
"""The `snapledger` command line, one module per noun."""

from api.cli.main import main, parser

__all__ = ["main", "parser"]
