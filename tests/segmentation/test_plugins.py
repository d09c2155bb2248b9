"""Segmenters through the plugin registry: built-in, broken, raising at run time."""

from __future__ import annotations

import numpy as np
import pytest

from ir_planner.core.errors import IRPlannerError
from ir_planner.core.plugins import PluginError, Status
from ir_planner.core.volume import ImageVolume
from ir_planner.segmentation import plugins

BROKEN = '''
schema = "ir-planner-plugin/1"
name = "broken-segs"

[[segmenters]]
id = "missing"
python_name = "no_such_module_xyz:Seg"

[[segmenters]]
id = "notaseg"
python_name = "json:JSONDecoder"

[[segmenters]]
id = "explodes"
python_name = "segimpl:Explodes"

[[segmenters]]
id = "wrongtype"
python_name = "segimpl:WrongType"

[[segmenters]]
id = "explains"
python_name = "segimpl:Explains"
'''

IMPL = '''
from ir_planner.core.errors import IRPlannerError

class Explodes:
    name = "explodes"
    modalities = ("CT",)
    def run(self, image, progress=None):
        raise RuntimeError("model crashed")

class WrongType(Explodes):
    def run(self, image, progress=None):
        return "not a label map"

class Explains(Explodes):
    def run(self, image, progress=None):
        raise IRPlannerError("model weights missing: run 'fetch-weights'")
'''


@pytest.fixture
def image() -> ImageVolume:
    arr = np.full((6, 8, 8), -1000.0)
    arr[1:5, 2:6, 2:6] = 40.0
    return ImageVolume(arr, np.eye(4), modality="CT")


def test_builtin_classic_through_registry(plugin_registry, image) -> None:
    assert set(plugins.available_segmenters()) == {"classic"}
    seg = plugins.get_segmenter("classic")
    assert isinstance(seg, plugins.Segmenter) and seg.name == "classic"
    assert plugin_registry.get("segmenters", "classic").status is Status.LOADED


def test_broken_segmenters_isolated(plugin_registry, tmp_path, monkeypatch, image) -> None:
    (tmp_path / "segimpl.py").write_text(IMPL)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin_registry.register(BROKEN)
    with pytest.raises(PluginError, match="could not be loaded: import failed: "
                       "ModuleNotFoundError"):
        plugins.get_segmenter("missing")
    with pytest.raises(PluginError, match="lacks name/modalities/run"):
        plugins.get_segmenter("notaseg")
    with pytest.raises(PluginError, match=r"segmenters 'explodes' of plugin 'broken-segs' "
                       r"\(segimpl:Explodes\) failed: run raised RuntimeError: model crashed"):
        plugins.get_segmenter("explodes").run(image)
    with pytest.raises(PluginError, match="returned str, not a LabelMap"):
        plugins.get_segmenter("wrongtype").run(image)
    # an explained failure passes through as it is, and the segmenter stays usable
    with pytest.raises(IRPlannerError, match="model weights missing") as info:
        plugins.get_segmenter("explains").run(image)
    assert not isinstance(info.value, PluginError)
    assert set(plugins.available_segmenters()) == {"classic", "explains"}
    assert set(plugins.load_all()) == {"classic", "explains"}
    with pytest.raises(PluginError, match="explodes.*cannot be used: run raised RuntimeError"):
        plugins.get_segmenter("explodes")
    with pytest.raises(PluginError, match="no segmenters contribution named 'nope'; "
                       "available: classic, explains"):
        plugins.get_segmenter("nope")
