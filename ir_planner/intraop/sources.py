"""Live sources as plugin contributions: ``factory(session, **options) -> source``.

A *live source* is any object with ``start()`` and ``stop()`` that feeds a
:class:`~ir_planner.intraop.session.GuidanceSession` from a background thread
(``session.submit_series``, ``session.igtl_message``, ``session.source_status``...).
IR Planner's own sources are declared in ``ir_planner/plugin.toml`` under
``[[live_sources]]`` with the factories below, exactly as a third party declares a
tracker or an ultrasound grabber; ``ir-planner live --source ID:key=value,...``
builds any of them by id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from ir_planner.core.errors import InputError
from ir_planner.intraop.dicom_receiver import DicomReceiver
from ir_planner.intraop.igtl_net import IgtlClient, IgtlServer
from ir_planner.intraop.session import GuidanceSession
from ir_planner.intraop.watch import WatchFolder

__all__ = ["LiveSource", "dicom_source", "igtl_server_source", "igtl_client_source",
           "watch_source", "parse_source_spec"]


class LiveSource(Protocol):
    """What a live-source factory returns."""

    def start(self) -> Any: ...

    def stop(self) -> None: ...


def _int(v: Any, name: str) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        raise InputError(f"live source option {name} must be a whole number; got {v!r}") from None


def dicom_source(session: GuidanceSession, *, storage: str | os.PathLike[str],
                 port: int | str = 11112, ae_title: str = "IRPLANNER",
                 allowed_aets: list[str] | str | None = None, host: str = "127.0.0.1",
                 quiet_s: float | str = 2.0) -> DicomReceiver:
    """The DICOM C-STORE receiver feeding ``session``."""
    allowed = allowed_aets.split("+") if isinstance(allowed_aets, str) else allowed_aets
    return DicomReceiver(Path(storage), session.submit_series,
                         lambda k, d: session.source_status("dicom", k, d),
                         port=_int(port, "port"), ae_title=ae_title, allowed_aets=allowed,
                         host=host, quiet_s=float(quiet_s))


def igtl_server_source(session: GuidanceSession, *, port: int | str = 18944,
                       host: str = "127.0.0.1") -> IgtlServer:
    """An OpenIGTLink server feeding ``session``."""
    return IgtlServer(session, port=_int(port, "port"), host=host)


def igtl_client_source(session: GuidanceSession, *, host: str, port: int | str
                       ) -> IgtlClient:
    """An OpenIGTLink client (connects to HOST:PORT) feeding ``session``."""
    return IgtlClient(session, host, _int(port, "port"))


def watch_source(session: GuidanceSession, *, folder: str | os.PathLike[str],
                 quiet_s: float | str = 2.0) -> WatchFolder:
    """A watch folder feeding ``session``."""
    return WatchFolder(folder, session.submit_series,
                       lambda k, d: session.source_status("watch", k, d), quiet_s=float(quiet_s))


def parse_source_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``ID`` or ``ID:key=value,key=value`` → (id, options)."""
    ident, _, rest = spec.partition(":")
    if not ident.strip():
        raise InputError(f"--source must be ID or ID:key=value,...; got {spec!r}")
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise InputError(f"--source {spec!r}: option {part!r} is not key=value")
        options[key.strip()] = value.strip()
    return ident.strip(), options
