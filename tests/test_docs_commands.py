"""Every command in README.md and docs/ works as written, and every tool documents its options.

The commands are taken from the Markdown itself: the lines of fenced ``sh`` blocks (with their
``\\`` continuations and ``VAR=value`` assignments) and inline code that starts with a tool
(`tools/x.py ...`, `python tools/x.py ...`). For each:

- ``tools/x.py`` / ``bench/x.py``: the file exists, starts with ``#!/usr/bin/env python3`` and is
  executable (so the documented ``tools/x.py ...`` runs in an activated venv), and its argument
  parser accepts the documented arguments. Full-scale commands cannot run here, so the parse
  is checked in one process for all of them: argparse's ``parse_args`` is wrapped so that a
  successful parse stops the tool right there (nothing else of it runs); a rejected option
  exits 2 with argparse's message as usual.
- ``python -m generate ...``: the same parse check of the generator's parser.
- ``make TARGET``: the Makefile has the target.

A new command in the docs is checked without any change here; one that no longer parses fails
with the file, the command and argparse's message.
"""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mtdnn.paths import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
TOOLS = sorted((REPO / "tools").glob("*.py"))
BENCH = sorted((REPO / "bench").glob("*.py"))
SHELL_LANGS = {"sh", "bash", "shell", "console"}
SKIP_FIRST = {"source", "cd", "export", "docker", "caffe", "git", "pip", "apt-get", "echo", "ls"}
INLINE = re.compile(r"`((?:\.venv/bin/)?(?:python3? )?(?:tools|bench)/\w+\.py(?: [^`]*)?)`")
FENCE = re.compile(r"^```(\w*)\s*$")


def _strip_comment(line: str) -> str:
    out, quote = [], None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).rstrip()


def documented_commands():
    """(markdown file, line number, argv) of every command of README.md and docs/."""
    found = []
    for md in DOCS:
        lines = md.read_text().splitlines()
        env = {"MTDNN_DATA": "data"}
        in_block = lang = None
        pending, start = "", 0
        for n, line in enumerate(lines, 1):
            m = FENCE.match(line.strip())
            if m:
                in_block = not in_block
                lang = m.group(1) if in_block else None
                continue
            if in_block and lang in SHELL_LANGS:
                text = _strip_comment(line)
                if not pending:
                    start = n
                if text.endswith("\\"):
                    pending += text[:-1] + " "
                    continue
                cmd, pending = (pending + text).strip(), ""
                for part in re.split(r"\s*(?:&&|;)\s*", cmd):
                    if part:
                        found.append((md, start, part, dict(env)))
                        _assignments(part, env)
            elif not in_block:
                for m in INLINE.finditer(line):
                    if " " in m.group(1).split(".py", 1)[1] or m.group(1).startswith(("python", ".venv")):
                        found.append((md, n, m.group(1), dict(env)))   # a command, not just a name
    return [(md, n, _argv(cmd, env)) for md, n, cmd, env in found if _argv(cmd, env)]


def _assignments(cmd: str, env: dict) -> None:
    words = shlex.split(cmd)
    if words and all(re.match(r"^[A-Z_][A-Z0-9_]*=", w) for w in words):
        env.update(w.split("=", 1) for w in words)


def _argv(cmd: str, env: dict):
    """The command as an argv with $VARs expanded, or None for what this test does not check."""
    for k, v in env.items():
        cmd = cmd.replace(f"${{{k}}}", v).replace(f"${k}", v)
    words = shlex.split(cmd)
    words = [w for w in words if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)] if words and "=" in words[0] else words
    if not words or words[0] in SKIP_FIRST:
        return None
    if words[0] in ("python", "python3", ".venv/bin/python"):
        words = words[1:]
    return words or None


CASES = documented_commands()


def test_the_docs_have_commands_to_check():
    kinds = {argv[0] for _, _, argv in CASES}
    assert {"make", "tools/fetch_data.py", "tools/extract_features.py", "tools/eval_megaface.py"} <= kinds


@pytest.mark.parametrize("tool", TOOLS + BENCH, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_tool_runs_as_written(tool):
    assert tool.read_text().startswith("#!/usr/bin/env python3\n"), f"{tool}: first line must be #!/usr/bin/env python3"
    assert os.access(tool, os.X_OK), f"{tool} is not executable (git update-index --chmod=+x)"


def test_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    bad = [f"{md.relative_to(REPO)}:{n}: make {argv[1]}" for md, n, argv in CASES
           if argv[0] == "make" and len(argv) > 1 and not argv[1].count("=") and argv[1] not in targets]
    assert not bad, "\n".join(bad)


# Run in one child process: import each tool as __main__ with the documented argv, stop it right
# after a successful parse. Prints one JSON line: [[status, message], ...].
HARNESS = r"""
import argparse, contextlib, io, json, runpy, sys
class Parsed(Exception):
    pass
orig = argparse.ArgumentParser.parse_args
def parse_args(self, args=None, namespace=None):
    ns = orig(self, args, namespace)
    raise Parsed()
argparse.ArgumentParser.parse_args = parse_args
mode = sys.argv[1]
out = []
for target, argv in json.load(sys.stdin):
    err = io.StringIO()
    sys.argv = [target, *argv]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            if target.startswith("-m "):
                runpy.run_module(target[3:], run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(target, run_name="__main__")
        out.append([1, "ran to the end without parsing arguments"])
    except Parsed:
        out.append([0, ""])
    except SystemExit as e:
        out.append([e.code if isinstance(e.code, int) else 1, err.getvalue()[-600:]])
    except BaseException as e:
        out.append([1, f"{type(e).__name__}: {e}"])
print(json.dumps(out))
"""


def _parse_all(cases):
    proc = subprocess.run([sys.executable, "-c", HARNESS, "parse"], input=json.dumps(cases), cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "GLOG_minloglevel": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_documented_command_parses():
    cases, where = [], []
    for md, n, argv in CASES:
        if argv[0] in ("-m",) and argv[1] == "generate":
            cases.append(["-m generate", argv[2:]])
        elif re.match(r"^(tools|bench)/\w+\.py$", argv[0]):
            if not (REPO / argv[0]).is_file():
                pytest.fail(f"{md.relative_to(REPO)}:{n}: {argv[0]} does not exist")
            cases.append([argv[0], argv[1:]])
        else:
            continue
        where.append(f"{md.relative_to(REPO)}:{n}: {shlex.join(argv)}")
    assert len(cases) > 20
    results = _parse_all(cases)
    bad = [f"{w}\n    exit {code}: {msg.strip()}" for w, (code, msg) in zip(where, results) if code != 0]
    assert not bad, "\n".join(bad)


# Captures each tool's parser instead of parsing: every option must say what it does.
HELP_HARNESS = r"""
import argparse, contextlib, io, json, runpy, sys
class Captured(Exception):
    pass
def parse_args(self, args=None, namespace=None):
    raise Captured(self)
argparse.ArgumentParser.parse_args = parse_args
out = {}
for target in json.load(sys.stdin):
    sys.argv = [target]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(target, run_name="__main__")
        out[target] = ["no argparse parser"]
    except Captured as c:
        p = c.args[0]
        out[target] = [", ".join(a.option_strings) or a.dest for a in p._actions
                       if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    except SystemExit as e:
        out[target] = [f"exited {e.code} before building its parser"]
print(json.dumps(out))
"""


def test_every_option_of_every_tool_has_help_text():
    targets = [str(t.relative_to(REPO)) for t in TOOLS + BENCH]
    proc = subprocess.run([sys.executable, "-c", HELP_HARNESS], input=json.dumps(targets), cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "GLOG_minloglevel": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    missing = {t: opts for t, opts in json.loads(proc.stdout.strip().splitlines()[-1]).items() if opts}
    assert not missing, "options without help text:\n" + "\n".join(f"{t}: {', '.join(o)}" for t, o in missing.items())


def test_the_harness_catches_a_rejected_option():
    """The parse check can fail: an unknown option of a real tool exits 2 with argparse's message."""
    (code, msg), (ok, _) = _parse_all([["tools/eval_lfw.py", ["--features", "x", "--out", "y", "--no-such-option"]],
                                       ["tools/eval_lfw.py", ["--features", "x", "--out", "y"]]])
    assert code == 2 and "unrecognized arguments: --no-such-option" in msg and ok == 0


def test_the_docs_point_only_inside_the_repository():
    """No `../shared` or absolute workplace path, and every relative link names a file here."""
    bad = []
    for md in DOCS:
        text = md.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r"\.\./shared|/work/", line):
                bad.append(f"{md.relative_to(REPO)}:{n}: {line.strip()[:100]}")
            for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", line):
                if not re.match(r"^[a-z]+://", target) and not (md.parent / target).resolve().exists():
                    bad.append(f"{md.relative_to(REPO)}:{n}: link to {target} leads nowhere")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("tool", ["tools/fetch_data.py", "tools/plot_log.py", "tools/report.py"])
def test_a_tool_runs_by_its_own_name_in_the_activated_venv(tool):
    """`tools/x.py --help` as the docs write it: the shebang finds the venv's python3 on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    r = subprocess.run([tool, "--help"], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr[-2000:]
