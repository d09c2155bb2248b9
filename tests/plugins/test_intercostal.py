"""First-party plugin ``plugins/intercostal``: risk term and constraint on an analytic rib cage.

Two horizontal ribs (slabs of voxels) on a 1 mm grid: the lower rib's voxels up to
z = 5 mm, the upper rib's from z = 20 mm. Voxel centres on integer mm, so the rib
space spans z in (5.5, 19.5) mm and a point at height z sits at
f = (z - 5.5) / 14 of it (an exact oracle, up to the 0.5 mm probe step).
"""

from __future__ import annotations

import numpy as np
import pytest

from ir_planner.core.labels import LabelMap
from ir_planner.core.plugins import PluginError, PluginRegistry, Status, isolated_registry
from ir_planner.core.volume import ImageVolume
from ir_planner.planning.search_plugins import CandidatePaths, PluginTerms, score_plugin_terms


@pytest.fixture(scope="module")
def ribs() -> LabelMap:
    # grid: x -40..40, y -60..10, z -10..35 (LPS mm, 1 mm voxels)
    nx, ny, nz = 81, 71, 46
    affine = np.eye(4)
    affine[:3, 3] = [-40.0, -60.0, -10.0]
    grid = ImageVolume(np.zeros((nz, ny, nx), np.int16), affine, modality="CT")
    z = np.arange(nz) - 10.0
    y = np.arange(ny) - 60.0
    zz, yy = np.meshgrid(z, y, indexing="ij")
    wall = (yy >= -42) & (yy <= -36)  # the chest wall, anterior
    lower = np.broadcast_to((wall & (zz >= 0) & (zz <= 5))[..., None], grid.shape)
    upper = np.broadcast_to((wall & (zz >= 20) & (zz <= 25))[..., None], grid.shape)
    return LabelMap.from_masks([("rib_right_7", lower.copy()), ("rib_right_6", upper.copy())],
                               grid)


def _paths(labels: LabelMap, heights: list[float]) -> CandidatePaths:
    entries = np.array([[0.0, -55.0, z] for z in heights])
    # target straight behind each entry (horizontal path through the rib space)
    return CandidatePaths(entries_lps=entries, target_lps=np.array([0.0, 0.0, heights[0]]),
                          labels=labels)


def test_rib_space_position_matches_geometry(ribs) -> None:
    from ir_planner_intercostal.term import rib_space_position

    z = np.array([6.5, 8.0, 12.5, 17.0, 19.0])
    pts = np.stack([np.zeros_like(z), np.full_like(z, -39.0), z], axis=1)
    f = rib_space_position(ribs, pts)
    np.testing.assert_allclose(f, (z - 5.5) / 14.0, atol=0.5 / 14 + 1e-9)
    # not in a rib space: far from the ribs, inside a rib, above the upper rib
    far = rib_space_position(ribs, np.array([[0.0, -10.0, 12.0], [0.0, -39.0, 3.0],
                                             [0.0, -39.0, 30.0]]))
    assert np.isnan(far).all()


def test_installed_term_and_constraint_through_the_registry(ribs) -> None:
    reg = PluginRegistry()
    assert reg.plugin("intercostal").source.startswith("ir-planner-intercostal 0.1.0")
    heights = [8.0, 12.5, 17.0]
    # each path horizontal at its own height: evaluate one at a time (one target each)
    costs, allowed = [], []
    for z in heights:
        paths = _paths(ribs, [z])
        s = score_plugin_terms(PluginTerms(risk_terms={"intercostal": 2.0},
                                           constraints=("intercostal-lower-half",)),
                               paths, registry=reg)
        assert s.weight_sum == 2.0
        costs.append(s.cost[0] / 2.0)
        allowed.append(not s.rejected_by["intercostal-lower-half"][0])
    expected = np.clip(2 * (np.array(heights) - 5.5) / 14.0 - 1.0, 0, 1)
    np.testing.assert_allclose(costs, expected, atol=2 * 0.5 / 14 + 1e-9)
    assert costs[0] == 0.0 and costs[2] > 0.5
    assert allowed == [True, True, False] or allowed == [True, False, False]
    assert reg.get("risk_terms", "intercostal").status is Status.LOADED


def test_no_ribs_means_inactive(ribs) -> None:
    empty = LabelMap.from_masks([("liver", np.ones(ribs.grid.shape, bool))], ribs.grid)
    s = score_plugin_terms(PluginTerms(risk_terms={"intercostal": 1.0},
                                       constraints=("intercostal-lower-half",)),
                           _paths(empty, [17.0]), registry=PluginRegistry())
    assert s.cost.tolist() == [0.0] and not s.rejected_by["intercostal-lower-half"].any()


BROKEN = '''
schema = "ir-planner-plugin/1"
name = "bad-terms"
[[risk_terms]]
id = "nan-term"
python_name = "badterms:NanTerm"
[[risk_terms]]
id = "raises"
python_name = "badterms:Raises"
[[constraints]]
id = "not-bool"
python_name = "badterms:NotBool"
[[constraints]]
id = "missing"
python_name = "no_such_module_xyz:C"
'''

IMPL = '''
import numpy as np
class NanTerm:
    def evaluate(self, paths):
        return np.full(len(paths), np.nan)
class Raises:
    def evaluate(self, paths):
        raise KeyError("rib_left_13")
class NotBool:
    def allowed(self, paths):
        return np.ones(len(paths))
'''


@pytest.mark.parametrize("terms,message", [
    (PluginTerms(risk_terms={"nan-term": 1.0}), "nan-term.*evaluate raised ValueError: "
     "returned values outside"),
    (PluginTerms(risk_terms={"raises": 1.0}), "raises.*evaluate raised KeyError: 'rib_left_13'"),
    (PluginTerms(constraints=("not-bool",)), "not-bool.*expected bool"),
    (PluginTerms(constraints=("missing",)), "could not be loaded: import failed"),
    (PluginTerms(risk_terms={"nope": 1.0}), "no risk_terms contribution named 'nope'"),
])
def test_broken_terms_fail_the_search_with_one_line(ribs, tmp_path, monkeypatch, terms,
                                                    message) -> None:
    (tmp_path / "badterms.py").write_text(IMPL)
    monkeypatch.syspath_prepend(str(tmp_path))
    with isolated_registry(manifests=[BROKEN]):
        with pytest.raises(PluginError, match=message):
            score_plugin_terms(terms, _paths(ribs, [10.0]))


def test_weights_checked() -> None:
    with pytest.raises(ValueError, match="weight must be a number >= 0"):
        PluginTerms(risk_terms={"intercostal": -1.0})


def test_only_subset_evaluated(ribs) -> None:
    paths = CandidatePaths(entries_lps=np.array([[0.0, -55.0, 17.0], [0.0, -55.0, 17.0]]),
                           target_lps=np.array([0.0, 0.0, 17.0]), labels=ribs)
    terms = PluginTerms(risk_terms={"intercostal": 1.0}, constraints=("intercostal-lower-half",))
    s = score_plugin_terms(terms, paths, only=np.array([False, True]),
                           registry=PluginRegistry())
    assert s.cost[0] == 0.0 and s.cost[1] > 0.5
    assert s.rejected_by["intercostal-lower-half"].tolist() == [False, True]
    from ir_planner.planning.search_plugins import check_plugin_terms

    with pytest.raises(PluginError, match="no constraints contribution named 'x'"):
        check_plugin_terms(PluginTerms(constraints=("x",)), registry=PluginRegistry())
