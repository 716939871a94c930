"""How the evaluation tools end: one place for their exit statuses and messages."""
from __future__ import annotations

import sys
from pathlib import Path

from mtdnn.fileio import is_machine_error


def run_tool(main, tool_file: str) -> None:
    """Run ``main()`` and exit: a bad input (ValueError, KeyError, a missing file) ends with its
    message and status 1, no traceback; a fault of the machine or the output (disk full, I/O
    error, permissions) ends with status 1 and says so: every output file is written
    atomically, so what exists is complete and an earlier result is never half replaced."""
    name = Path(tool_file).name
    try:
        sys.exit(main())
    except (ValueError, KeyError, FileNotFoundError) as e:  # bad input: the message, no traceback
        sys.exit(f"{name}: error: {e}")
    except OSError as e:
        if not is_machine_error(e):
            raise
        sys.exit(f"{name}: error: {e}: a problem of the machine or the output folder, not of the input; "
                 f"no result file was left half written (earlier ones are as they were). Free space or fix "
                 f"the permissions and rerun")
