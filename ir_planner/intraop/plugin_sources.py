"""Live sources contributed by plugins (``[[live_sources]]``): a site's tracker, a vendor's
image stream, ... beside IR Planner's own DICOM receiver, OpenIGTLink and watch folder.

``python_name`` names ``factory(session: GuidanceSession, option: str) -> source``; the
source feeds the session through its public methods (``submit_volume``,
``submit_series``, ``source_status``, the OpenIGTLink sink methods) from its own thread
and has ``start()`` (returning the source) and ``stop()``. ``ir-planner live --source
ID[:OPTION]`` starts it. A source that is unknown, fails to import, or raises while being
built or started stops the command with one line naming the plugin; one raising in
``stop()`` is reported as a warning event and the others still stop.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ir_planner.core.errors import IRPlannerError
from ir_planner.core.plugins import Contribution, Kind, PluginError, get_registry
from ir_planner.intraop.session import GuidanceSession

__all__ = ["LiveSource", "PluginSource", "check_plugin_source", "start_plugin_source"]


@runtime_checkable
class LiveSource(Protocol):
    """What a plugin's live source provides."""

    def start(self) -> object:
        """Begin delivering data (from a thread of its own); returns the source."""
        ...

    def stop(self) -> None:
        """Stop delivering data and release what it holds."""
        ...


class PluginSource:
    """A started plugin source; :meth:`stop` never raises."""

    def __init__(self, inner: LiveSource, contribution: Contribution,
                 session: GuidanceSession) -> None:
        self._inner = inner
        self.contribution = contribution
        self._session = session

    def stop(self) -> None:
        """Stop the source; a failure becomes a warning event."""
        try:
            with get_registry().guard(self.contribution, "stop"):
                self._inner.stop()
        except IRPlannerError as exc:
            self._session.emit("warning", source=self.contribution.id, reason="stop-failed",
                               detail=str(exc))


def check_plugin_source(spec: str) -> Contribution:
    """The usable live source named by ``spec`` (``ID[:OPTION]``), before anything starts.

    Raises
    ------
    PluginError
        No such usable source (the message lists those available).
    """
    name = spec.partition(":")[0]
    try:
        return get_registry().get(Kind.LIVE_SOURCES, name)
    except PluginError as exc:
        raise PluginError(f"--source {spec!r}: {exc}") from exc


def start_plugin_source(spec: str, session: GuidanceSession) -> PluginSource:
    """Build and start the plugin source ``spec`` (``ID`` or ``ID:OPTION``).

    Raises
    ------
    PluginError
        Unknown source, import failure, or an exception while building or starting it.
    """
    name, _, option = spec.partition(":")
    registry = get_registry()
    contribution = check_plugin_source(spec)
    factory = registry.load(contribution)
    with registry.guard(contribution, "starting it"):
        if not callable(factory):
            raise TypeError(f"{contribution.python_name} is not callable")
        source = factory(session, option)
        if not isinstance(source, LiveSource):
            raise TypeError("the object built has no start()/stop()")
        source.start()
    session.emit("source", source=name, state="started",
                 detail=f"plugin {contribution.plugin!r} ({contribution.python_name})")
    return PluginSource(source, contribution, session)
