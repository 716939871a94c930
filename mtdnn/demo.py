"""The demo (``tools/demo.py``, ``make demo``): its plan of sizes, its work folder, its stage
list and the glue between the tools (lists of images for the next tool); the report is
:mod:`mtdnn.demo_report`, the stage runner :mod:`mtdnn.pipeline`.

Each stage is a call of one of the project's tools (:func:`mtdnn.pipeline.tool`) or a little
glue done in this process; :class:`Demo` builds the list, :class:`mtdnn.pipeline.Runner` runs it
and reuses every finished stage on a rerun.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .fileio import atomic_write_text
from .paper import PAPER_ATTRIBUTES
from .pipeline import (PY, PipelineError, PipelineInputError, Runner, Stage, eval_attributes_cmd,
                       eval_identification_cmd, eval_lfw_cmd, extract_cmd, fmt_time, tool, tool_stage)
from .records import read_names, write_names


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
        raise PipelineInputError(f"{src}: a View 1 pairs file (one count line) was expected")
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
    from .moon_train import celeba_image_folder
    if celeba_image_folder(celeba) is None:
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


# --------------------------------------------------------------------------- the plan and the stages

@dataclass(frozen=True)
class Plan:
    """The demo's sizes; every field is an option of tools/demo.py (``--lfw-min-images`` ...)."""
    lfw_min_images: int = 4         # peopleDevTrain people with >= this many images are aligned whole
    max_people: int | None = None   # quick: only the first people ...
    max_per_person: int | None = None  # ... and this many images each
    pairs_per_class: int | None = None  # quick: the first k matched + k mismatched pairs
    probe_people: int = 0           # quick: also align this many peopleDevTest people (probes)
    min_images: int = 4             # identities with fewer aligned images are not trained on
    lfw_minsize: float = 40         # MTCNN minsize for the LFW photos (faces are all larger)
    celeba_images: int = 2000
    moon_iters: int = 500
    moon_width: float = 0.125
    moon_batch: int = 32
    model: str = "fast"
    width: float = 0.125
    batch: int = 32
    iters: int = 1000               # pre-training + fine-tuning, split 70/30
    mirror: str = "concat"          # features: none, concat (SphereFace) or sum
    pretrain_lr: float = 0.05
    finetune_lr: float = 0.01
    lambda1: float = 1.0
    seed: int = 1                   # the solvers' random_seed: the same weights, the same figures
    threads: int = 1                # BLAS threads of the multi-task net's Caffe and of the feature extraction
    snapshot: int = 100
    test_interval: int = 100        # validation passes (the generator's default, 2000 scaled, would be every 12)
    watch: int = 350                # a verification check on pairsDevTest every N iterations (train.py --watch; 0: none)
    workers: int = 2


FULL = Plan()
QUICK = Plan(lfw_min_images=30, max_people=8, max_per_person=10, pairs_per_class=15, probe_people=4, min_images=4,
             celeba_images=300, moon_iters=40, moon_batch=16, batch=16, iters=45, mirror="none", snapshot=20,
             test_interval=15, watch=0)

# The stages that read CelebA or MOON's output: left out when CelebA is not there (issue 20, item 7).
CELEBA_STAGES = ("moon", "label", "extract_celeba", "attr_list", "extract_attributes", "eval_identification",
                 "eval_attributes")


class Demo:
    """The demo on one work folder: its layout, its checks, its glue and its stage list."""

    def __init__(self, plan: Plan, work: Path, data: Path, quick: bool = False, no_celeba: bool = False):
        from .caffe.run import blas_threads_env
        self.plan, self.quick = plan, quick
        self.work, self.data = Path(work).resolve(), Path(data).resolve()
        self.env = {"MTDNN_DATA": str(self.data), "GLOG_minloglevel": "2", "PYTHONUNBUFFERED": "1"}
        # A fixed number of BLAS threads, not the machine's core count: Caffe's reductions (BatchNorm
        # statistics, bias gradients) add in an order that depends on it, so the figures would too.
        self.blas_env = {**self.env, **blas_threads_env(plan.threads)}
        w = self.work
        self.lists = w / "lists"
        self.lfw_aligned = w / "lfw-112x96"
        self.celeba_aligned = w / "celeba-112x96"
        self.db = w / "lfw-db"
        self.runs = w / "runs"
        self.moon = self.runs / "moon"
        self.run = self.runs / f"{plan.model}_w{plan.width:g}"
        self.eval = self.run / "eval"
        self.features = w / "features"
        self.pretrain_iter = max(1, round(plan.iters * 0.7))
        self.finetune_iter = max(1, plan.iters - self.pretrain_iter)
        self.lfw_photos = lfw_photo_folder(self.data)
        self.celeba_missing = [] if no_celeba else celeba_missing(self.data)
        self.recognition_only = no_celeba or bool(self.celeba_missing)
        if plan.pairs_per_class:
            self.view1 = (self.lists / "pairsDevTrain_subset.txt", self.lists / "pairsDevTest_subset.txt")
        else:
            self.view1 = (self.data / "lfw" / "pairsDevTrain.txt", self.data / "lfw" / "pairsDevTest.txt")
        self.runner: Runner | None = None

    # ----------------------------------------------------------------- checks and glue

    def check_inputs(self) -> None:
        lfw = self.data / "lfw"
        need = [self.lfw_photos, lfw / "peopleDevTrain.txt", lfw / "peopleDevTest.txt", lfw / "pairsDevTrain.txt",
                lfw / "pairsDevTest.txt", self.data / "mtcnn" / "det1.caffemodel"]
        missing = [str(p) for p in need if not p.exists()]
        if missing:
            raise PipelineInputError(f"the data folder {self.data} lacks {', '.join(missing)}: run `make data` "
                                     f"(docs/data.md), or pass --data (or set MTDNN_DATA) pointing at the folder "
                                     f"holding lfw/, celeba/ and mtcnn/")
        caffe = Path(PY).parent / "caffe"
        if not caffe.is_file() and not shutil.which("caffe"):
            raise PipelineError("no caffe binary beside this Python or on PATH: run `make setup` first")
        self.work.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.work).free
        want = (0.3 if self.quick else 2.0) * 2**30
        if free < want:
            raise PipelineError(f"only {free / 2**30:.2f} GiB free for the work folder {self.work}; the demo needs "
                                f"about {want / 2**30:.1f} GiB: free some space or pass --work on another disk")

    def write_lists(self) -> str:
        p = self.plan
        lfw = self.data / "lfw"
        if p.pairs_per_class:
            subset_pairs(lfw / "pairsDevTrain.txt", self.view1[0], p.pairs_per_class)
            subset_pairs(lfw / "pairsDevTest.txt", self.view1[1], p.pairs_per_class)
        pair_imgs = sorted(set(lfw_pair_images(self.view1[0])) | set(lfw_pair_images(self.view1[1])))
        train_imgs = lfw_train_people_images(lfw / "peopleDevTrain.txt", p.lfw_min_images, p.max_people,
                                             p.max_per_person)
        probe_imgs = lfw_train_people_images(lfw / "peopleDevTest.txt", 1, p.probe_people, p.max_per_person) \
            if p.probe_people else []
        images = sorted(set(pair_imgs) | set(train_imgs) | set(probe_imgs))
        missing = [i for i in images if not (self.lfw_photos / i).is_file()]
        if missing:
            raise PipelineInputError(f"{len(missing)} LFW photo(s) named by the lists are missing from "
                                     f"{self.lfw_photos}, e.g. {missing[0]}")
        atomic_write_text(self.lists / "lfw_align.txt", "".join(i + "\n" for i in images))
        return (f"{len(images)} LFW photos to align: {len(pair_imgs)} of the View 1 pairs, "
                f"{len(train_imgs)} of {len({person(i) for i in train_imgs})} training people"
                + (f", {len(probe_imgs)} of {p.probe_people} peopleDevTest people" if probe_imgs else ""))

    def write_train_list(self) -> str:
        from .datasets import read_lfw_people
        wanted = (self.lists / "lfw_align.txt").read_text().split()
        have, missing = aligned_images(self.lfw_aligned, wanted)
        train_people = {name for fold in read_lfw_people(self.data / "lfw" / "peopleDevTrain.txt") for name, _ in fold}
        train = [i for i in have if person(i) in train_people]
        # features: what the evaluations read, i.e. the View 1 pairs' images (threshold and test)
        # and every image of people outside peopleDevTrain (identification probes and distractors)
        pairs = set(lfw_pair_images(self.view1[0])) | set(lfw_pair_images(self.view1[1]))
        features = [i for i in have if i in pairs or person(i) not in train_people]
        atomic_write_text(self.lists / "lfw_train.txt", "".join(f"{i} {person(i)}\n" for i in train))
        atomic_write_text(self.lists / "lfw_features.txt", "".join(i + "\n" for i in features))
        return (f"{len(have)} aligned LFW images ({len(missing)} without a face): {len(train)} of peopleDevTrain "
                f"people (training candidates), {len(features)} for the evaluations")

    def write_attr_list(self) -> str:
        names = read_names(self.moon / "eval" / "heldout_scores.names.txt")  # the one record format
        write_names(self.lists / "celeba_heldout.txt", names)
        return f"{len(names)} held-out CelebA images"

    def write_report(self) -> str:
        from .demo_report import write_report
        return write_report(self)

    # ----------------------------------------------------------------- stages

    def train_cmd(self) -> list:
        """tools/train.py: pre-training, then fine-tuning, seeded, with a fixed number of BLAS threads."""
        p = self.plan
        return tool("train", "--model", p.model, "--db", self.db, "--run", self.run,
                    "--width", p.width, "--batch", p.batch, "--pretrain-iter", self.pretrain_iter,
                    "--finetune-iter", self.finetune_iter, "--pretrain-lr", p.pretrain_lr,
                    "--finetune-lr", p.finetune_lr, "--lambda1", 0 if self.recognition_only else p.lambda1,
                    "--seed", p.seed, "--threads", p.threads, "--snapshot", p.snapshot,
                    "--test-interval", p.test_interval, "--display", max(1, min(20, p.iters // 30)),
                    *(["--watch", p.watch, "--watch-pairs", self.view1[1], "--watch-images", self.lfw_aligned]
                      if p.watch else []))

    def data_stages(self) -> list[Stage]:
        """Stages 1-7: MOON, the LFW lists and crops, the training database and its labels."""
        p, env, lists = self.plan, self.env, self.lists
        glue = lambda name, title, func, describe, outputs: Stage(  # noqa: E731
            name, title, func=func, describe=describe, outputs=outputs, env=env)
        subsets = f" and the View 1 subsets {self.view1[0].name}, {self.view1[1].name}" if p.pairs_per_class else ""
        return [
            tool_stage("moon", "Train the MOON attribute classifier on CelebA",
                       tool("train_attributes", "--out", self.moon, "--aligned", self.celeba_aligned,
                            "--celeba", self.data / "celeba", "--limit", p.celeba_images, "--iters", p.moon_iters,
                            "--width", p.moon_width, "--batch", p.moon_batch, "--workers", p.workers),
                       env, background=True),  # first: it needs nothing of LFW, so other LFW sizes reuse it;
            # one-thread Caffe, so LFW alignment and the LMDB use the other core
            glue("lists", "Choose the LFW images to align and the View 1 pairs", self.write_lists,
                 f"write {lists / 'lfw_align.txt'}" + subsets,
                 (lists / "lfw_align.txt",) + (self.view1 if p.pairs_per_class else ())),
            tool_stage("align_lfw", "Align the LFW photos (MTCNN + 5 points)",
                       tool("align_faces", self.lfw_photos, self.lfw_aligned, "--list", lists / "lfw_align.txt",
                            "--workers", p.workers, "--minsize", p.lfw_minsize, "--allow-failures"), env),
            glue("train_list", "List the aligned training images", self.write_train_list,
                 f"write {lists / 'lfw_train.txt'} and {lists / 'lfw_features.txt'}",
                 (lists / "lfw_train.txt", lists / "lfw_features.txt")),
            tool_stage("build_db", "Build the training LMDB + HDF5",
                       tool("build_db", self.db, "--list", lists / "lfw_train.txt", "--root", self.lfw_aligned,
                            "--placeholder-attributes", len(PAPER_ATTRIBUTES), "--min-images", p.min_images,
                            "--force"), env),
            tool_stage("label", "Label the training set with MOON (vote per identity)",
                       tool("label_attributes", "--model", self.moon, "--db", self.db, "--force"), env,
                       after=("moon",)),
            tool_stage("check_db", "Check the LMDB/HDF5 order", tool("check_db", self.db), env),
        ]

    def model_stages(self) -> list[Stage]:
        """Stages 8-17: train, extract, evaluate, the paper's tables and the report."""
        p, env, blas, feats, lists = self.plan, self.env, self.blas_env, self.features, self.lists
        extract = lambda source, out, **kw: extract_cmd(  # noqa: E731
            self.run / "deploy.prototxt", self.run / f"finetune_iter_{self.finetune_iter}.caffemodel", "--restart",
            source, out, **kw)
        return [
            tool_stage("train", "Train the multi-task net (pre-train, fine-tune)", self.train_cmd(), env,
                       restart_flag="--restart"),  # other sizes or data: train afresh, not on from old snapshots
            tool_stage("extract_lfw", "Extract LFW features (fc5)",
                       extract(["--list", lists / "lfw_features.txt", "--root", self.lfw_aligned], feats / "lfw_fc5",
                               mirror=p.mirror), blas),
            tool_stage("extract_celeba", "Extract CelebA distractor features",
                       extract(["--tree", self.celeba_aligned], feats / "celeba_fc5", mirror=p.mirror), blas),
            Stage("attr_list", "List MOON's held-out CelebA images", func=self.write_attr_list,
                  describe=f"write {lists / 'celeba_heldout.txt'}", outputs=(lists / "celeba_heldout.txt",), env=env),
            tool_stage("extract_attributes", "Predict attributes on held-out CelebA",
                       extract(["--list", lists / "celeba_heldout.txt", "--root", self.celeba_aligned],
                               feats / "celeba_heldout_attr", blob="attr_pred"), blas),
            tool_stage("eval_lfw", "LFW View 1 verification",
                       eval_lfw_cmd(feats / "lfw_fc5", self.view1, self.eval, "--missing", "wrong", "--no-view2"), env),
            tool_stage("eval_identification", "Identification (MegaFace-style stand-in)",
                       eval_identification_cmd(feats / "lfw_fc5", feats / "celeba_fc5",
                                               self.data / "lfw" / "peopleDevTrain.txt", self.run.name, self.eval), env),
            tool_stage("eval_attributes", "Attribute accuracy (Tab. 4)",
                       eval_attributes_cmd(feats / "celeba_heldout_attr",
                                           self.data / "celeba" / "list_attr_celeba.txt", self.eval), env),
            tool_stage("report", "The paper's tables next to ours",
                       tool("report", self.runs, "--out", self.work / "results.md"), env),
            Stage("summary", "Write the demo report", func=self.write_report,
                  describe=f"write {self.work / 'report.md'}", env=env),
        ]

    def stages(self) -> list[Stage]:
        """The demo's one stage list. Without CelebA the stages that read it or MOON are left out
        (the report lists them as skipped) and the net trains with lambda1 = 0 in both phases (its
        attribute labels stay build_db's placeholders, which a zero weight ignores)."""
        stages = self.data_stages() + self.model_stages()
        return [s for s in stages if s.name not in CELEBA_STAGES] if self.recognition_only else stages

    def skipped_note(self) -> str:
        why = "--no-celeba" if not self.celeba_missing else f"CelebA is not in {self.data / 'celeba'} " \
            f"({', '.join(self.celeba_missing)})"
        return (f"{why}: the recognition half runs alone. Skipped: {', '.join(CELEBA_STAGES)} (MOON, the "
                f"attribute labels, the identification stand-in whose distractors are CelebA images, the "
                f"attribute tables); the net trains without the attribute loss (lambda1 = 0). `make data-demo` "
                f"fetches CelebA (docs/data.md)")

    # ----------------------------------------------------------------- main

    def main(self, redo: str | None = None, quiet_tools: bool = False) -> int:
        self.check_inputs()
        self.runner = Runner(self.work, quiet_tools=quiet_tools)
        stages = self.stages()
        if redo:
            self.runner.forget_from(stages, redo)
        print(f"demo{' (quick)' if self.quick else ''}: work folder {self.work}, data {self.data}, "
              f"LFW photos {self.lfw_photos.name}/", flush=True)
        if self.recognition_only:
            print(f"demo: {self.skipped_note()}", flush=True)
        self.runner.run(stages)
        total = time.time() - self.runner.start
        print(f"demo finished in {fmt_time(total)}: {self.work / 'report.md'}", flush=True)
        return 0
