"""Use a trained model on one's own photos: detect, align, embed, compare, read attributes.

    >>> import mtdnn
    >>> model = mtdnn.FaceModel.load("work/demo/runs/fast_w0.125")   # a run folder with a model card
    >>> model.compare("a.jpg", "b.jpg")            # Comparison(score=..., same=True, ...)
    >>> model.embed("a.jpg")                       # the feature vector (card's blob, mirror mode)
    >>> model.attributes(image)                    # {'Male': 1.23, ...} (score > 0: present)
    >>> moon = mtdnn.MoonModel.load("work/demo/runs/moon")            # MOON's attributes, same calls

An image is a path or an H x W x 3 uint8 **BGR** array (``cv2.imread``'s order; from PIL:
``np.asarray(img.convert("RGB"))[:, :, ::-1]``), or H x W grey. The face is found by MTCNN
and aligned to the 112x96 template in memory (``mtdnn.mtcnn``, ``mtdnn.align``), with the
settings the card states; when a photo holds several faces, the one nearest the centre is
used (``select="largest"``: the largest) and :attr:`Face.describe` names it; a photo without a
face raises :class:`NoFace` naming it. ``aligned=True`` takes an already aligned 112x96 crop.

What the numbers mean comes from the run's model card (``mtdnn.card``, docs/model_card.md):
the feature blob and mirror mode, the feature mean and the verification threshold chosen by
``tools/eval_lfw.py`` on a stated pair list. Nets load through :func:`mtdnn.inference.load`,
so ``engine`` is the tools' ``--engine`` (``auto`` picks the fastest engine that passes the
check against pycaffe); ``gpu=N`` runs pycaffe on GPU N.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import card as cards
from .features import batch_features, check_finite

ATTRIBUTE_RULE = "score > 0: present (+1), otherwise absent (-1): the paper's sign rule"


class NoFace(ValueError):
    """A photo in which MTCNN finds no face (or too small to hold one)."""


def photo_errors() -> tuple:
    """The problems of one photo (no face, unreadable): reported for that photo, the rest goes on."""
    from .images import ImageError
    return NoFace, ImageError


def add_arguments(parser, subject: str = "the model and MTCNN") -> None:
    """The photo tools' shared options: --select, --aligned, --engine, --gpu."""
    from . import inference
    parser.add_argument("--select", choices=("center", "largest"), default="center",
                        help="which face of a photo with several: nearest the centre (default) or the largest")
    parser.add_argument("--aligned", action="store_true",
                        help="the photos are aligned 112x96 crops already (no detection)")
    inference.add_arguments(parser, subject)


@dataclass
class Face:
    """The face of a photo that was used: its aligned crop, where it was, how many there were."""
    crop: np.ndarray                  # 112 x 96 x 3 uint8 BGR, aligned
    source: str                       # the path, or "<array>"
    box: np.ndarray | None = None     # x1, y1, x2, y2, score (0-based), None for an aligned input
    points: np.ndarray | None = None  # 5 x 2 landmarks (0-based)
    index: int = 0                    # which of the faces found (by score order)
    n_faces: int = 1
    select: str = "center"

    def describe(self) -> str:
        if self.box is None:
            return f"{self.source}: an aligned crop (no detection)"
        x1, y1, x2, y2, s = self.box
        where = f"box ({x1:.0f}, {y1:.0f})-({x2:.0f}, {y2:.0f}), detection score {s:.3f}"
        if self.n_faces == 1:
            return f"{self.source}: one face, {where}"
        rule = "nearest the centre" if self.select == "center" else "largest"
        return f"{self.source}: {self.n_faces} faces; using face {self.index + 1} ({rule}), {where}"


@dataclass
class Comparison:
    score: float        # the card's rule: cosine after the mean (sphereface) or squared distance (insightface)
    same: bool          # the decision at the card's threshold
    threshold: float
    rule: str
    faces: tuple = field(default=(), repr=False)

    @property
    def answer(self) -> str:
        return "same" if self.same else "different"


def _as_image(image) -> tuple[np.ndarray, str]:
    from .images import load_image
    if isinstance(image, (str, Path)):
        return load_image(image), str(image)
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"an image array must be H x W x 3 (BGR) or H x W, not shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8 (0-255), not {a.dtype}")
    return a, "<array>"


class _Detecting:
    """Face detection and alignment shared by the models (MTCNN loaded on first use)."""

    def __init__(self, net, engine: str, gpu, select: str, detection: dict, exported=None):
        self.net, self.engine, self.gpu, self.select = net, engine, gpu, select
        self.detection, self.exported = detection, exported  # MTCNN's checked ONNX exports
        self._mtcnn = None
        self.crop_size = tuple(net.input_shape[1:3])

    @property
    def detector(self):
        if self._mtcnn is None:
            from .mtcnn import MTCNN
            d = self.detection
            self._mtcnn = MTCNN(minsize=d.get("minsize", 20), factor=d.get("factor", 0.85),
                                thresholds=tuple(d.get("thresholds", (0.6, 0.7, 0.9))),
                                engine=self.engine, gpu=self.gpu, exported=self.exported)
        return self._mtcnn

    def face(self, image, aligned: bool = False) -> Face:
        """The :class:`Face` of ``image`` that the model uses; :class:`NoFace` when there is none."""
        from . import align
        from .mtcnn import MIN_SIDE, select_face
        if isinstance(image, Face):
            return image
        img, source = _as_image(image)
        if aligned:
            if img.shape[:2] != self.crop_size:
                raise ValueError(f"{source}: {img.shape[0]}x{img.shape[1]} (HxW), an aligned crop is "
                                 f"{self.crop_size[0]}x{self.crop_size[1]}; leave out aligned=True (--aligned) "
                                 f"to detect and align the face")
            return Face(img, source)
        if min(img.shape[:2]) < MIN_SIDE:
            raise NoFace(f"{source}: no face: the image is {img.shape[1]}x{img.shape[0]} px, too small to hold one")
        found = self.detector.detect(img)
        if len(found) == 0:
            raise NoFace(f"{source}: no face found (MTCNN, minsize {self.detector.minsize:g} px)")
        k = select_face(found, img.shape, self.select)
        crop = align.align_face(img, found.points[k], "112x112" if self.crop_size == (112, 112) else "112x96")
        return Face(crop, source, found.boxes[k].copy(), found.points[k].copy(), k, len(found), self.select)

    def _forward(self, faces: list[Face], blob: str, mirror: str = "none", l2norm: bool = False) -> np.ndarray:
        f = batch_features(self.net, [x.crop for x in faces], blob, mirror, l2norm)
        return check_finite(f, [x.source for x in faces], blob)


class FaceModel(_Detecting):
    """A trained multi-task run folder, through its model card (:meth:`load`)."""

    def __init__(self, run, card: dict, net, mean, engine: str, gpu, select: str, exported=None):
        super().__init__(net, engine, gpu, select, card.get("input", {}), exported)
        self.run, self.card, self.mean = Path(run), card, mean
        self.features = card["features"]
        self.verification = card.get("verification")

    @classmethod
    def load(cls, run, *, engine: str = "auto", gpu: int | None = None, select: str = "center") -> "FaceModel":
        """The model of run folder ``run`` (its ``model_card.json``): :class:`mtdnn.card.CardError`
        saying what to run when it has none. ``engine``/``gpu``: as the tools' --engine/--gpu.
        With a checked ONNX export in the card (``tools/export_onnx.py --run RUN``), 'onnxruntime'
        (and 'auto' where pycaffe cannot be imported) run the net and MTCNN without pycaffe."""
        from . import exported, inference
        if select not in ("center", "largest"):
            raise ValueError(f"select must be 'center' or 'largest', not {select!r}")
        card = cards.load_card(run)
        weights = cards.check_file(run, card["weights"], "weights")
        mean = cards.feature_mean(run, card)
        blob = card["features"]["blob"]
        outputs = [blob] + ([card["attributes"]["blob"]] if card.get("attributes") else [])
        net_export, mtcnn_exports = exported.of_run(run, card)
        net = inference.load(Path(run) / card["deploy"]["file"], weights, engine=engine, gpu=gpu, outputs=outputs,
                             exported=net_export)
        if mean is not None and card["features"].get("dim") not in (None, mean.shape[-1]):
            raise cards.CardError(f"{cards.card_path(run)}: its feature mean has {mean.shape[-1]} values, its "
                                  f"features {card['features']['dim']}; rerun tools/eval_lfw.py")
        return cls(run, card, net, mean, engine, gpu, select, mtcnn_exports)

    def embed(self, image, aligned: bool = False) -> np.ndarray:
        """The feature vector of the face in ``image`` (the card's blob and mirror mode), float32."""
        return self.embed_faces([self.face(image, aligned)])[0]

    def embed_faces(self, faces: list[Face]) -> np.ndarray:
        """Features of several :class:`Face` (one forward pass), N x D float32."""
        return self._forward(faces, self.features["blob"], self.features.get("mirror", "none"),
                             bool(self.features.get("l2norm")))

    def _rule(self):
        if not self.verification:
            raise cards.CardError(f"{cards.card_path(self.run)} has no verification threshold yet: extract LFW "
                                  f"features with its weights (tools/extract_features.py --mirror concat) and run "
                                  f"tools/eval_lfw.py on them (it records the View 1 threshold); docs/model_card.md")
        return self.verification

    def similarity(self, fa: np.ndarray, fb: np.ndarray) -> float:
        """The card's score of two feature vectors (see :class:`Comparison`)."""
        from .evaluation.lfw import pair_scores
        v = self._rule()
        fa, fb = np.asarray(fa, np.float64)[None], np.asarray(fb, np.float64)[None]
        return float(pair_scores(fa, fb, v["rule"], self.mean)[0])

    def decide(self, score: float) -> bool:
        v = self._rule()
        return score > v["threshold"] if v["rule"] == "sphereface" else score < v["threshold"]

    def compare(self, a, b, aligned: bool = False) -> Comparison:
        """Are the faces of ``a`` and ``b`` the same person, at the card's threshold?"""
        v = self._rule()
        faces = (self.face(a, aligned), self.face(b, aligned))
        fa, fb = self.embed_faces(list(faces))
        score = self.similarity(fa, fb)
        return Comparison(score, self.decide(score), v["threshold"], v["rule"], faces)

    def threshold_meaning(self) -> str:
        """What the threshold is: the rule, the pairs it was chosen on and its accuracy."""
        v = self._rule()
        pct = lambda x: f"{100 * x:.2f} %" if x is not None else "?"  # noqa: E731
        return (f"threshold {v['threshold']:.4f} ({v['rule']} rule: {v['same_when']} = same person), chosen on "
                f"{v['chosen_on']} ({v.get('n_pairs_chosen_on', '?')} pairs, accuracy {pct(v['accuracy_chosen_on'])}); "
                f"accuracy {pct(v['accuracy_tested_on'])} on {v['tested_on']} "
                f"({v.get('n_pairs_tested_on', '?')} pairs not used to choose it)")

    @property
    def attribute_names(self) -> list[str]:
        a = self.card.get("attributes")
        if not a:
            raise cards.CardError(f"{cards.card_path(self.run)}: this model has no attribute head")
        return list(a["names"])

    def attributes(self, image, aligned: bool = False) -> dict[str, float]:
        """The attribute scores of the face in ``image``, ``{name: score}`` (score > 0: present)."""
        names = self.attribute_names
        return dict(zip(names, map(float, self._forward([self.face(image, aligned)], self.card["attributes"]["blob"])[0])))


class MoonModel(_Detecting):
    """A trained MOON attribute classifier (``tools/train_attributes.py`` run folder), with the
    same face handling as :class:`FaceModel` and the same :meth:`attributes`."""

    @classmethod
    def load(cls, run, *, engine: str = "auto", gpu: int | None = None, select: str = "center") -> "MoonModel":
        from .attribute_labels import load_classifier
        net, meta = load_classifier(run, engine=engine, gpu=gpu)
        model = cls(net, engine, gpu, select, cards.DETECTION)
        model.run, model.meta = Path(run), meta
        return model

    @property
    def attribute_names(self) -> list[str]:
        return list(self.meta["attributes"])

    def attributes(self, image, aligned: bool = False) -> dict[str, float]:
        from .attribute_labels import BLOB
        return dict(zip(self.attribute_names, map(float, self._forward([self.face(image, aligned)], BLOB)[0])))
