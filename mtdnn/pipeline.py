"""The stage runner of the demo (``tools/demo.py``, ``make demo``, :mod:`mtdnn.demo`) and of the
small-scale reproduction (``tools/reproduce.py``, :mod:`mtdnn.reproduce`), and the command lines
of the project's tools that both run.

A :class:`Runner` runs stages in order. A stage is either a command of one of the project's
tools (printed exactly before it runs; its progress bars go straight to the terminal) or a
small piece of glue done in this process (lists of images for the next tool, the summary).
When a stage succeeds, a marker ``<work>/.done/<stage>.json`` is written atomically with the
command, its fingerprint and its duration. A tool stage's fingerprint is the sha256 of its
command and of the fingerprint of the stage before it; a glue stage always runs (it takes
well under a second) and its fingerprint is that of the files it wrote. A tool stage marked
``background`` runs while the stages after it do (its output goes to ``<work>/logs/<stage>.log``),
until a stage that lists it in ``after`` starts: that is how the demo fills a core that a
one-thread stage leaves idle. So a rerun reuses
every finished tool stage up to the first one whose command, or whose inputs as written by
an earlier stage, changed, and redoes the rest. The tools themselves write their outputs
atomically or resumably, so an interrupted stage is simply run again (and continues where
its tool can).
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .fileio import atomic_write_text
from .paths import REPO

TOOLS = REPO / "tools"
PY = sys.executable


class PipelineError(RuntimeError):
    """The pipeline cannot go on; the message names the stage and what to do (exit status 1)."""


class PipelineInputError(ValueError):
    """The pipeline was given bad input: a missing data file, an unknown stage (exit status 2)."""


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


@dataclass
class Stage:
    name: str
    title: str
    cmd: list | None = None                    # a tool's command line ...
    func: Callable[[], str | None] | None = None  # ... or glue in this process (returns a note)
    describe: str = ""                          # what the glue does (printed)
    outputs: tuple = ()                         # the files the glue writes (fingerprinted)
    tool: Path | None = None                    # the tool the command needs (checked first)
    env: dict = field(default_factory=dict)
    background: bool = False                    # a tool stage that runs while the next ones do ...
    after: tuple = ()                           # ... until a stage naming it here starts
    restart_flag: str | None = None             # passed when the stage finished before with another command
                                                # or inputs, or is redone: start over rather than resume


@dataclass
class Runner:
    work: Path
    quiet_tools: bool = False
    out: Callable[[str], None] = lambda s: print(s, flush=True)
    start: float = field(default_factory=time.time)
    timings: list = field(default_factory=list)
    redo: set = field(default_factory=set)      # the stages --redo asked for, and those after them

    @property
    def done_dir(self) -> Path:
        return self.work / ".done"

    def marker(self, stage: Stage) -> Path:
        return self.done_dir / f"{stage.name}.json"

    def forget_from(self, stages: list[Stage], name: str) -> None:
        """Delete the markers of stage ``name`` and every stage after it."""
        names = [s.name for s in stages]
        if name not in names:
            raise PipelineInputError(f"--redo {name}: no such stage; the stages are {', '.join(names)}")
        for s in stages[names.index(name):]:
            self.marker(s).unlink(missing_ok=True)
            self.redo.add(s.name)

    def run(self, stages: list[Stage]) -> list[dict]:
        previous = ""
        self._background: dict[str, tuple] = {}
        self._order = {s.name: k for k, s in enumerate(stages)}  # timings stay in stage order
        try:
            for i, stage in enumerate(stages, 1):
                for name in stage.after:
                    self._join(name)
                previous = self._run_stage(i, len(stages), stage, previous)
            for name in list(self._background):
                self._join(name)
        finally:
            for proc, *_ in self._background.values():  # an error or Ctrl-C: stop what still runs
                proc.terminate()
        return self.timings

    def _run_stage(self, i: int, n: int, stage: Stage, previous: str) -> str:
        text = " ".join(shlex.quote(str(c)) for c in stage.cmd) if stage.cmd else f"(glue) {stage.describe}"
        head = f"[{i}/{n}] {stage.name}: {stage.title}"
        marker = self.marker(stage)
        old = json.loads(marker.read_text()) if marker.is_file() else {}
        if stage.cmd:
            fingerprint = _sha(previous, text)
            if old.get("fingerprint") == fingerprint:
                self.out(f"== {fmt_time(time.time() - self.start)} {head}: done before "
                         f"({old.get('seconds', 0):.0f} s then), reused")
                self._record({"stage": stage.name, "title": stage.title, "seconds": old.get("seconds"),
                              "reused": True, "command": text})
                return fingerprint
        marker.unlink(missing_ok=True)
        cmd = stage.cmd
        if cmd and stage.restart_flag and (old or stage.name in self.redo):
            cmd = cmd + [stage.restart_flag]  # the fingerprint stays that of the plain command
            text = " ".join(shlex.quote(str(c)) for c in cmd)
        self.out(f"== {fmt_time(time.time() - self.start)} {head}" + (" (in the background)" if stage.background
                                                                    else ""))
        self.out(f"$ {text}")
        t0 = time.time()
        note = None
        if stage.cmd:
            if stage.tool is not None and not Path(stage.tool).is_file():
                raise PipelineError(f"stage {stage.name}: the tool {stage.tool} does not exist (yet); "
                                f"it is needed to {stage.title[0].lower() + stage.title[1:]}")
            env = {**os.environ, **stage.env}
            if stage.background:
                log = self.work / "logs" / f"{stage.name}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "w") as fh:
                    proc = subprocess.Popen([str(c) for c in cmd], env=env, stdout=fh, stderr=subprocess.STDOUT)
                self.out(f"   (its output: {log})")
                self._background[stage.name] = (proc, stage, t0, fingerprint, text, log)
                return fingerprint
            rc = subprocess.run([str(c) for c in cmd], env=env,
                                stdout=subprocess.DEVNULL if self.quiet_tools else None).returncode
            self._check(stage, rc, text)
        else:
            note = stage.func()
            fingerprint = _sha(previous, text, *(Path(p).read_bytes() for p in stage.outputs))
        same = stage.func is not None and old.get("fingerprint") == fingerprint
        self._finish(stage, text, fingerprint, time.time() - t0, note, same)
        return fingerprint

    def _join(self, name: str) -> None:
        """Wait for a background stage (a no-op when it was reused or has been joined)."""
        if name not in self._background:
            return
        proc, stage, t0, fingerprint, text, log = self._background[name]
        self.out(f"== {fmt_time(time.time() - self.start)} waiting for {name} (in the background; {log})")
        rc = proc.wait()
        del self._background[name]
        if rc != 0:
            tail = "".join(Path(log).read_text(errors="replace").splitlines(keepends=True)[-15:])
            self.out(tail.rstrip())
        self._check(stage, rc, text)
        self._finish(stage, text, fingerprint, time.time() - t0, None, False)

    def _record(self, timing: dict) -> None:
        """Add a stage's timing; a background stage that finishes late still lands in its place."""
        self.timings.append(timing)
        self.timings.sort(key=lambda t: self._order.get(t["stage"], len(self._order)))

    def _check(self, stage: Stage, rc: int, text: str) -> None:
        if rc != 0:
            raise PipelineError(f"stage {stage.name} failed: `{text}` exited with status {rc} (its message is above). "
                            f"Fix the cause and rerun the demo: the finished stage(s) are reused")

    def _finish(self, stage: Stage, text: str, fingerprint: str, seconds: float, note, same: bool) -> None:
        info = {"stage": stage.name, "title": stage.title, "command": text, "fingerprint": fingerprint,
                "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        if note:
            info["note"] = note
            self.out(f"   {note}" + (" (the same as before)" if same and stage.outputs else ""))
        atomic_write_text(self.marker(stage), json.dumps(info, indent=1) + "\n")
        self._record({**info, "reused": False})
        self.out(f"== {fmt_time(time.time() - self.start)} {stage.name} done in {seconds:.1f} s")


# --------------------------------------------------------------------------- the tools' command lines
# One builder per tool that both pipelines run, so that a tool's options are spelled in one place.
# A pipeline passes its own choices (its figures depend on them: --mirror, --restart or --quiet);
# the words come out in the order the finished runs' stage markers recorded, so a rerun reuses them.

def tool(name: str, *args) -> list:
    """The command line of the project's tool ``tools/<name>.py``, run by this Python."""
    return [PY, TOOLS / f"{name}.py", *args]


def tool_stage(name: str, title: str, cmd: list, env: dict, **kw) -> Stage:
    """A stage that runs ``cmd`` (from :func:`tool`); the tool's file is checked before it runs."""
    return Stage(name, title, cmd=cmd, env=env, tool=cmd[1], **kw)


def extract_cmd(deploy, weights, mode: str, source: list, out, mirror: str | None = None,
                blob: str | None = None) -> list:
    """tools/extract_features.py: ``source`` is ``["--tree", T]`` or ``["--list", L, "--root", R]``;
    ``mode`` is ``--restart`` (the demo) or ``--quiet`` (the reproduction)."""
    return tool("extract_features", "--deploy", deploy, "--weights", weights, mode, *source,
                *(["--mirror", mirror] if mirror else []), *(["--blob", blob] if blob else []), "--out", out)


def eval_lfw_cmd(features, view1: tuple, out, *options) -> list:
    """tools/eval_lfw.py on LFW View 1: threshold on ``view1[0]``, accuracy on ``view1[1]``."""
    return tool("eval_lfw", "--features", features, "--view1", *view1, *options, "--out", out)


def eval_identification_cmd(lfw_features, distractors, exclude, label: str, out, quiet: bool = False) -> list:
    """tools/eval_identification.py: LFW probes outside ``exclude``'s people, ``distractors`` added."""
    return tool("eval_identification", "--lfw", lfw_features, "--distractors", distractors, "--exclude", exclude,
                "--label", label, *(["--quiet"] if quiet else []), "--out", out)


def eval_attributes_cmd(predictions, labels, out) -> list:
    """tools/eval_attributes.py: attr_pred scores against CelebA's labels."""
    return tool("eval_attributes", "--predictions", predictions, "--labels", labels, "--out", out)
