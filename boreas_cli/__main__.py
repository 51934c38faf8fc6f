"""Entry point of `boreas` and `python -m boreas_cli`."""

from __future__ import annotations

import os
import sys

from boreas_cli.app import app
from boreas_cli.errors import CliError, ExitCode
from boreas_cli.output import say


def main() -> None:
    try:
        app()
    except CliError as failure:
        say(f"boreas: {failure.message}")
        sys.exit(failure.code)
    except Exception as bug:
        if os.environ.get("BOREAS_DEBUG"):
            raise
        say(f"boreas: unexpected error ({type(bug).__name__}: {bug}); BOREAS_DEBUG=1 shows more")
        sys.exit(ExitCode.FAILURE)


if __name__ == "__main__":
    main()
