"""The committed models (``models/<name>/``) and the paper's figures for each.

Every row of the paper's Tables 2, 3, 5, 6 and 7 is one of these folders; rows that are
the same network as another row share its folder (``ALIASES``): Table 5's Fast-Block and
Full-Block rows are the Fast- and Full-Model, Table 6's Configuration-1 and Table 7's
"All attributes" row are the Fast-Model, Table 7's "No attribute" row is the Fast-Model
without attributes. Table 4's "Ours" column is the Full-Model's (``mtdnn.paper.TABLE_4_MODEL``).
The figures and the rows each folder is are :mod:`mtdnn.paper`'s; this module only words them.
"""
from __future__ import annotations

from mtdnn.paper import GROUPS, MODEL_ROWS, PAPER_ATTRIBUTES, TABLE_4, TABLE_4_MODEL, TABLES_2_3, TABLES_5_7
from .spec import GenerateError, ModelSpec

MEGAFACE_ID = "MegaFace rank-1 identification, 1M distractors"
MEGAFACE_VER = "MegaFace verification, TAR at FAR 1e-6"
LFW = "LFW accuracy"


def paper_figures(name: str) -> tuple:
    """The paper's figures of model folder ``name`` as (table, row, measure, value) rows, from
    :mod:`mtdnn.paper`: Tab. 2 and 3 first, then Tab. 5-7 in ``MODEL_ROWS``' order, then Tab. 4."""
    rows = []
    for table, row in MODEL_ROWS.get(name, {}).items():
        if table == "2":
            _, _, rank1, tar = TABLES_2_3[row]
            rows += [("Table 2", row, MEGAFACE_ID, rank1), ("Table 3", row, MEGAFACE_VER, tar)]
        else:
            megaface, lfw = TABLES_5_7[table][1][row]
            rows += [(f"Table {table}", row, MEGAFACE_ID, megaface), (f"Table {table}", row, LFW, lfw)]
    if name == TABLE_4_MODEL:
        rows += [("Table 4", "Ours", f"{a} accuracy", ours) for a, (_, ours) in TABLE_4.items()]
    return tuple((table, row, measure, f"{value:.2f}%") for table, row, measure, value in rows)


def _spec(name, title, block, attributes="all", config=1):
    return ModelSpec(name=name, title=title, block=block, config=config,
                     attributes=GROUPS[attributes], paper=paper_figures(name))


_ALL = f"{len(PAPER_ATTRIBUTES)} attributes"
VARIANTS = {s.name: s for s in (
    _spec("full", f"Full-Model (Full-Blocks, Configuration-1, {_ALL})", "full"),
    _spec("fast", f"Fast-Model (Fast-Blocks, Configuration-1, {_ALL})", "fast"),
    _spec("full_noattr", "Full-Model without attributes (identity only)", "full", "none"),
    _spec("fast_noattr", "Fast-Model without attributes (identity only)", "fast", "none"),
    _spec("block_variants", "Variants-Blocks (2 convs on the main road, 1 on the bypass), "
          f"Configuration-1, {_ALL}", "variants"),
    _spec("config2", "Fast-Model with Configuration-2 (fc5 shared by both tasks)", "fast", config=2),
    _spec("config3", "Fast-Model with Configuration-3 (an independent fc for each task)", "fast", config=3),
    *(_spec(f"attr_{g}", f"Fast-Model with the {g} attribute{'s' * (len(GROUPS[g]) > 1)} only "
            f"({', '.join(GROUPS[g])})", "fast", g) for g in ("eye", "nose", "global")),
)}

# Other names for the same networks (paper rows that another folder already is).
ALIASES = {
    "block_full": "full", "block_fast": "fast", "config1": "fast",
    "attr_all": "fast", "attr_none": "fast_noattr",
}


def paper_rows(spec: ModelSpec) -> str:
    """The paper's rows that ``spec`` is, e.g. "Table 2, 3: Full-Model; Table 5: Full-Block"."""
    rows = {}
    for table, row, _, _ in spec.paper:
        tables = rows.setdefault(row, [])
        if table not in tables:
            tables.append(table)
    return "; ".join("Table " + ", ".join(t.split()[1] for t in tables) + ": " + row
                     for row, tables in rows.items())


def variant(name: str) -> ModelSpec:
    """The spec of a committed variant or alias; GenerateError names the unknown ones."""
    key = ALIASES.get(name, name)
    if key not in VARIANTS:
        raise GenerateError(
            f"unknown variant {name!r}: use one of {', '.join(VARIANTS)} "
            f"(aliases: {', '.join(f'{a}={t}' for a, t in ALIASES.items())})")
    return VARIANTS[key]
