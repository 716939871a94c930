"""Rendering model folders from ``prototxt_templates/`` and checking their data paths."""
from __future__ import annotations

import os
from pathlib import Path

import jinja2

from mtdnn.paper import PAPER_ATTRIBUTES
from .spec import DATA_PATHS, AttributeCountError, GenerateError, ModelSpec
from .variants import ALIASES, VARIANTS, paper_rows, variant

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "prototxt_templates"
MODELS = REPO / "models"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)), trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)

# Parameters that change the network or its training: when one differs from the variant's,
# the paper's figures no longer describe the model and its readme leaves them out.
_MODEL_FIELDS = ("block", "config", "attributes", "identities", "batch", "width",
                 "pretrain_iter", "finetune_iter", "pretrain_lr", "finetune_lr",
                 "lambda1", "lambda2")


def _render(template: str, **context) -> str:
    text = _env.get_template(template).render(**context)
    # one blank line at most between layers, one newline at the end
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip("\n") + "\n"


def model_files(spec: ModelSpec, base: Path | None = None) -> dict[str, str]:
    """``{file name: text}`` of the model folder of ``spec``.

    ``base``: when given (an absolute folder), the solvers' net and snapshot paths are
    written as absolute paths inside it, so that `caffe train` can be run from anywhere;
    otherwise they are relative to the run folder, the working directory of `caffe train`.
    """
    spec.validate()
    m = spec.view()
    files = {}
    nets = [("train_val.prototxt", "train_val", bool(spec.attributes)),
            ("deploy.prototxt", "deploy", bool(spec.attributes))]
    if spec.attributes:
        nets.insert(0, ("train_val_pretrain.prototxt", "train_val", False))
    for file, kind, attributes in nets:
        files[file] = _render("net.prototxt.j2", m=m, kind=kind, attributes=attributes)
    phases = spec.phases()
    for phase in phases:
        phase.net = phase.net_file
        if base is not None:
            phase.net = str(base / phase.net)
            phase.snapshot_prefix = str(base / phase.snapshot_prefix)
            if phase.weights_hint:
                phase.weights_hint = str(base / phase.weights_hint)
        files[phase.file] = _render("solver.prototxt.j2", m=m, phase=phase)
    files["readme.md"] = _render("readme.md.j2", m=m, phases=phases,
                                 is_variant=spec.name in VARIANTS and bool(spec.paper),
                                 absolute=base is not None)
    return files


def check_data_paths(spec: ModelSpec, names, base: Path) -> None:
    """Check that the data paths ``names`` of ``spec`` exist (relative ones against ``base``,
    the run folder) and fit the model: LMDB folders, HDF5 list files whose .h5 files exist
    and hold an ``attributes`` dataset with one column per attribute and as many rows as the
    LMDB beside it has records. Raises GenerateError naming the first problem."""
    from mtdnn.db import ATTRIBUTE_DATASET

    def h5_rows(flag: str, h5: Path, f) -> int:
        if ATTRIBUTE_DATASET not in f:
            raise GenerateError(f"{flag}: {h5} has no '{ATTRIBUTE_DATASET}' dataset")
        shape = f[ATTRIBUTE_DATASET].shape
        if len(shape) != 2 or shape[1] != len(spec.attributes):
            raise AttributeCountError(
                f"{flag}: {h5} holds attributes of shape {shape}, but the model predicts "
                f"{len(spec.attributes)} ({', '.join(spec.attributes)})")
        return shape[0]

    names = [n for n in names if spec.attributes or "hdf5" not in n]
    check_split_paths(spec, names, base, h5_rows)


def check_split_paths(spec, names, base: Path, h5_rows) -> None:
    """The data-path check every rendered net shares: each path of ``names`` (relative ones
    against ``base``, the run folder) exists; an ``*_lmdb`` one is an LMDB folder; an
    ``*_hdf5`` one is the text file listing .h5 files (HDF5Data's source), each of which exists
    and passes ``h5_rows(flag, h5, open_file)``, which returns its rows; and the rows of a
    split's .h5 files equal the records of its LMDB. Raises GenerateError naming the problem."""
    import h5py

    def resolve(p: str) -> Path:
        return Path(p) if os.path.isabs(p) else base / p

    rows = {}
    for name in names:
        value = getattr(spec, name)
        path, flag = resolve(value), "--" + name.replace("_", "-")
        where = "" if os.path.isabs(value) else f" (relative paths are taken from the run folder {base})"
        if not path.exists():
            raise GenerateError(f"{flag}: {path} does not exist{where}")
        if name.endswith("lmdb"):
            if not (path / "data.mdb").is_file():
                raise GenerateError(f"{flag}: {path} is not an LMDB folder (no data.mdb in it)")
            continue
        if not path.is_file():
            raise GenerateError(f"{flag}: {path} must be the text file listing .h5 files "
                                f"(HDF5Data's source), not a folder")
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        if not lines:
            raise GenerateError(f"{flag}: {path} lists no .h5 file")
        total = 0
        for line in lines:
            h5 = resolve(line)
            if not h5.is_file():
                raise GenerateError(f"{flag}: {path} lists {line}, which does not exist")
            with h5py.File(h5, "r") as f:
                total += h5_rows(flag, h5, f)
        rows[name.split("_")[0]] = total
    _rows_match_records(spec, names, rows, resolve)


def _rows_match_records(spec, names, rows: dict, resolve) -> None:
    from mtdnn.db import lmdb_count
    for split, n in rows.items():
        lmdb_name = f"{split}_lmdb"
        if lmdb_name in names:
            count = lmdb_count(resolve(getattr(spec, lmdb_name)))
            if count != n:
                raise GenerateError(
                    f"--{split}-hdf5 holds {n} attribute rows but --{split}-lmdb holds {count} "
                    f"records: the two are read in step and must match record for record")


def write_files(out_dir: Path, files: dict[str, str]) -> list[Path]:
    """Write ``files`` into ``out_dir`` (created); returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out_dir / name
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    return written


def given_data_paths(params: dict, names=DATA_PATHS) -> tuple[dict, list[str]]:
    """``params`` without its None values, a test path defaulting to its train path when only
    the train path is given; and which of the data paths ``names`` were given."""
    params = {k: v for k, v in params.items() if v is not None}
    for kind in ("lmdb", "hdf5"):
        if f"train_{kind}" in params and f"test_{kind}" not in params:
            params[f"test_{kind}"] = params[f"train_{kind}"]
    return params, [p for p in names if p in params]


def make_spec(out_dir, variant_name: str = "full", **params) -> tuple[ModelSpec, list[str]]:
    """The spec of ``variant_name`` with ``params`` applied, and the data path parameters
    that were given. The model's name defaults to the output folder's name; a test path
    defaults to its train path when only the train path is given."""
    base = variant(variant_name)
    params, given = given_data_paths(params)
    for p in given:
        params[p] = str(params[p])
    params.setdefault("name", Path(out_dir).resolve().name)
    spec = base.replace(**params)
    if any(getattr(spec, k) != getattr(base, k) for k in _MODEL_FIELDS):
        m = spec.view()
        head = (f"Configuration-{spec.config}, {len(spec.attributes)} attribute(s)"
                if spec.attributes else "no attributes")
        title = (f"custom model from {base.name}: {m.block_title}s, {head}, width {spec.width}, "
                 f"{spec.identities} identities, batch {m.batch}")
        spec = spec.replace(paper=(), title=params.get("title", title))
    return spec, given


def render_model(out_dir, variant: str = "full", *, check_paths: bool | None = None,
                 absolute_paths: bool = False, **params) -> list[Path]:
    """Render one model folder into ``out_dir``; returns the paths written.

    ``variant``: a committed variant or alias (``python -m generate list``); ``params``: any
    :class:`~mtdnn.netgen.spec.ModelSpec` field (block, config, attributes, identities, batch,
    width, train_lmdb, test_lmdb, train_hdf5, test_hdf5, pretrain_iter, finetune_iter,
    lambda1, ...). ``check_paths``: None checks the data paths given in ``params``, True
    all of them, False none. ``absolute_paths``: write net, snapshot and data paths as
    absolute paths (relative data paths taken from the current directory) instead of
    paths relative to the run folder ``out_dir``. Bad input raises GenerateError.
    """
    out_dir = Path(out_dir)
    spec, given = make_spec(out_dir, variant, **params)
    base = out_dir.resolve()
    if absolute_paths:
        # given paths are taken from the current directory, placeholders from the run folder
        spec = spec.replace(**{p: str((Path(getattr(spec, p)) if p in given
                                       else base / getattr(spec, p)).resolve()) for p in DATA_PATHS})
    to_check = DATA_PATHS if check_paths else (given if check_paths is None else ())
    check_data_paths(spec, list(to_check), base)
    return write_files(out_dir, model_files(spec, base if absolute_paths else None))


def all_files() -> dict[str, str]:
    """``{path relative to models/: text}`` of every committed model and models/README.md."""
    files = {}
    for name, spec in VARIANTS.items():
        for file, text in model_files(spec).items():
            files[f"{name}/{file}"] = text
    files["README.md"] = _render("models_readme.md.j2", variants=list(VARIANTS.values()),
                                 aliases=ALIASES, view=lambda s: s.view(),
                                 paper_rows=paper_rows, n_attributes=len(PAPER_ATTRIBUTES))
    return files


def render_all(out_dir=MODELS) -> list[Path]:
    """Render every committed variant and models/README.md into ``out_dir`` (default models/)."""
    out_dir = Path(out_dir)
    written = []
    for rel, text in all_files().items():
        path = out_dir / rel
        written += write_files(path.parent, {path.name: text})
    return written


def compare_all(out_dir=MODELS) -> list[str]:
    """Differences between ``out_dir`` and what :func:`render_all` would write: files that
    differ, are missing, or are not the generator's (readme-free stray files included)."""
    out_dir = Path(out_dir)
    expected = all_files()
    problems = []
    for rel, text in expected.items():
        path = out_dir / rel
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif path.read_text() != text:
            problems.append(f"differs: {rel}")
    if out_dir.is_dir():
        for path in sorted(out_dir.rglob("*")):
            rel = path.relative_to(out_dir).as_posix()
            if path.is_file() and rel not in expected:
                problems.append(f"not generated: {rel}")
    return problems
