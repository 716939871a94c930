"""What the command-line tools share: the exit-code rule.

Every tool exits with 0 on success, 2 for bad input or usage (argparse's own errors included)
and 1 for a failure of the run (a download, a training, the machine). :func:`bad_input` ends a
tool the bad-input way with a one-line message, no traceback; :func:`run_tool` runs a tool's
``main`` under that rule.
"""
import sys
from pathlib import Path
from typing import NoReturn

from mtdnn.fileio import is_machine_error

BAD_INPUT = 2
FAILURE = 1


def bad_input(message) -> NoReturn:
    """Print ``<tool>: error: message`` to stderr and exit with status 2."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(BAD_INPUT)


def run_tool(main) -> NoReturn:
    """Run ``main()`` and exit with its status: a bad input (ValueError, KeyError, a missing
    file) ends with its message and status 2, no traceback; a fault of the machine or the
    output (disk full, I/O error, permissions) ends with status 1 and says so. Outputs are
    written atomically, so what exists is complete and an earlier result is never half
    replaced."""
    try:
        sys.exit(main())
    except (ValueError, KeyError, FileNotFoundError) as e:
        bad_input(e)
    except OSError as e:
        if not is_machine_error(e):
            raise
        print(f"{Path(sys.argv[0]).name}: error: {e}: a problem of the machine or the output folder, "
              f"not of the input; no result file was left half written (earlier ones are as they were). "
              f"Free space or fix the permissions and rerun", file=sys.stderr)
        sys.exit(FAILURE)
