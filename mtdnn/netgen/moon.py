"""Render the MOON facial attribute classifier (Rudd et al., ECCV 2016) and its solver.

Sec. 3.2 of the paper labels the recognition training set with a MOON classifier trained on
CelebA. Templates: ``prototxt_templates/moon.prototxt.j2`` (net) and
``moon_solver.prototxt.j2``. A run folder gets ``train_val.prototxt``, ``deploy.prototxt``
and ``solver.prototxt`` (snapshots ``moon_iter_<N>.caffemodel``).

Backbones:

- ``vgg16``: MOON's network, VGG-16 (13 conv 3x3 + ReLU, 5 max-pools, fc6 and fc7 of 4096 with
  dropout 0.5) on the same aligned 112x96 crops as the recognition nets; BatchNorm after every
  convolution by default (``batchnorm=False`` gives the plain VGG-16). For GPU runs.
- ``fast``: the paper's Fast-Model trunk (conv + BN + Scale + PReLU, Fast-Blocks of two
  convolutions, groups of 3/4/6/3 blocks) at width ``width`` (default 0.25) and one fc of
  1024 x width; for CPU runs.

Both end in ``attr_pred``, one linear unit per attribute, and (train_val) MOON's re-weighted
Euclidean loss written with standard layers: the HDF5 file gives ``attr_target`` (N x M in
{-1, +1}) and ``attr_weight`` (N x M, the square root of each sample's MOON weight; see
``mtdnn.moon``), and the loss is ``EuclideanLoss(attr_pred * attr_weight, attr_target *
attr_weight)`` = sum w (pred - target)^2 / (2N).

Command line (``python -m generate.moon --help``)::

    python -m generate.moon --out runs/moon --backbone fast --width 0.25 --attributes all \\
        --batch 32 --iters 2000 --train-lmdb data/train_lmdb --train-hdf5 data/train.h5.txt \\
        --test-lmdb data/val_lmdb --test-hdf5 data/val.h5.txt --test-images 1900

Python::

    from mtdnn.netgen.moon import render_moon
    paths = render_moon("runs/moon", backbone="fast", width=0.25, batch=32, iters=2000, ...)

Bad input raises :class:`mtdnn.netgen.spec.GenerateError` (the command line: message, exit 2).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from mtdnn.paper import GROUPS, parse_attributes
from .render import _render, check_split_paths, given_data_paths, write_files
from .spec import DATA_PATHS, GROUP_BLOCKS, GROUP_CHANNELS, STEM, GenerateError, checked_changes

BACKBONES = ("fast", "vgg16")
VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (channels, convs) per stage
TARGET_DATASET, WEIGHT_DATASET = "attr_target", "attr_weight"  # HDF5 datasets = the net's tops
# Per backbone: defaults for what the caller leaves unset (VGG-16: a GPU run; fast: a CPU run).
DEFAULTS = {
    "vgg16": dict(width=1.0, batch=64, iters=20000, base_lr=0.01),
    "fast": dict(width=0.25, batch=32, iters=3000, base_lr=0.01),
}


@dataclass(frozen=True)
class MoonSpec:
    """Parameters of a MOON run folder (see ``python -m generate.moon --help``).

    ``None`` means the backbone's default (:data:`DEFAULTS`) or a derived value: ``fc`` is
    4096 x width (vgg16) or 1024 x width (fast); ``test_batch`` = ``batch``; ``steps`` are
    50 % and 75 % of ``iters``; display, test and snapshot intervals are 1 %, 10 % and 50 %
    of ``iters``.
    """

    name: str = "moon"
    backbone: str = "fast"
    attributes: tuple = GROUPS["all"]
    width: float | None = None
    blocks: tuple = GROUP_BLOCKS     # fast: Fast-Blocks per group
    batchnorm: bool = True           # vgg16: BatchNorm + Scale after every convolution
    fc: int | None = None
    dropout: float = 0.5
    batch: int | None = None
    test_batch: int | None = None
    test_images: int | None = None   # held-out images: test_iter = ceil(test_images / test_batch)
    iters: int | None = None
    base_lr: float | None = None
    steps: tuple | None = None
    weight_decay: float = 0.0005
    display: int | None = None
    test_interval: int | None = None
    snapshot: int | None = None
    random_seed: int | None = None   # the solver's random_seed (None: Caffe's time-based seed)
    deploy_batch: int = 1
    height: int = 112
    width_px: int = 96
    train_lmdb: str = "data/train_lmdb"
    test_lmdb: str = "data/val_lmdb"
    train_hdf5: str = "data/train_moon.h5.txt"
    test_hdf5: str = "data/val_moon.h5.txt"

    def replace(self, **changes) -> "MoonSpec":
        """A copy with ``changes`` (None values ignored); bad names or values raise GenerateError."""
        changes = checked_changes(self, {k: v for k, v in changes.items() if v is not None}, "MOON parameter(s)")
        for key in ("blocks", "steps"):
            if isinstance(changes.get(key), str):
                try:
                    changes[key] = tuple(int(v) for v in changes[key].split(",") if v.strip())
                except ValueError:
                    raise GenerateError(f"{key} must be comma-separated integers, got {changes[key]!r}") from None
        for key in DATA_PATHS:
            if key in changes:
                changes[key] = str(changes[key])
        spec = dataclasses.replace(self, **changes)
        spec.validate()
        return spec

    def get(self, name: str):
        """A parameter with the backbone's default filled in."""
        value = getattr(self, name)
        return DEFAULTS[self.backbone][name] if value is None and name in DEFAULTS[self.backbone] else value

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise GenerateError(f"backbone {self.backbone!r}: use one of {', '.join(BACKBONES)}")
        if not self.attributes:
            raise GenerateError("a MOON net needs at least one attribute")
        parse_attributes(self.attributes)
        for name in ("fc", "batch", "test_batch", "test_images", "iters", "display", "test_interval",
                     "snapshot", "deploy_batch", "height", "width_px"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise GenerateError(f"{name} must be a positive integer, got {value!r}")
        if self.random_seed is not None and (isinstance(self.random_seed, bool) or not isinstance(self.random_seed, int)
                                             or self.random_seed < 0):
            raise GenerateError(f"random_seed must be an integer >= 0, got {self.random_seed!r}")
        for name in ("width", "base_lr"):
            value = self.get(name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise GenerateError(f"{name} must be a positive number, got {value!r}")
        for name in ("weight_decay", "dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < (1 if name == "dropout" else math.inf):
                raise GenerateError(f"{name} out of range: {value!r}")
        if len(self.blocks) != 4 or any(not isinstance(b, int) or b < 0 for b in self.blocks):
            raise GenerateError(f"blocks must be 4 integers >= 0 (blocks per group), got {self.blocks!r}")
        if self.steps is not None and (list(self.steps) != sorted(set(self.steps))
                                       or any(s <= 0 or s >= self.get("iters") for s in self.steps)):
            raise GenerateError(f"steps must increase strictly inside (0, iters), got {self.steps!r}")
        for name in DATA_PATHS + ("name",):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or '"' in value or "\n" in value:
                raise GenerateError(f"{name} must be a non-empty path without quotes, got {value!r}")
        if self.backbone == "fast" and (self.height, self.width_px) != (112, 96):
            # the Fast trunk's stem and transitions (pad 0) are laid out for 112x96 (design.md 1)
            raise GenerateError("the fast backbone takes 112x96 crops")

    def scaled(self, channels: int) -> int:
        return max(1, int(channels * self.get("width") + 0.5))

    def view(self) -> SimpleNamespace:
        """The values the templates use."""
        iters = self.get("iters")
        batch = self.get("batch")
        test_batch = self.test_batch or batch
        frac = lambda f: max(1, int(iters * f + 0.5))  # noqa: E731
        steps = list(self.steps) if self.steps is not None else sorted({frac(0.5), frac(0.75)} - {iters})
        kind = "VGG-16" + (" + BatchNorm" if self.batchnorm else "") if self.backbone == "vgg16" \
            else f"Fast-Model trunk, blocks {'/'.join(map(str, self.blocks))}"
        m = SimpleNamespace(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        m.__dict__.update(
            width=self.get("width"), batch=batch, test_batch=test_batch, iters=iters,
            base_lr=self.get("base_lr"), steps=steps, attributes=list(self.attributes),
            fc=self.fc or self.scaled(4096 if self.backbone == "vgg16" else 1024),
            stem=tuple(self.scaled(c) for c in STEM),
            groups=[SimpleNamespace(index=i + 1, channels=self.scaled(c), blocks=n)
                    for i, (c, n) in enumerate(zip(GROUP_CHANNELS, self.blocks))],
            stages=[SimpleNamespace(index=i + 1, channels=self.scaled(c), convs=n)
                    for i, (c, n) in enumerate(VGG16_STAGES)],
            test_iter=math.ceil((self.test_images or test_batch) / test_batch),
            display=self.display or frac(0.01), test_interval=self.test_interval or frac(0.1),
            snapshot=self.snapshot or frac(0.5),
            title=f"MOON attribute classifier, {kind}, width {self.get('width')}, "
                  f"{len(self.attributes)} attribute(s), batch {batch}",
        )
        return m


def moon_files(spec: MoonSpec, base: Path | None = None) -> dict[str, str]:
    """``{file name: text}`` of a MOON run folder; with ``base`` the solver's net and snapshot
    paths are absolute inside it."""
    spec.validate()
    m = spec.view()
    m.net = str(base / "train_val.prototxt") if base else "train_val.prototxt"
    m.snapshot_prefix = str(base / "moon") if base else "moon"
    return {"train_val.prototxt": _render("moon.prototxt.j2", m=m, kind="train_val"),
            "deploy.prototxt": _render("moon.prototxt.j2", m=m, kind="deploy"),
            "solver.prototxt": _render("moon_solver.prototxt.j2", m=m)}


def check_data_paths(spec: MoonSpec, names, base: Path) -> None:
    """Check the data paths ``names`` (relative ones against ``base``): LMDB folders, and HDF5
    list files whose .h5 files hold ``attr_target`` and ``attr_weight`` of N x M (M = the
    spec's attributes), N equal to the records of the LMDB of the same split."""
    def h5_rows(flag: str, h5: Path, f) -> int:
        shapes = {k: f[k].shape for k in (TARGET_DATASET, WEIGHT_DATASET) if k in f}
        if len(shapes) != 2 or len(set(shapes.values())) != 1:
            raise GenerateError(f"{flag}: {h5} needs '{TARGET_DATASET}' and '{WEIGHT_DATASET}' "
                                f"datasets of one shape, found {shapes}")
        shape = shapes[TARGET_DATASET]
        if len(shape) != 2 or shape[1] != len(spec.attributes):
            raise GenerateError(f"{flag}: {h5} holds targets of shape {shape}, the net predicts "
                                f"{len(spec.attributes)} attribute(s)")
        return shape[0]

    check_split_paths(spec, names, base, h5_rows)


def render_moon(out_dir, *, check_paths: bool | None = None, absolute_paths: bool = False,
                **params) -> list[Path]:
    """Render a MOON run folder into ``out_dir``; returns the paths written.

    ``params``: :class:`MoonSpec` fields (None = default). A test path defaults to its train
    path. ``check_paths``: None checks the data paths given, True all, False none.
    ``absolute_paths``: data (taken from the current directory), net and snapshot paths are
    written absolute, so ``caffe train`` runs from anywhere.
    """
    out_dir = Path(out_dir)
    params, given = given_data_paths(params, DATA_PATHS)
    params.setdefault("name", out_dir.resolve().name)
    spec = MoonSpec().replace(**params)
    base = out_dir.resolve()
    if absolute_paths:
        spec = spec.replace(**{p: str((Path(getattr(spec, p)) if p in given
                                       else base / getattr(spec, p)).resolve()) for p in DATA_PATHS})
    check_data_paths(spec, DATA_PATHS if check_paths else (given if check_paths is None else ()), base)
    return write_files(out_dir, moon_files(spec, base if absolute_paths else None))
