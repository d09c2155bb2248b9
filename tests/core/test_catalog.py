"""Structure catalog: every TotalSegmentator class and common synonyms get a sensible category."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ir_planner.core.catalog import (
    CATEGORY_DEFAULTS,
    Category,
    canonical_name,
    lookup,
    normalise_name,
)

#: Names that are deliberately OTHER (truly unknown to the catalog). Empty: every
#: TotalSegmentator total / total_mr / total_v1 class has a category.
EXPECTED_OTHER: set[str] = set()

#: Expected category of every class whose category is not obvious from a simple rule,
#: plus representatives of each group (checked by exact value).
EXPECTED = {
    "liver": Category.SOLID_ORGAN, "spleen": Category.SOLID_ORGAN,
    "kidney_left": Category.SOLID_ORGAN, "kidney_cyst_left": Category.SOLID_ORGAN,
    "adrenal_gland_right": Category.SOLID_ORGAN, "thyroid_gland": Category.SOLID_ORGAN,
    "prostate": Category.SOLID_ORGAN, "pancreas": Category.SOLID_ORGAN,
    "gallbladder": Category.BOWEL, "urinary_bladder": Category.BOWEL,
    "colon": Category.BOWEL, "small_bowel": Category.BOWEL, "duodenum": Category.BOWEL,
    "stomach": Category.BOWEL, "esophagus": Category.BOWEL,
    "aorta": Category.VESSEL, "inferior_vena_cava": Category.VESSEL,
    "portal_vein_and_splenic_vein": Category.VESSEL, "pulmonary_vein": Category.VESSEL,
    "pulmonary_artery": Category.VESSEL, "lung_vessels": Category.VESSEL,
    "brachiocephalic_trunk": Category.VESSEL, "atrial_appendage_left": Category.VESSEL,
    "heart": Category.VESSEL, "heart_myocardium": Category.VESSEL,
    "heart_ventricle_left": Category.VESSEL, "iliac_vena_left": Category.VESSEL,
    "lung_lower_lobe_left": Category.LUNG, "lung_left": Category.LUNG, "lung": Category.LUNG,
    "trachea": Category.AIRWAY, "lung_trachea_bronchia": Category.AIRWAY,
    "rib_left_7": Category.BONE, "vertebrae_L1": Category.BONE, "vertebrae": Category.BONE,
    "intervertebral_discs": Category.BONE, "sacrum": Category.BONE, "hip_left": Category.BONE,
    "costal_cartilages": Category.BONE, "sternum": Category.BONE, "skull": Category.BONE,
    "clavicula_left": Category.BONE,
    "spinal_cord": Category.NERVE, "brain": Category.NERVE,
    "iliopsoas_left": Category.MUSCLE, "autochthon_right": Category.MUSCLE,
    "gluteus_maximus_left": Category.MUSCLE,
    "face": Category.BODY,
}


@pytest.fixture(scope="module")
def totalseg_names(shared_data: Path) -> dict[str, list[str]]:
    tables = json.loads((shared_data / "totalseg-ct" / "classes.json").read_text())
    names = {task: list(table.values()) for task, table in tables.items()}
    names["masks"] = [f.name[:-7] for f in (shared_data / "totalseg-ct" / "masks").glob("*.nii.gz")]
    return names


def test_tables_have_the_expected_sizes(totalseg_names: dict[str, list[str]]) -> None:
    assert len(totalseg_names["total"]) == 117
    assert len(totalseg_names["total_mr"]) == 50
    assert len(totalseg_names["total_v1"]) == 104


@pytest.mark.parametrize("task", ["total", "total_mr", "total_v1", "masks"])
def test_every_totalsegmentator_class_is_known(
    task: str, totalseg_names: dict[str, list[str]]
) -> None:
    unknown = [n for n in totalseg_names[task]
               if lookup(n).category is Category.OTHER and n not in EXPECTED_OTHER]
    assert unknown == []
    assert all(lookup(n).known for n in totalseg_names[task] if n not in EXPECTED_OTHER)


def test_all_expected_names_are_real_classes(totalseg_names: dict[str, list[str]]) -> None:
    every = {n for names in totalseg_names.values() for n in names}
    assert set(EXPECTED) <= every


@pytest.mark.parametrize(("name", "category"), sorted(EXPECTED.items()))
def test_category_of_totalsegmentator_class(name: str, category: Category) -> None:
    info = lookup(name)
    assert info.category is category
    defaults = CATEGORY_DEFAULTS[category]
    # spleen and pancreas: solid organs not to be traversed on the way to another target
    forbidden = defaults.forbidden or name in ("spleen", "pancreas")
    assert (info.margin_mm, info.forbidden) == (defaults.margin_mm, forbidden)


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("IVC", Category.VESSEL), ("ivc", Category.VESSEL), ("SVC", Category.VESSEL),
        ("portal vein", Category.VESSEL), ("Portal Vein", Category.VESSEL), ("PV", Category.VESSEL),
        ("hepatic veins", Category.VESSEL), ("Hepatic-Vein", Category.VESSEL),
        ("hepatic artery", Category.VESSEL), ("SMA", Category.VESSEL), ("SMV", Category.VESSEL),
        ("celiac trunk", Category.VESSEL), ("renal artery left", Category.VESSEL),
        ("Liver", Category.SOLID_ORGAN), ("LIVER.nii.gz", Category.SOLID_ORGAN),
        ("left kidney", Category.SOLID_ORGAN), ("Spleen", Category.SOLID_ORGAN),
        ("Tumor 1", Category.TARGET), ("tumour_2", Category.TARGET), ("lesion", Category.TARGET),
        ("Lesion 3", Category.TARGET), ("liver_tumor", Category.TARGET), ("GTV", Category.TARGET),
        ("GTV-1", Category.TARGET), ("PTV_2", Category.TARGET), ("CTV", Category.TARGET),
        ("HCC", Category.TARGET), ("Neoplasm", Category.TARGET),
        ("Morphologically Abnormal Structure", Category.TARGET), ("metastasis", Category.TARGET), ("nodule", Category.TARGET),
        ("gall bladder", Category.BOWEL), ("bladder", Category.BOWEL),
        ("large intestine", Category.BOWEL), ("Rectum", Category.BOWEL),
        ("spinal canal", Category.NERVE), ("Ribs", Category.BONE), ("Lungs", Category.LUNG),
        ("Body", Category.BODY), ("External", Category.BODY), ("Diaphragm", Category.MUSCLE),
        # ducts and the urinary tract are forbidden like hollow viscera (leaks)
        ("common bile duct", Category.BOWEL), ("CBD", Category.BOWEL),
        ("Pancreatic duct", Category.BOWEL), ("hepatic_duct", Category.BOWEL),
        ("Ureter", Category.BOWEL), ("ureter_left", Category.BOWEL),
        ("pericardium", Category.VESSEL), ("pancreas", Category.SOLID_ORGAN),
    ],
)
def test_synonyms(name: str, category: Category) -> None:
    assert lookup(name).category is category


@pytest.mark.parametrize("name", ["foo", "ribbon", "massive", "segment_1", "label_7", "",
                                  "conduct", "product"])
def test_unknown_names_get_the_neutral_default(name: str) -> None:
    info = lookup(name)
    assert info.category is Category.OTHER and not info.known
    assert not info.forbidden and info.margin_mm == 0.0
    assert info.color == CATEGORY_DEFAULTS[Category.OTHER].color


def test_colours() -> None:
    assert lookup("liver").color == (0.87, 0.51, 0.40)
    assert lookup("liver_tumor").color == CATEGORY_DEFAULTS[Category.TARGET].color
    venous = lookup("iliac_vena_left").color
    arterial = lookup("iliac_artery_left").color
    assert venous[2] > venous[0] and arterial[0] > arterial[2]  # veins blue, arteries red
    for name in ("liver", "aorta", "rib_left_7", "foo"):
        assert all(0.0 <= c <= 1.0 for c in lookup(name).color)


def test_normalise_and_canonical_names() -> None:
    assert normalise_name(" Hepatic  Veins.nii.gz") == "hepatic_veins"
    assert normalise_name("liver.seg.nrrd") == "liver"
    assert canonical_name("IVC") == "inferior_vena_cava"
    assert canonical_name("Tumor 1") == "tumour_1"
    assert canonical_name("rib_left_7") == "rib_left_7"
