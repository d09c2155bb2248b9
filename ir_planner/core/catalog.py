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
    "canonical_name",
    "normalise_name",
]


class Category(str, Enum):  # noqa: UP042 (keep str(Category.X) unchanged)
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
# Keys are matched against the start of the canonical name.
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
# Venous vessels without a specific colour are drawn blue, arteries red (category colour).
_VENOUS_COLOR: tuple[float, float, float] = (0.25, 0.35, 0.85)
_VENOUS = re.compile(r"(vein|vena|venous|(^|_)(ivc|svc|smv|imv)(_|$))")

# (regex on the canonical name, category). First match wins; order matters.
# Names are normalised first (lower case, "_" between words), so ``(^|_)`` and
# ``(_|$)`` mark word boundaries for short tokens that occur inside other words.
_RULES: list[tuple[str, Category]] = [
    # Targets: lesions and radiotherapy target volumes.
    (r"(tumou?r|lesion|metast|target|nodule|neoplas|carcinom|morphologically_abnormal|(^|_)(hcc|mass|gtv|ctv|itv|ptv|roi_target)(_|\d|$))",
     Category.TARGET),
    # A cyst inside an organ is part of that organ for needle planning.
    (r"(^|_)cysts?(_|$)", Category.SOLID_ORGAN),
    (r"(trachea|bronch|airway|larynx)", Category.AIRWAY),
    (r"(lung_vessel|pulmonary_(artery|vein|trunk)|pulmonary_vessel)", Category.VESSEL),
    (r"(lung|pleura)", Category.LUNG),
    (r"(aort|arter|vein|vena|venous|(^|_)(ivc|svc|sma|smv|imv|ima)(_|$)|portal|splenic_v|"
     r"mesenteric|vessel|brachiocephalic|carotid|subclavian|jugular|atrial_appendage|celiac|"
     r"coeliac|hepatic_v|renal_v|renal_a|(^|_)(heart|atrium|ventricle|myocardium)(_|$)|"
     r"(^|_)heart|pericard)", Category.VESSEL),
    (r"((^|_)ribs?(_|\d|$)|vertebra|sacrum|coccyx|(^|_)hips?(_|$)|femur|humerus|scapula|"
     r"clavic|sternum|skull|bone|costal_cart|(^|_)spine(_|$)|pelvic_bone|(^|_)pelvis_bone|"
     r"mandible|tibia|fibula|radius|ulna|patella|intervertebral|(^|_)discs?(_|$))",
     Category.BONE),
    (r"(spinal_cord|spinal_canal|nerve|plexus|cauda|(^|_)brain|brainstem|cerebell)",
     Category.NERVE),
    # Hollow viscera: bowel, stomach, oesophagus and also gallbladder and urinary
    # bladder (puncturing them risks bile or urine leak); all forbidden by default.
    (r"(colon|bowel|duoden|jejun|ileum|stomach|esophag|oesophag|rectum|intestin|caecum|cecum|"
     r"appendix|(^|_)gut(_|$)|gallbladder|gall_bladder|urinary_bladder|(^|_)bladder(_|$))",
     Category.BOWEL),
    # Ducts and the urinary tract: a puncture leaks bile, pancreatic juice or urine
    # (forbidden like the hollow viscera, checked before the organ they run in).
    (r"(bile_duct|biliary|choledoch|(^|_)(cbd|chd)(_|$)|hepatic_duct|cystic_duct|"
     r"pancreatic_duct|wirsung|(^|_)ducts?(_|$)|ureter|urethra)", Category.BOWEL),
    (r"(liver|hepat|spleen|splen|kidney|renal|pancrea|adrenal|prostate|thyroid|uterus|"
     r"ovary|testis|parenchyma|(^|_)organ(_|$))", Category.SOLID_ORGAN),
    (r"(glute|iliopsoas|psoas|autochthon|muscle|diaphragm|(^|_)erector|quadratus|"
     r"rectus_abdominis|oblique|latissimus|trapezius|pectoralis)", Category.MUSCLE),
    (r"((^|_)body(_|$)|skin|outline|external|(^|_)face(_|$)|subcutaneous|(^|_)fat(_|$))",
     Category.BODY),
]

# Solid organs a needle must not traverse on its way to a target elsewhere: the spleen
# (haemorrhage) and the pancreas (pancreatitis, fistula). Forbidden with a 0 mm margin;
# a target inside one of them is allowed to be reached through it.
_AVOIDED_ORGANS = re.compile(r"(spleen|splen(ic)?(_|$)|pancreas|pancrea(tic)?(_|$))")

# Common synonyms → canonical name used for colours and categories.
_SYNONYMS: dict[str, str] = {
    "ivc": "inferior_vena_cava",
    "svc": "superior_vena_cava",
    "pv": "portal_vein",
    "mpv": "portal_vein",
    "main_portal_vein": "portal_vein",
    "hepatic_veins": "hepatic_vein",
    "hv": "hepatic_vein",
    "portal_vein_and_splenic_vein": "portal_vein",
    "portal_and_splenic_vein": "portal_vein",
    "sma": "superior_mesenteric_artery",
    "smv": "superior_mesenteric_vein",
    "left_kidney": "kidney_left",
    "right_kidney": "kidney_right",
    "gall_bladder": "gallbladder",
    "tumor": "tumour",
    "small_intestine": "small_bowel",
    "large_bowel": "colon",
    "large_intestine": "colon",
    "lungs": "lung",
    "spinal_canal": "spinal_cord",
    "cord": "spinal_cord",
    "bladder": "urinary_bladder",
    "oesophagus": "esophagus",
    "vertebrae": "vertebra",
}


def normalise_name(name: str) -> str:
    """Lower-case, spaces/dashes to underscores, strip file suffixes like ``.nii.gz``."""
    stem = re.sub(r"\.(nii\.gz|nii|nrrd|mha|mhd|seg\.nrrd)$", "", name.strip(), flags=re.I)
    return re.sub(r"[\s\-]+", "_", stem).lower()


def canonical_name(name: str) -> str:
    """The normalised name with common synonyms replaced (``"IVC"`` → ``"inferior_vena_cava"``).

    A trailing number (``"Tumor 1"``, ``"lesion_2"``) is kept; the synonym table is
    also tried without it.
    """
    norm = normalise_name(name)
    if norm in _SYNONYMS:
        return _SYNONYMS[norm]
    match = re.fullmatch(r"(.*?)(_?\d+)", norm)
    if match and match.group(1) in _SYNONYMS:
        return _SYNONYMS[match.group(1)] + match.group(2)
    return norm


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
    canonical = canonical_name(name)
    category = Category.OTHER
    known = False
    for pattern, cat in _RULES:
        if re.search(pattern, canonical):
            category, known = cat, True
            break
    defaults = CATEGORY_DEFAULTS[category]
    color = defaults.color
    for key, organ_color in _ORGAN_COLORS.items():
        if category is not Category.TARGET and canonical.startswith(key):
            color = organ_color
            break
    else:
        if category is Category.VESSEL and _VENOUS.search(canonical):
            color = _VENOUS_COLOR
    forbidden = defaults.forbidden
    if category is Category.SOLID_ORGAN and _AVOIDED_ORGANS.match(canonical):
        # Not traversed on the way to another target (bleeding, pancreatitis); allowed
        # for paths to a target inside it (see PlanningEngine.allowed_at_target).
        forbidden = True
    return StructureInfo(category, color, defaults.margin_mm, forbidden, known)
