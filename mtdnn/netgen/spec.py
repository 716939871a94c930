"""What one model is: the parameters of the templates and the values derived from them.

A :class:`ModelSpec` holds everything a model folder is rendered from; ``view()`` turns it
into the names the templates use (layer widths, group layout, solver phases). Defaults are
the paper's (Sec. 3.3, 4.4): 10,575 CASIA-WebFace identities, the seven attributes of Tab. 1
(``mtdnn.paper.PAPER_ATTRIBUTES``), batch 40 (Full-Block) or 48 (Fast-Block), 70k pre-training
+ 30k fine-tuning iterations.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import SimpleNamespace

from mtdnn.paper import GROUPS, parse_attributes


class GenerateError(ValueError):
    """Bad input to the generator; the message names the parameter and the problem."""


def checked_changes(spec, changes: dict, what: str) -> dict:
    """``changes`` to the dataclass ``spec`` with the attributes parsed (a group, names or a
    sequence); an unknown field or attribute raises GenerateError (``unknown <what>: ...``)."""
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(spec)})
    if unknown:
        raise GenerateError(f"unknown {what}: {', '.join(unknown)}")
    if "attributes" in changes:
        try:
            changes = {**changes, "attributes": parse_attributes(changes["attributes"])}
        except ValueError as e:
            raise GenerateError(str(e)) from None
    return changes


class AttributeCountError(GenerateError):
    """The attribute labels given to the generator are not as many as the model predicts."""


# block type -> (convs on the main road, conv on the bypass, title, the paper's batch)
BLOCKS = {
    "full": (3, False, "Full-Block", 40),
    "fast": (2, False, "Fast-Block", 48),
    # Tab. 5 compares blocks only; a Variants-Block has 3 convolutions like a Full-Block,
    # so it gets the Full-Model's batch (the paper does not say).
    "variants": (2, True, "Variants-Block", 40),
}
CONFIGS = {
    1: "Configuration-1: fc5 -> identity; fc5 -> g (a second fc, as wide as fc5) -> attributes",
    2: "Configuration-2: fc5 shared, identity and attributes both read it",
    3: "Configuration-3: the trunk feeds two independent fc layers, fc5 (identity) and attr_fc5 (attributes)",
}
STEM = (32, 64)
GROUP_CHANNELS = (64, 128, 256, 512)
GROUP_BLOCKS = (3, 4, 6, 3)
FC = 1024
DROPOUT = 0.5
# The paper's schedule (Sec. 4.4) and our Caffe-era defaults for display/test/snapshot.
PHASES = {
    "pretrain": dict(iters=70000, base_lr=0.01, steps=(40000, 58000)),
    "finetune": dict(iters=30000, base_lr=0.001, steps=(10000, 20000)),
}
DISPLAY, TEST_INTERVAL, SNAPSHOT = 100, 2000, 10000
DATA_PATHS = ("train_lmdb", "test_lmdb", "train_hdf5", "test_hdf5")


@dataclass(frozen=True)
class ModelSpec:
    """Parameters of one model folder (see ``python -m generate model --help``)."""

    name: str
    title: str = "custom model"
    block: str = "full"
    config: int = 1
    attributes: tuple = GROUPS["all"]
    identities: int = 10575
    batch: int | None = None          # None: the block's paper batch
    test_batch: int | None = None     # None: batch
    width: float = 1.0                # multiplies every convolution and fc width
    train_lmdb: str = "data/casia_train_lmdb"
    test_lmdb: str = "data/casia_val_lmdb"
    train_hdf5: str = "data/casia_train_attributes.txt"
    test_hdf5: str = "data/casia_val_attributes.txt"
    pretrain_iter: int = PHASES["pretrain"]["iters"]
    finetune_iter: int = PHASES["finetune"]["iters"]
    pretrain_lr: float = PHASES["pretrain"]["base_lr"]
    finetune_lr: float = PHASES["finetune"]["base_lr"]
    lambda1: float = 0.1
    lambda2: float = 1.0
    test_images: int | None = None    # None: one held-out image per identity
    test_interval: int | None = None  # None: 2000 scaled to the phase's iterations
    snapshot: int | None = None       # None: 10000 scaled likewise
    display: int | None = None        # None: 100 scaled likewise
    deploy_batch: int = 1
    random_seed: int | None = None    # the solvers' random_seed (None: Caffe's time-based seed)
    paper: tuple = field(default=(), compare=False)  # (table, row, measure, value) rows

    def replace(self, **changes) -> "ModelSpec":
        """A copy with ``changes``; unknown names and bad values raise GenerateError."""
        spec = dataclasses.replace(self, **checked_changes(self, changes, "parameter(s)"))
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.block not in BLOCKS:
            raise GenerateError(f"block {self.block!r}: use one of {', '.join(BLOCKS)}")
        if self.config not in CONFIGS:
            raise GenerateError(f"config {self.config!r}: use 1, 2 or 3")
        positive_int = ["identities", "pretrain_iter", "finetune_iter", "deploy_batch",
                        "batch", "test_batch", "test_images", "test_interval", "snapshot", "display"]
        for name in positive_int:
            value = getattr(self, name)
            if value is None and name not in ("identities", "pretrain_iter", "finetune_iter",
                                              "deploy_batch"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise GenerateError(f"{name} must be a positive integer, got {value!r}")
        seed = self.random_seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise GenerateError(f"random_seed must be an integer >= 0, got {seed!r}")
        for name in ("width", "pretrain_lr", "finetune_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise GenerateError(f"{name} must be a positive number, got {value!r}")
        for name in ("lambda1", "lambda2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise GenerateError(f"{name} must be a number >= 0, got {value!r}")
        for name in DATA_PATHS + ("name",):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or '"' in value or "\n" in value:
                raise GenerateError(f"{name} must be a non-empty path without quotes, got {value!r}")

    def scaled(self, channels: int) -> int:
        """A layer width times the width multiplier (at least 1)."""
        return max(1, int(channels * self.width + 0.5))

    def view(self) -> SimpleNamespace:
        """The values the templates use."""
        convs, bypass_conv, block_title, paper_batch = BLOCKS[self.block]
        batch = self.batch or paper_batch
        test_batch = self.test_batch or batch
        test_images = self.test_images or self.identities
        m = SimpleNamespace(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        m.__dict__.update(
            batch=batch, test_batch=test_batch, test_images=test_images,
            block_convs=convs, bypass_conv=bypass_conv, block_title=block_title,
            stem=tuple(self.scaled(c) for c in STEM),
            groups=[SimpleNamespace(index=i + 1, channels=self.scaled(c), blocks=n)
                    for i, (c, n) in enumerate(zip(GROUP_CHANNELS, GROUP_BLOCKS))],
            fc=self.scaled(FC), dropout=DROPOUT, config_title=CONFIGS[self.config],
            attributes=list(self.attributes),
            test_iter=math.ceil(test_images / test_batch),
        )
        return m

    def phases(self) -> list[SimpleNamespace]:
        """The two solver phases: pre-training (lambda1 = 0, no attribute head) and fine-tuning."""
        out = []
        for key, iters, base_lr in (("pretrain", self.pretrain_iter, self.pretrain_lr),
                                    ("finetune", self.finetune_iter, self.finetune_lr)):
            paper = PHASES[key]
            ratio = iters / paper["iters"]
            scale = lambda v: max(1, int(v * ratio + 0.5))  # noqa: E731
            steps = []
            for s in paper["steps"]:
                steps.append(max(scale(s), steps[-1] + 1) if steps else scale(s))
            pretrain = key == "pretrain"
            out.append(SimpleNamespace(
                key=key, title="pre-training" if pretrain else "fine-tuning",
                file=f"solver_{key}.prototxt", iters=iters, base_lr=base_lr, steps=steps,
                lambda1=0 if pretrain or not self.attributes else self.lambda1,
                net_file=("train_val_pretrain.prototxt" if pretrain and self.attributes
                          else "train_val.prototxt"),
                test_iter=self.view().test_iter,
                test_interval=self.test_interval or scale(TEST_INTERVAL),
                # the pre-training net starts from random weights: nothing to test at 0
                test_initialization="false" if pretrain else "true",
                display=self.display or scale(DISPLAY),
                snapshot=self.snapshot or scale(SNAPSHOT),
                snapshot_prefix=key,  # pretrain_iter_<N>.caffemodel in the run folder
                weights_hint=None if pretrain else f"pretrain_iter_{self.pretrain_iter}.caffemodel",
            ))
        return out
