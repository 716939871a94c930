"""The paper's domain tables, in one place: CelebA's 40 attribute names, the paper's attribute
groups (Tab. 1, Tab. 7) and the seven attributes it uses (``PAPER_ATTRIBUTES``); and the paper's
figures (Tab. 2-7: ``TABLES_2_3``, ``TABLE_4``, ``TABLES_5_7``) with the paper rows each of our
model folders is (``MODEL_ROWS``). The rendered readmes of ``models/`` (``mtdnn.netgen``), the
report (``mtdnn.evaluation.report``) and the attribute table (``mtdnn.evaluation.attributes``)
take their figures from here.

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


# ---- The paper's figures (Tab. 2-7), each number of each table once. ----------------------
# Every figure of Tab. 2, 3 and 5-7 is on MegaFace's 1M distractors (LFW: View 2, 6,000 pairs).
MEGAFACE_DISTRACTORS = 1_000_000

# Tab. 2 and 3: method -> (released, protocol, rank-1 %, TAR at FAR 1e-6 % or None), in Tab. 2's
# order. Google - FaceNet v8's TAR (86.47) is from the text of Sec. 4.7, not from Tab. 3.
TABLES_2_3 = {
    "Google - FaceNet v8": ("yes", "Large", 70.50, 86.47),
    "NTechLAB - Large": ("no", "Large", 73.30, None),
    "Faceall Co. - Norm_1600": ("no", "Large", 64.80, None),
    "Faceall Co. - FaceAll_1600": ("no", "Large", 63.98, None),
    "Lightened CNN": ("yes", "Small", 67.11, 77.46),
    "Center Loss": ("yes", "Small", 65.23, 76.52),
    "LBP": ("yes", "Small", 3.02, 2.17),
    "Joint Bayes": ("yes", "Small", 2.33, 1.46),
    "NTechLAB - Small": ("no", "Small", 58.22, 66.37),
    "3DiVi Company": ("no", "Small", 33.71, 36.93),
    "SIAT_MMLAB": ("no", "Small", 65.23, 76.72),
    "Barebones FR": ("no", "Small", 59.36, 59.04),
    "Fast-Model (without Attribute)": ("yes", "Small", 70.28, 58.20),
    "Fast-Model": ("yes", "Small", 73.07, 68.56),
    "Full-Model (without Attribute)": ("yes", "Small", 74.25, 76.22),
    "Full-Model": ("yes", "Small", 77.74, 79.24),
}

# Tab. 4: attribute -> (MOON %, the paper's model %), rows in PAPER_ATTRIBUTES' order
# (Narrow_Eyes, Big_Nose, Pointy_Nose, Chubby, Double_Chin, High_Cheekbones, Male).
TABLE_4 = dict(zip(PAPER_ATTRIBUTES, (
    (83.40, 85.60), (71.00, 75.30), (70.50, 73.90), (93.30, 93.50), (94.80, 96.70),
    (74.10, 76.80), (96.90, 97.30))))

# Tab. 5, 6, 7: table -> (title, {row: (MegaFace rank-1 %, LFW %)}).
TABLES_5_7 = {
    "5": ("Comparison of building block structure",
          {"Fast-Block": (73.07, 97.62), "Full-Block": (77.74, 98.15), "Variants-Block": (69.63, 97.50)}),
    "6": ("Comparison of different configurations",
          {"Configuration-1": (73.07, 97.62), "Configuration-2": (72.05, 97.50),
           "Configuration-3": (69.40, 97.60)}),
    "7": ("Comparison of different groups of face attributes",
          {"No attribute": (70.28, 97.20), "Eye attribute": (72.23, 97.49),
           "Nose attributes": (71.72, 97.63), "Global attributes": (71.92, 97.45),
           "All attributes": (73.07, 97.62)}),
}

# Our model folder (models/<name>/) -> {table: the paper's row it is}; "2" stands for Tab. 2
# and 3. The report finds a run's rows here, the rendered readmes their figures.
MODEL_ROWS = {
    "full": {"2": "Full-Model", "5": "Full-Block"},
    "fast": {"2": "Fast-Model", "5": "Fast-Block", "6": "Configuration-1", "7": "All attributes"},
    "full_noattr": {"2": "Full-Model (without Attribute)"},
    "fast_noattr": {"2": "Fast-Model (without Attribute)", "7": "No attribute"},
    "block_variants": {"5": "Variants-Block"},
    "config2": {"6": "Configuration-2"},
    "config3": {"6": "Configuration-3"},
    "attr_eye": {"7": "Eye attribute"},
    "attr_nose": {"7": "Nose attributes"},
    "attr_global": {"7": "Global attributes"},
}
# Tab. 4's "Ours" column: the paper does not say which of its models; we read it as the Full-Model.
TABLE_4_MODEL = "full"
