"""Structure categories and the catalog of known structure names.

Known names (TotalSegmentator classes, common radiological synonyms) get a
category, a display colour and a default safety margin automatically; an unknown
name gets a neutral default (category ``OTHER``, not forbidden).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "Category",
    "CategoryDefaults",
    "CATEGORY_DEFAULTS",
    "StructureInfo",
    "lookup",
    "normalise_name",
]


class Category(str, Enum):
    """Clinical category of a structure, which sets planning defaults."""

    VESSEL = "vessel"
    BONE = "bone"
    LUNG = "lung"
    AIRWAY = "airway"
    BOWEL = "bowel"
    SOLID_ORGAN = "solid_organ"
    NERVE = "nerve"
    TARGET = "target"
    MUSCLE = "muscle"
    BODY = "body"
    OTHER = "other"


@dataclass(frozen=True)
class CategoryDefaults:
    """Planning defaults for one category.

    Attributes
    ----------
    forbidden : bool
        Whether a needle may not pass through (or within ``margin_mm`` of) it.
    margin_mm : float
        Default safety margin in mm between the needle surface and the structure.
    color : tuple of float
        Default RGB display colour, components in [0, 1].
    """

    forbidden: bool
    margin_mm: float
    color: tuple[float, float, float]


# Margins: conservative starting points an IR would recognise; every one is
# overridable per structure in the plan.
CATEGORY_DEFAULTS: dict[Category, CategoryDefaults] = {
    Category.VESSEL: CategoryDefaults(True, 3.0, (0.85, 0.15, 0.15)),
    Category.BONE: CategoryDefaults(True, 2.0, (0.95, 0.92, 0.80)),
    Category.LUNG: CategoryDefaults(True, 5.0, (0.55, 0.75, 0.95)),
    Category.AIRWAY: CategoryDefaults(True, 5.0, (0.40, 0.65, 0.90)),
    Category.BOWEL: CategoryDefaults(True, 3.0, (0.80, 0.60, 0.35)),
    Category.NERVE: CategoryDefaults(True, 5.0, (1.00, 0.90, 0.20)),
    Category.SOLID_ORGAN: CategoryDefaults(False, 0.0, (0.70, 0.45, 0.40)),
    Category.TARGET: CategoryDefaults(False, 0.0, (0.10, 0.90, 0.20)),
    Category.MUSCLE: CategoryDefaults(False, 0.0, (0.75, 0.35, 0.35)),
    Category.BODY: CategoryDefaults(False, 0.0, (0.90, 0.75, 0.65)),
    Category.OTHER: CategoryDefaults(False, 0.0, (0.60, 0.60, 0.60)),
}

# Specific colours for well-known organs (RGB 0-1), otherwise the category colour.
_ORGAN_COLORS: dict[str, tuple[float, float, float]] = {
    "liver": (0.87, 0.51, 0.40),
    "spleen": (0.62, 0.27, 0.45),
    "kidney": (0.72, 0.40, 0.30),
    "pancreas": (0.98, 0.80, 0.55),
    "gallbladder": (0.35, 0.60, 0.25),
    "stomach": (0.85, 0.65, 0.55),
    "aorta": (0.90, 0.10, 0.10),
    "inferior_vena_cava": (0.20, 0.30, 0.85),
    "portal_vein": (0.45, 0.30, 0.85),
    "hepatic_vein": (0.25, 0.40, 0.90),
    "heart": (0.80, 0.25, 0.30),
}

# (regex on the normalised name, category). First match wins; order matters.
_RULES: list[tuple[str, Category]] = [
    (r"(tumou?r|lesion|metast|target|nodule|hcc|mass)", Category.TARGET),
    (r"(cyst)", Category.OTHER),
    (r"(trachea|bronch|airway)", Category.AIRWAY),
    (r"(lung_vessel|pulmonary_(artery|vein)|pulmonary_vessel)", Category.VESSEL),
    (r"(lung|pleura)", Category.LUNG),
    (r"(aort|arter|vein|vena|venous|ivc\b|^ivc|svc|portal|splenic_v|mesenteric|vessel|"
     r"brachiocephalic|carotid|subclavian|jugular|atrial_appendage|celiac|hepatic_v)",
     Category.VESSEL),
    (r"(heart)", Category.VESSEL),
    (r"(rib|vertebra|sacrum|hip|femur|humerus|scapula|clavic|sternum|skull|bone|costal_cart|"
     r"spine|pelvi)", Category.BONE),
    (r"(spinal_cord|nerve|plexus|cauda)", Category.NERVE),
    (r"(colon|bowel|duoden|jejun|ileum|stomach|esophag|oesophag|rectum|intestin|caecum|cecum|"
     r"appendix|gut)", Category.BOWEL),
    (r"(liver|spleen|kidney|pancrea|gallbladder|adrenal|bladder|prostate|thyroid|uterus|"
     r"ovary|brain|parenchyma)", Category.SOLID_ORGAN),
    (r"(glute|iliopsoas|psoas|autochthon|muscle|diaphragm)", Category.MUSCLE),
    (r"(body|skin|outline|external)", Category.BODY),
]

# Common synonyms → canonical name used for colours and categories.
_SYNONYMS: dict[str, str] = {
    "ivc": "inferior_vena_cava",
    "svc": "superior_vena_cava",
    "pv": "portal_vein",
    "hepatic_veins": "hepatic_vein",
    "portal_vein_and_splenic_vein": "portal_vein",
    "left_kidney": "kidney_left",
    "right_kidney": "kidney_right",
    "gall_bladder": "gallbladder",
    "tumor": "tumour",
    "small_intestine": "small_bowel",
    "large_bowel": "colon",
    "large_intestine": "colon",
    "lungs": "lung",
    "spinal_canal": "spinal_cord",
}


def normalise_name(name: str) -> str:
    """Lower-case, spaces/dashes to underscores, strip file suffixes like ``.nii.gz``."""
    stem = re.sub(r"\.(nii\.gz|nii|nrrd|mha|mhd|seg\.nrrd)$", "", name.strip(), flags=re.I)
    return re.sub(r"[\s\-]+", "_", stem).lower()


@dataclass(frozen=True)
class StructureInfo:
    """What the catalog knows about a name."""

    category: Category
    color: tuple[float, float, float]
    margin_mm: float
    forbidden: bool
    known: bool


def lookup(name: str) -> StructureInfo:
    """Category, colour, default margin and forbidden flag for a structure name.

    Parameters
    ----------
    name : str
        Structure name as found in a file ("liver", "Aorta", "rib_left_7", "IVC").

    Returns
    -------
    StructureInfo
        ``known`` is False when no rule matched (neutral defaults are returned).

    Examples
    --------
    >>> lookup("rib_left_7").category
    <Category.BONE: 'bone'>
    >>> lookup("IVC").category
    <Category.VESSEL: 'vessel'>
    """
    norm = normalise_name(name)
    canonical = _SYNONYMS.get(norm, norm)
    category = Category.OTHER
    known = False
    for pattern, cat in _RULES:
        if re.search(pattern, canonical):
            category, known = cat, True
            break
    defaults = CATEGORY_DEFAULTS[category]
    color = defaults.color
    for key, organ_color in _ORGAN_COLORS.items():
        if canonical.startswith(key):
            color = organ_color
            break
    return StructureInfo(category, color, defaults.margin_mm, defaults.forbidden, known)
