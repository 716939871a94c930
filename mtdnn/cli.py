"""What the command-line tools share: the exit-code rule.

Every tool exits with 0 on success, 2 for bad input or usage (argparse's own errors included)
and 1 for a failure of the run (a download, a training, the machine). :func:`bad_input` ends a
tool the bad-input way with a one-line message, no traceback; :func:`run_tool` runs a tool's
``main`` under that rule, choosing the status by the exception's type. :func:`check_engine`
checks a tool's --engine/--gpu values (a usage error, status 2).
"""
import sys
from pathlib import Path
from typing import NoReturn

from mtdnn.fileio import MachineError, OutputBusy, is_machine_error

BAD_INPUT = 2
FAILURE = 1


def bad_input(message) -> NoReturn:
    """Print ``<tool>: error: message`` to stderr and exit with status 2."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(BAD_INPUT)


MACHINE_HINT = ("a problem of the machine or the output folder, not of the input; no result file was "
                "left half written (earlier ones are as they were). Free space or fix the permissions "
                "and rerun")


INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)
INTERRUPT_HINT = ("finished outputs are kept and no file was left half written; rerun the same command "
                  "to continue")


def interrupted(hint: str = INTERRUPT_HINT) -> NoReturn:
    """The one line a tool prints on Ctrl-C (what is kept, how to continue), status 130."""
    print(f"{Path(sys.argv[0]).name}: interrupted (Ctrl-C): {hint}", file=sys.stderr)
    raise SystemExit(INTERRUPTED)


def run_tool(main, *, bad=(ValueError, KeyError, FileNotFoundError), stop=(),
             machine_hint: str = MACHINE_HINT, interrupt_hint: str = INTERRUPT_HINT) -> NoReturn:
    """Run ``main()`` and exit with its status. An exception of ``bad`` (bad input) ends with
    its message and status 2, no traceback; one of ``stop`` (the run cannot go on, through no
    fault of the input: a busy folder, a net that gives NaN) with its message and status 1; a
    fault of the machine or the output (:class:`~mtdnn.fileio.MachineError`, or an OSError
    that :func:`~mtdnn.fileio.is_machine_error` calls one: disk full, I/O error, permissions)
    with status 1 and ``machine_hint``. Outputs are written atomically, so what exists is
    complete and an earlier result is never half replaced. Another run holding the output
    (:class:`~mtdnn.fileio.OutputBusy`) stops with status 1. Ctrl-C ends with one line,
    ``interrupt_hint`` (what is kept, how to continue), and status 130. Anything else is a
    bug: traceback."""
    name = Path(sys.argv[0]).name
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        interrupted(interrupt_hint)
    except (OutputBusy, *stop) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        sys.exit(FAILURE)
    except bad as e:
        bad_input(e)
    except (MachineError, OSError) as e:
        if isinstance(e, OSError) and not is_machine_error(e):
            raise
        print(f"{name}: error: {e}: {machine_hint}", file=sys.stderr)
        sys.exit(FAILURE)


def check_engine(parser, engine: str, gpu: int | None, weights: bool = True) -> None:
    """The --engine and --gpu values (:func:`mtdnn.inference.add_arguments`) checked by
    :func:`mtdnn.inference.check_request`: a refusal is a usage error (``parser.error``, exit 2)."""
    from mtdnn import inference
    try:
        inference.check_request(engine, gpu, weights)
    except inference.EngineError as e:
        parser.error(str(e))
