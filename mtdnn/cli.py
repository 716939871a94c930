"""What the command-line tools share: the exit-code rule.

Every tool exits with 0 on success, 2 for bad input or usage (argparse's own errors included)
and 1 for a failure of the run (a download, a training, the machine). :func:`bad_input` ends a
tool the bad-input way with a one-line message, no traceback.
"""
import sys
from pathlib import Path
from typing import NoReturn

BAD_INPUT = 2
FAILURE = 1


def bad_input(message) -> NoReturn:
    """Print ``<tool>: error: message`` to stderr and exit with status 2."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(BAD_INPUT)
