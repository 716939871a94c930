"""The committed models (``models/<name>/``) and the paper's figures for each.

Every row of the paper's Tables 2, 3, 5, 6 and 7 is one of these folders; rows that are
the same network as another row share its folder (``ALIASES``): Table 5's Fast-Block and
Full-Block rows are the Fast- and Full-Model, Table 6's Configuration-1 and Table 7's
"All attributes" row are the Fast-Model, Table 7's "No attribute" row is the Fast-Model
without attributes.
"""
from __future__ import annotations

from mtdnn.paper import GROUPS
from .spec import GenerateError, ModelSpec

MEGAFACE_ID = "MegaFace rank-1 identification, 1M distractors"
MEGAFACE_VER = "MegaFace verification, TAR at FAR 1e-6"
LFW = "LFW accuracy"
T2, T3, T4, T5, T6, T7 = (f"Table {i}" for i in range(2, 8))
_TABLE4 = tuple((T4, "Ours", f"{a} accuracy", v) for a, v in (
    ("Narrow_Eyes", "85.60%"), ("Big_Nose", "75.30%"), ("Pointy_Nose", "73.90%"),
    ("Chubby", "93.50%"), ("Double_Chin", "96.70%"), ("High_Cheekbones", "76.80%"),
    ("Male", "97.30%")))


def _spec(name, title, block, attributes="all", config=1, paper=()):
    return ModelSpec(name=name, title=title, block=block, config=config,
                     attributes=GROUPS[attributes], paper=tuple(paper))


VARIANTS = {s.name: s for s in (
    _spec("full", "Full-Model (Full-Blocks, Configuration-1, 7 attributes)", "full", paper=[
        (T2, "Full-Model", MEGAFACE_ID, "77.74%"),
        (T3, "Full-Model", MEGAFACE_VER, "79.24%"),
        (T5, "Full-Block", MEGAFACE_ID, "77.74%"), (T5, "Full-Block", LFW, "98.15%"),
        *_TABLE4]),
    _spec("fast", "Fast-Model (Fast-Blocks, Configuration-1, 7 attributes)", "fast", paper=[
        (T2, "Fast-Model", MEGAFACE_ID, "73.07%"),
        (T3, "Fast-Model", MEGAFACE_VER, "68.56%"),
        (T5, "Fast-Block", MEGAFACE_ID, "73.07%"), (T5, "Fast-Block", LFW, "97.62%"),
        (T6, "Configuration-1", MEGAFACE_ID, "73.07%"), (T6, "Configuration-1", LFW, "97.62%"),
        (T7, "All attributes", MEGAFACE_ID, "73.07%"), (T7, "All attributes", LFW, "97.62%")]),
    _spec("full_noattr", "Full-Model without attributes (identity only)", "full", "none", paper=[
        (T2, "Full-Model (without Attribute)", MEGAFACE_ID, "74.25%"),
        (T3, "Full-Model (without Attribute)", MEGAFACE_VER, "76.22%")]),
    _spec("fast_noattr", "Fast-Model without attributes (identity only)", "fast", "none", paper=[
        (T2, "Fast-Model (without Attribute)", MEGAFACE_ID, "70.28%"),
        (T3, "Fast-Model (without Attribute)", MEGAFACE_VER, "58.20%"),
        (T7, "No attribute", MEGAFACE_ID, "70.28%"), (T7, "No attribute", LFW, "97.20%")]),
    _spec("block_variants", "Variants-Blocks (2 convs on the main road, 1 on the bypass), "
          "Configuration-1, 7 attributes", "variants", paper=[
              (T5, "Variants-Block", MEGAFACE_ID, "69.63%"), (T5, "Variants-Block", LFW, "97.50%")]),
    _spec("config2", "Fast-Model with Configuration-2 (fc5 shared by both tasks)", "fast",
          config=2, paper=[(T6, "Configuration-2", MEGAFACE_ID, "72.05%"),
                           (T6, "Configuration-2", LFW, "97.50%")]),
    _spec("config3", "Fast-Model with Configuration-3 (an independent fc for each task)", "fast",
          config=3, paper=[(T6, "Configuration-3", MEGAFACE_ID, "69.40%"),
                           (T6, "Configuration-3", LFW, "97.60%")]),
    _spec("attr_eye", "Fast-Model with the eye attribute only (Narrow_Eyes)", "fast", "eye", paper=[
        (T7, "Eye attribute", MEGAFACE_ID, "72.23%"), (T7, "Eye attribute", LFW, "97.49%")]),
    _spec("attr_nose", "Fast-Model with the nose attributes only (Big_Nose, Pointy_Nose)", "fast",
          "nose", paper=[(T7, "Nose attributes", MEGAFACE_ID, "71.72%"),
                         (T7, "Nose attributes", LFW, "97.63%")]),
    _spec("attr_global", "Fast-Model with the global attributes only (Chubby, Double_Chin, "
          "High_Cheekbones, Male)", "fast", "global", paper=[
              (T7, "Global attributes", MEGAFACE_ID, "71.92%"),
              (T7, "Global attributes", LFW, "97.45%")]),
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
