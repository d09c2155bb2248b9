"""``ir-planner live``: intra-procedural guidance from live sources (headless for now).

The command only parses arguments, builds the sources and the guidance session
(:mod:`ir_planner.intraop.session`) and writes the session's events; the logic
lives in the session.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ir_planner.core.errors import InputError
from ir_planner.intraop.dicom_receiver import DicomReceiver
from ir_planner.intraop.igtl_net import IgtlClient, IgtlServer, parse_host_port
from ir_planner.intraop.live import EventLog, build_session
from ir_planner.intraop.plugin_sources import check_plugin_source, start_plugin_source
from ir_planner.intraop.recorder import Recorder, replay
from ir_planner.intraop.watch import WatchFolder

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``live`` command."""
    p = subparsers.add_parser(
        "live", help="intra-procedural guidance: receive scans and tracking, register, detect "
        "the needle, report its deviation from the plan",
        description="Run the guidance session on a plan: a DICOM receiver (C-STORE SCP), an "
        "OpenIGTLink server or client and/or a watch folder feed it; every event (series "
        "received, registration with its quality, needle found, deviation, tracking updates with "
        "latency, warnings) is written as one JSON line to --events. Coordinates LPS mm. "
        "Research use only.")
    p.add_argument("plan", type=Path, help="plan file (plan.json) with at least one trajectory")
    p.add_argument("--dicom-port", type=int, default=None,
                   help="listen for DICOM C-STORE on this port (0 = any free port)")
    p.add_argument("--dicom-ae", default="IRPLANNER", help="our AE title (default IRPLANNER)")
    p.add_argument("--dicom-allow", nargs="+", default=[], metavar="AE",
                   help="calling AE titles accepted (default: any)")
    p.add_argument("--dicom-host", default="127.0.0.1",
                   help="interface the DICOM receiver binds (default 127.0.0.1)")
    p.add_argument("--storage", type=Path, default=None,
                   help="folder received DICOM is stored in (default: beside --events)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--igtl-port", type=int, default=None,
                   help="OpenIGTLink server port on 127.0.0.1 (0 = any free port)")
    g.add_argument("--igtl-connect", default=None, metavar="HOST:PORT",
                   help="connect to an OpenIGTLink server (e.g. 3D Slicer, PLUS)")
    p.add_argument("--watch", type=Path, default=None, help="watch this folder for scans")
    p.add_argument("--source", action="append", default=[], metavar="ID[:OPTION]",
                   help="a plugin's live source (see 'ir-planner plugins --kind "
                   "live_sources'); repeatable")
    p.add_argument("--quiet-s", type=float, default=2.0,
                   help="a series is complete after this many seconds without a new file")
    p.add_argument("--trajectory", default=None, help="planned trajectory to guide along")
    p.add_argument("--deformable", action="store_true",
                   help="refine each rigid registration with a B-spline")
    p.add_argument("--stale-s", type=float, default=1.0,
                   help="report tracking stale after this many seconds without a pose")
    p.add_argument("--headless", action="store_true", help="no window; events only")
    p.add_argument("--events", type=Path, required=True,
                   help="write one JSON line per event here (a new file)")
    p.add_argument("--record", type=Path, default=None,
                   help="record every incoming message into this (new) folder")
    p.add_argument("--replay", type=Path, default=None,
                   help="replay a recording into the session (then exit unless sources given)")
    p.add_argument("--exit-after", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: until interrupted)")
    p.set_defaults(func=run)


def _port(value: int | None, name: str) -> None:
    if value is not None and not 0 <= value < 65536:
        raise InputError(f"{name} must be 0-65535; got {value}")


def run(args: argparse.Namespace) -> int:
    """Run ``ir-planner live``."""
    if not args.headless:
        raise InputError("the procedure-room window is not available yet; run with --headless "
                         "(events are written to --events)")
    _port(args.dicom_port, "--dicom-port")
    _port(args.igtl_port, "--igtl-port")
    if args.exit_after is not None and not args.exit_after > 0:
        raise InputError(f"--exit-after must be > 0 seconds; got {args.exit_after}")
    if args.quiet_s <= 0 or args.stale_s <= 0:
        raise InputError("--quiet-s and --stale-s must be > 0 seconds")
    sources = [args.dicom_port is not None, args.igtl_port is not None,
               args.igtl_connect is not None, args.watch is not None, bool(args.source),
               args.replay is not None]
    if not any(sources):
        raise InputError("give at least one source: --dicom-port, --igtl-port, --igtl-connect, "
                         "--watch, --source or --replay")
    for spec in args.source:
        check_plugin_source(spec)  # unknown or failed plugin: say so before loading anything
    if args.events.resolve() == args.plan.resolve():
        raise InputError("--events must not be the plan file")
    log = EventLog(args.events, echo=None if args.quiet else sys.stdout)
    recorder = Recorder(args.record) if args.record is not None else None
    stoppers: list[Any] = []
    session = None
    try:
        session = build_session(args.plan, trajectory=args.trajectory, deformable=args.deformable,
                                stale_after_s=args.stale_s, recorder=recorder,
                                progress_out=None if args.quiet else sys.stderr)
        session.connect(log.write)
        session.start()
        if args.dicom_port is not None:
            storage = args.storage or args.events.with_name(args.events.stem + "_dicom")
            rx = DicomReceiver(storage, session.submit_series,
                               lambda k, d: session.source_status("dicom", k, d),  # type: ignore[union-attr]
                               port=args.dicom_port, ae_title=args.dicom_ae,
                               allowed_aets=args.dicom_allow, host=args.dicom_host,
                               quiet_s=args.quiet_s).start()
            stoppers.append(rx)
        if args.igtl_port is not None:
            stoppers.append(IgtlServer(session, port=args.igtl_port).start())
        if args.igtl_connect is not None:
            host, port = parse_host_port(args.igtl_connect)
            stoppers.append(IgtlClient(session, host, port).start())
        if args.watch is not None:
            stoppers.append(WatchFolder(args.watch, session.submit_series,
                                        lambda k, d: session.source_status(  # type: ignore[union-attr]
                                            "watch", k, d), quiet_s=args.quiet_s).start())
        for spec in args.source:
            stoppers.append(start_plugin_source(spec, session))
        if args.replay is not None:
            n = replay(args.replay, session)
            session.emit("source", source="replay", state="done",
                         detail=f"replayed {n} items from {args.replay}")
        _wait(args.exit_after, live=any(sources[:5]))
    finally:
        for s in reversed(stoppers):
            s.stop()
        if session is not None:
            session.stop(drain=True)
        if recorder is not None:
            recorder.close()
        log.close()
    return 0


def _wait(exit_after: float | None, *, live: bool) -> None:
    """Until ``exit_after`` seconds, SIGTERM or Ctrl-C (returns at once for replay only)."""
    if not live and exit_after is None:
        return
    done = threading.Event()

    def on_term(_sig: int, _frame: Any) -> None:
        done.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        deadline = None if exit_after is None else time.monotonic() + exit_after
        while not done.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            done.wait(0.2 if left is None else min(0.2, left))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
