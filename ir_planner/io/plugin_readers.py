"""Image and segmentation readers contributed by plugins (``[[readers]]``).

:func:`~ir_planner.io.load.load_image` and
:func:`~ir_planner.io.segmentation.load_labels` ask the plugin registry which reader
handles a path (:meth:`~ir_planner.core.plugins.PluginRegistry.find_reader`: a specific
file-name pattern wins over a catch-all one, IR Planner's own readers over a third
party's). IR Planner's own readers are declared in ``ir_planner/plugin.toml`` and run by
the loaders themselves (they take DICOM series options); another plugin's reader is run
here: ``python_name`` names ``reader(path) -> ImageVolume`` (``what = "image"``) or
``-> LabelMap`` (``what = "segmentation"``). It is imported on first use; an exception
other than an IR Planner error, or a result of the wrong type, is reported as a
:class:`~ir_planner.core.plugins.PluginError` naming the plugin.
"""

from __future__ import annotations

from pathlib import Path

from ir_planner.core.labels import LabelMap
from ir_planner.core.plugins import BUILTIN_PLUGIN, Contribution, get_registry
from ir_planner.core.volume import ImageVolume

__all__ = ["plugin_reader", "read_image_with", "read_labels_with"]


def plugin_reader(path: str | Path, what: str) -> Contribution | None:
    """The other plugin's reader of ``what`` for ``path``; None when IR Planner's own
    reader handles it (or nothing claims it)."""
    c = get_registry().find_reader(path, what)
    return None if c is None or c.plugin == BUILTIN_PLUGIN else c


def _read(contribution: Contribution, path: Path, expected: type) -> object:
    registry = get_registry()
    reader = registry.load(contribution)
    with registry.guard(contribution, f"reading {path.name}"):
        if not callable(reader):
            raise TypeError(f"{contribution.python_name} is not callable")
        result = reader(path)
        if not isinstance(result, expected):
            raise TypeError(f"returned {type(result).__name__}, not {expected.__name__}")
    return result


def read_image_with(contribution: Contribution, path: str | Path) -> ImageVolume:
    """Read an image with a plugin's reader (checked to return an ImageVolume)."""
    p = Path(path)
    volume = _read(contribution, p, ImageVolume)
    assert isinstance(volume, ImageVolume)
    volume.metadata.setdefault("source", str(p))
    volume.metadata.setdefault("reader", f"{contribution.plugin}:{contribution.id}")
    return volume


def read_labels_with(contribution: Contribution, path: str | Path) -> LabelMap:
    """Read a segmentation with a plugin's reader (checked to return a LabelMap)."""
    labels = _read(contribution, Path(path), LabelMap)
    assert isinstance(labels, LabelMap)
    return labels
