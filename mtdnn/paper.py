"""The paper's domain tables, in one place: CelebA's 40 attribute names, the paper's attribute
groups (Tab. 1, Tab. 7) and the seven attributes it uses (``PAPER_ATTRIBUTES``).

The names are those of the header line of CelebA's ``list_attr_celeba.txt``, in its order
(``tests/test_generate.py`` checks them against the file when it is present).
"""
from __future__ import annotations

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)

# Tab. 1 of the paper; "all" is the order of Tab. 4, which is the order of the attribute
# columns in the HDF5 files (column j of ``attributes`` is output j of ``attr_pred``).
GROUPS = {
    "none": (),
    "eye": ("Narrow_Eyes",),
    "nose": ("Big_Nose", "Pointy_Nose"),
    "global": ("Chubby", "Double_Chin", "High_Cheekbones", "Male"),
}
GROUPS["all"] = GROUPS["eye"] + GROUPS["nose"] + GROUPS["global"]

# The seven CelebA attributes of the paper (Tab. 1), in the order of its Tab. 4.
PAPER_ATTRIBUTES = GROUPS["all"]


def parse_attributes(spec) -> tuple[str, ...]:
    """Attribute names from a group name (``eye``, ``nose``, ``global``, ``all``, ``none``),
    a comma-separated string of CelebA names, or a sequence of names.

    Raises ValueError naming any attribute that is not one of CelebA's 40, and on duplicates.
    """
    if isinstance(spec, str):
        if spec.strip() in GROUPS:
            return GROUPS[spec.strip()]
        names = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        names = [str(s) for s in spec]
    unknown = [n for n in names if n not in CELEBA_ATTRIBUTES]
    if unknown:
        raise ValueError(
            f"unknown attribute(s) {', '.join(map(repr, unknown))}: use CelebA names "
            f"({', '.join(CELEBA_ATTRIBUTES)}) or a group ({', '.join(GROUPS)})")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"attribute(s) listed twice: {', '.join(dupes)}")
    return tuple(names)
