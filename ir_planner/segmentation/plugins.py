"""Segmenters: the ``Segmenter`` protocol and access through the plugin registry.

A segmenter is any object with ``name``, ``modalities`` and
``run(image, progress) -> LabelMap``. Plugins contribute them in their manifest
(``[[segmenters]]``, see :mod:`ir_planner.core.plugins` and ``docs/plugins.md``);
``python_name`` names a class or zero-argument factory returning the segmenter. Code is
imported on first use; a segmenter that fails to import, to build, or raises while
running is reported (:class:`~ir_planner.core.plugins.PluginError`, naming the plugin
and the reason) and marked failed, never fatal for the rest of the application.

The built-in classic segmenter (``"classic"``) is contributed by IR Planner's own
manifest through the same mechanism; the TotalSegmentator adapter is the first-party
plugin ``plugins/totalsegmentator``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ir_planner.core.labels import LabelMap
from ir_planner.core.plugins import Contribution, Kind, PluginError, get_registry
from ir_planner.core.progress import ProgressCallback
from ir_planner.core.volume import ImageVolume

__all__ = ["Segmenter", "available_segmenters", "get_segmenter", "load_all",
           "ClassicSegmenter"]


@runtime_checkable
class Segmenter(Protocol):
    """What a segmenter plugin provides."""

    name: str
    modalities: tuple[str, ...]

    def run(self, image: ImageVolume, progress: ProgressCallback | None = None) -> LabelMap:
        """Segment ``image``; returns structures on its grid."""
        ...


def available_segmenters() -> dict[str, Contribution]:
    """Usable segmenters by name (declared; not imported yet)."""
    return {c.id: c for c in get_registry().contributions(Kind.SEGMENTERS)}


class _Guarded:
    """A plugin's segmenter whose ``run`` is isolated by the registry's guard."""

    def __init__(self, inner: Segmenter, contribution: Contribution) -> None:
        self._inner = inner
        self.contribution = contribution
        self.name = contribution.id
        self.modalities = tuple(inner.modalities)

    def run(self, image: ImageVolume, progress: ProgressCallback | None = None) -> LabelMap:
        """Run the plugin; an unexpected exception becomes a :class:`PluginError`."""
        registry = get_registry()
        with registry.guard(self.contribution, "run"):
            labels = self._inner.run(image, progress)
            if not isinstance(labels, LabelMap):
                raise TypeError(f"run() returned {type(labels).__name__}, not a LabelMap")
            return labels


def get_segmenter(name: str) -> Segmenter:
    """Import and build the segmenter called ``name``.

    Raises
    ------
    PluginError
        If no such segmenter is usable, or it cannot be imported or built (the reason is
        named; the contribution is then marked failed).
    """
    registry = get_registry()
    contribution = registry.get(Kind.SEGMENTERS, name)
    factory = registry.load(contribution)
    with registry.guard(contribution, "building the segmenter"):
        seg = factory() if callable(factory) else factory
    if not isinstance(seg, Segmenter):
        reason = "the object built lacks name/modalities/run (see the Segmenter protocol)"
        registry.fail(contribution, reason)
        raise PluginError(f"{contribution.describe()} cannot be used: {reason}")
    return _Guarded(seg, contribution)


def load_all() -> dict[str, Segmenter]:
    """Every segmenter that loads; broken plugins are reported and skipped."""
    out: dict[str, Segmenter] = {}
    for name in available_segmenters():
        try:
            out[name] = get_segmenter(name)
        except PluginError:
            continue  # recorded in the registry, shown by `ir-planner plugins`
    return out


class ClassicSegmenter:
    """The built-in classic segmenter (:func:`ir_planner.segmentation.auto.segment_auto`)."""

    name = "classic"
    modalities = ("CT", "MR")

    def run(self, image: ImageVolume, progress: ProgressCallback | None = None) -> LabelMap:
        """Body, bone, lung, airway, bowel gas, contrast vessels (CT); body (MR)."""
        from ir_planner.segmentation.auto import segment_auto

        labels, _ = segment_auto(image, progress=progress)
        return labels
