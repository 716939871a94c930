"""The demo's stage runner and its glue (``tools/demo.py``, ``make demo``).

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from .fileio import atomic_write_text


class DemoError(RuntimeError):
    """The demo cannot go on; the message names the stage and what to do (exit status 1)."""


class DemoInputError(DemoError):
    """The demo was given bad input: a missing data file, an unknown stage (exit status 2)."""


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
            raise DemoInputError(f"--redo {name}: no such stage; the stages are {', '.join(names)}")
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
                raise DemoError(f"stage {stage.name}: the tool {stage.tool} does not exist (yet); "
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
            raise DemoError(f"stage {stage.name} failed: `{text}` exited with status {rc} (its message is above). "
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


# --------------------------------------------------------------------------- LFW lists

def lfw_pair_images(pairs_file) -> list[str]:
    """Relative image paths (NAME/NAME_%04d.jpg) of every image in an LFW pairs file."""
    from .datasets import read_lfw_pairs
    return sorted({p for fold in read_lfw_pairs(pairs_file) for a, b, _ in fold for p in (a, b)})


def subset_pairs(src, dst, per_class: int) -> Path:
    """The first ``per_class`` matched and mismatched pairs of a View 1 pairs file, in its format."""
    lines = [ln for ln in Path(src).read_text().splitlines() if ln.strip()]
    n = int(lines[0].split()[-1])
    if len(lines[0].split()) != 1:
        raise DemoInputError(f"{src}: a View 1 pairs file (one count line) was expected")
    k = min(per_class, n)
    body = lines[1:1 + k] + lines[1 + n:1 + n + k]
    return atomic_write_text(Path(dst), f"{k}\n" + "\n".join(body) + "\n")


def lfw_train_people_images(people_file, min_images: int, max_people: int | None = None,
                            max_per_person: int | None = None) -> list[str]:
    """Images of the people of an LFW people file with at least ``min_images`` images
    (optionally the first ``max_people`` of them, ``max_per_person`` images each)."""
    from .datasets import lfw_image_path, read_lfw_people
    people = [(name, n) for fold in read_lfw_people(people_file) for name, n in fold if n >= min_images]
    people = sorted(people, key=lambda e: (-e[1], e[0]))[:max_people] if max_people else people
    out = []
    for name, n in people:
        out += [lfw_image_path(name, k) for k in range(1, (min(n, max_per_person) if max_per_person else n) + 1)]
    return out


def aligned_images(aligned: Path, wanted: list[str]) -> tuple[list[str], list[str]]:
    """(aligned, missing) among ``wanted``: those whose crop exists in the aligned tree."""
    have, missing = [], []
    for p in wanted:
        (have if (aligned / p).is_file() else missing).append(p)
    return have, missing


def person(path: str) -> str:
    return path.split("/")[0]


# --------------------------------------------------------------------------- data folder

def lfw_photo_folder(data: Path) -> Path:
    """The LFW photos the demo aligns: the original release (``lfw/lfw``, which ``make data``
    fetches from its public copies) when it is there, else the deep-funneled one
    (``lfw/lfw-deepfunneled``, which has no live public source but may be on disk)."""
    original = Path(data) / "lfw" / "lfw"
    return original if original.is_dir() else Path(data) / "lfw" / "lfw-deepfunneled"


def celeba_missing(data: Path) -> list[str]:
    """What of CelebA the demo's attribute half needs and ``data`` lacks (empty: all there)."""
    celeba = Path(data) / "celeba"
    out = [n for n in ("list_attr_celeba.txt", "identity_CelebA.txt") if not (celeba / n).is_file()]
    if not any((celeba / d).is_dir() for d in ("img_align_celeba", "img_align_celeba_89x109")):
        out.append("img_align_celeba/")
    return out


# --------------------------------------------------------------------------- the report's figure of faces

def attribute_faces(predictions, labels_file, photo_root, crop_root, count: int = 8,
                    attributes=None) -> list[dict]:
    """The first ``count`` images of an attribute prediction file (tools/extract_features.py
    --blob attr_pred) as faces for :func:`mtdnn.evaluation.plots.plot_face_montage`: the input
    photo (``photo_root``/name), the aligned crop (``crop_root``/name) and per attribute the
    net's score with its decision (score > 0: +) next to the true label ('ok' when they agree).
    ``attributes``: the names of the prediction columns (default the paper's 7, as
    tools/eval_attributes.py)."""
    from .evaluation.attributes import read_celeba_attributes
    from .evaluation.features_io import image_key, load_features, lookup, name_index
    scores, names, _ = load_features(predictions)
    images, attrs, labels = read_celeba_attributes(labels_file)
    if attributes is None:  # the prediction columns: the model's attributes, as tools/eval_attributes.py reads them
        from mtdnn.paper import parse_attributes
        attributes = parse_attributes("all")
    attributes = list(attributes)
    if len(attributes) != scores.shape[1]:
        raise ValueError(f"{predictions}: {scores.shape[1]} prediction columns for {len(attributes)} attributes")
    cols = [attrs.index(a) for a in attributes]
    rows = lookup(name_index(images, "attribute labels"), [image_key(n) for n in names[:count]],
                  "predicted images among the labels")
    faces = []
    for i, (name, r) in enumerate(zip(names[:count], rows)):
        text = [f"{name}"]
        for j, (a, c) in enumerate(zip(attributes, cols)):
            s, y = float(scores[i, j]), int(labels[r, c])
            pred = 1 if s > 0 else -1
            text.append(f"{a[:12]:<13}{s:+.2f} {'+' if pred > 0 else '-'}/{'+' if y > 0 else '-'}"
                        f"{' ok' if pred == y else ''}")
        faces.append({"photo": Path(photo_root) / name, "crop": Path(crop_root) / name, "text": "\n".join(text)})
    return faces
