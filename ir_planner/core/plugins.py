"""Plugins: one declared mechanism for every extension point.

A plugin is a Python distribution that declares one entry point in the group
:data:`ENTRY_POINT_GROUP` (``ir_planner.plugins``). The entry point names a small
**manifest** file shipped inside the plugin's package, ``"package:file.toml"``::

    [project.entry-points."ir_planner.plugins"]
    my_site = "my_site_plugin:plugin.toml"

The manifest (TOML, schema :data:`MANIFEST_SCHEMA`) says what the plugin contributes
and which IR Planner versions it supports; it is read without importing any plugin
code::

    schema = "ir-planner-plugin/1"
    name = "my-site"
    ir_planner_version = ">=0.1, <0.2"

    [[segmenters]]
    id = "bone-threshold"
    python_name = "my_site_plugin.segment:BoneThreshold"
    title = "Bone above 300 HU"
    modalities = ["CT"]

Contribution kinds (:data:`KINDS`): image/segmentation ``readers``, ``exporters``,
``segmenters``, ``devices`` (device catalogs), search ``constraints`` and
``risk_terms``, ``live_sources`` and ``gui_panels``. Every contribution names the
object implementing it as ``python_name = "package.module:attribute"``; that module
is imported only when the contribution is first used (:meth:`PluginRegistry.load`).

Nothing a plugin does can stop the application: a manifest that cannot be read or
declares nonsense, a version range excluding this IR Planner, an import that fails
or code that raises at run time (:meth:`PluginRegistry.guard`) marks the plugin or
the contribution ``failed`` with the reason, which ``ir-planner plugins`` shows;
every other plugin keeps working. IR Planner's own readers, exporters, segmenters
and device catalog are declared the same way (``ir_planner/plugin.toml``).

The entry-point groups used before this mechanism (``ir_planner.segmenters``,
``ir_planner.devices``) are still read: each such entry point becomes a
one-contribution plugin marked "legacy" in the listing.

This module uses the standard library only (the core is numpy-only).
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Final

from ir_planner import __version__
from ir_planner.core.errors import IRPlannerError

__all__ = [
    "ENTRY_POINT_GROUP",
    "LEGACY_GROUPS",
    "MANIFEST_SCHEMA",
    "BUILTIN_PLUGIN",
    "KINDS",
    "Kind",
    "Status",
    "PluginError",
    "ManifestError",
    "Contribution",
    "Plugin",
    "PluginRegistry",
    "parse_manifest",
    "version_in_range",
    "get_registry",
    "use_registry",
    "isolated_registry",
]

log = logging.getLogger(__name__)

#: The entry-point group where plugins are declared.
ENTRY_POINT_GROUP: Final = "ir_planner.plugins"
#: Older one-kind groups, still read (each entry point is one contribution).
LEGACY_GROUPS: Final = {"ir_planner.segmenters": "segmenters", "ir_planner.devices": "devices"}
#: The manifest schema this version reads.
MANIFEST_SCHEMA: Final = "ir-planner-plugin/1"
#: Name of IR Planner's own plugin (``ir_planner/plugin.toml``).
BUILTIN_PLUGIN: Final = "ir-planner"


class Kind(StrEnum):
    """What a contribution extends (the manifest's table names)."""

    READERS = "readers"
    EXPORTERS = "exporters"
    SEGMENTERS = "segmenters"
    DEVICES = "devices"
    CONSTRAINTS = "constraints"
    RISK_TERMS = "risk_terms"
    LIVE_SOURCES = "live_sources"
    GUI_PANELS = "gui_panels"


#: Every contribution kind, in listing order.
KINDS: Final = tuple(k.value for k in Kind)

#: What each kind's python_name must name (shown in errors and in docs/plugins.md).
KIND_CONTRACTS: Final = {
    Kind.READERS: "a function reader(path) -> ImageVolume (what = 'image') or LabelMap "
                  "(what = 'segmentation')",
    Kind.EXPORTERS: "a function exporter(obj, path) writing one file",
    Kind.SEGMENTERS: "a class or zero-argument factory returning an object with name, "
                     "modalities and run(image, progress) -> LabelMap",
    Kind.DEVICES: "a callable returning catalog file paths / catalog dicts (or a list)",
    Kind.CONSTRAINTS: "a class or zero-argument factory returning a search constraint",
    Kind.RISK_TERMS: "a class or zero-argument factory returning a search risk term",
    Kind.LIVE_SOURCES: "a class building a live source",
    Kind.GUI_PANELS: "a QWidget subclass",
}

_COMMON_FIELDS = {"id", "python_name", "title"}
#: Extra manifest fields each kind accepts (name -> required?).
_KIND_FIELDS: dict[Kind, dict[str, bool]] = {
    Kind.READERS: {"what": True, "filename_patterns": True},
    Kind.EXPORTERS: {"what": False, "filename_patterns": False},
    Kind.SEGMENTERS: {"modalities": False},
    Kind.DEVICES: {},
    Kind.CONSTRAINTS: {},
    Kind.RISK_TERMS: {},
    Kind.LIVE_SOURCES: {},
    Kind.GUI_PANELS: {},
}
_READER_WHAT = ("image", "segmentation")
_TOP_FIELDS = {"schema", "name", "display_name", "description", "version",
               "ir_planner_version", *KINDS}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PYTHON_NAME_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_SPEC_RE = re.compile(r"^\s*(>=|<=|==|!=|>|<|~=)?\s*([0-9]+(?:\.[0-9]+)*)(\.\*)?\s*$")


class Status(StrEnum):
    """State of a plugin or contribution."""

    AVAILABLE = "available"  # declared and valid; code not imported yet
    LOADED = "loaded"  # code imported (and built) without error
    FAILED = "failed"  # see the reason


class PluginError(IRPlannerError):
    """A plugin cannot be used: unknown, failed to load, or raised while running."""


class ManifestError(PluginError):
    """A plugin manifest is unreadable or declares something invalid."""


@dataclass
class Contribution:
    """One thing a plugin adds to IR Planner.

    Attributes
    ----------
    kind : Kind
        What it extends.
    id : str
        Its name within the kind (e.g. the segmenter name users type).
    python_name : str
        ``"package.module:attribute"`` of the implementing object.
    plugin : str
        Name of the contributing plugin.
    title : str
        One line for listings.
    what : str
        Readers/exporters: ``"image"`` or ``"segmentation"`` (exporters: free text).
    filename_patterns : tuple of str
        Readers/exporters: glob patterns of the file names handled (``"*.nrrd"``);
        a pattern ending in ``/`` matches folders.
    modalities : tuple of str
        Segmenters: the modalities accepted (``"CT"``, ``"MR"``).
    status, reason
        :class:`Status` and, when failed, why.
    """

    kind: Kind
    id: str
    python_name: str
    plugin: str
    title: str = ""
    what: str = ""
    filename_patterns: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    status: Status = Status.AVAILABLE
    reason: str = ""

    @property
    def key(self) -> tuple[Kind, str]:
        """``(kind, id)``: unique among usable contributions."""
        return (self.kind, self.id)

    def handles(self, path: str | Path, *, specific: bool | None = None) -> bool:
        """Whether one of :attr:`filename_patterns` matches ``path`` (case-insensitive).

        ``specific=True`` considers only patterns naming something (``*.nrrd``,
        ``*.zarr/``), ``False`` only catch-alls (``*``, ``*/``), None both.
        """
        p = Path(path)
        name = p.name.lower()
        for pattern in self.filename_patterns:
            pat = pattern.lower()
            folder = pat.endswith("/")
            glob = pat[:-1] if folder else pat
            if specific is not None and (glob.strip("*") != "") != specific:
                continue
            if (p.is_dir() if folder else not p.is_dir()) and fnmatch.fnmatch(name, glob or "*"):
                return True
        return False

    def describe(self) -> str:
        """``"segmenters 'x' of plugin 'p' (pkg.mod:obj)"`` for messages."""
        return f"{self.kind.value} {self.id!r} of plugin {self.plugin!r} ({self.python_name})"


@dataclass
class Plugin:
    """A discovered or registered plugin and what it contributes.

    Attributes
    ----------
    name : str
        Plugin name (manifest ``name``, else the entry-point name).
    source : str
        Where it was declared: ``"dist-name 1.2 (entry point x = pkg:plugin.toml)"`` or
        ``"registered in-process"``.
    version : str
        The distribution's version (or the manifest's ``version``).
    ir_planner_version : str
        Supported IR Planner versions (``""`` = any).
    contributions : list of Contribution
    status, reason
        The plugin's own state: failed when its manifest is invalid or its version
        range excludes this IR Planner (then it contributes nothing).
    legacy : bool
        Declared in an old one-kind entry-point group.
    """

    name: str
    source: str
    version: str = ""
    display_name: str = ""
    description: str = ""
    ir_planner_version: str = ""
    contributions: list[Contribution] = field(default_factory=list)
    status: Status = Status.AVAILABLE
    reason: str = ""
    legacy: bool = False

    @property
    def overall_status(self) -> Status:
        """Failed if the plugin or any contribution failed; loaded if any loaded."""
        states = {self.status, *(c.status for c in self.contributions)}
        if Status.FAILED in states:
            return Status.FAILED
        return Status.LOADED if Status.LOADED in states else Status.AVAILABLE

    def to_dict(self) -> dict[str, object]:
        """JSON-ready description (``ir-planner plugins --json``)."""
        return {
            "name": self.name, "version": self.version, "source": self.source,
            "display_name": self.display_name, "description": self.description,
            "ir_planner_version": self.ir_planner_version or "any",
            "status": self.overall_status.value,
            "reason": self.reason or "; ".join(
                f"{c.kind.value} {c.id}: {c.reason}" for c in self.contributions if c.reason),
            "legacy": self.legacy,
            "contributions": [
                {"kind": c.kind.value, "id": c.id, "python_name": c.python_name,
                 "title": c.title, "status": c.status.value, "reason": c.reason,
                 **({"what": c.what} if c.what else {}),
                 **({"filename_patterns": list(c.filename_patterns)}
                    if c.filename_patterns else {}),
                 **({"modalities": list(c.modalities)} if c.modalities else {})}
                for c in self.contributions],
        }


# -- versions -------------------------------------------------------------------------------
def _release(version: str) -> tuple[int, ...]:
    m = re.match(r"^\s*v?([0-9]+(?:\.[0-9]+)*)", version)
    if not m:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(x) for x in m.group(1).split("."))


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    pa, pb = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (pa > pb) - (pa < pb)


def _check_spec(spec: str) -> list[tuple[str, tuple[int, ...], bool]]:
    clauses = []
    for part in spec.split(","):
        m = _SPEC_RE.match(part)
        if not m:
            raise ValueError(f"bad version clause {part.strip()!r} (use e.g. '>=0.1, <0.2')")
        op, ver, star = m.group(1) or "==", m.group(2), bool(m.group(3))
        if star and op not in ("==", "!="):
            raise ValueError(f"'.*' only with == or != in {part.strip()!r}")
        if op == "~=" and "." not in ver:
            raise ValueError(f"~= needs at least two version parts in {part.strip()!r}")
        clauses.append((op, _release(ver), star))
    return clauses


def version_in_range(version: str, spec: str) -> bool:
    """Whether release ``version`` satisfies ``spec`` (PEP 440 subset: ``>=, >, <=, <,
    ==, !=, ~=`` with release numbers, ``==0.1.*``; clauses joined by commas).

    Raises
    ------
    ValueError
        If ``spec`` or ``version`` cannot be parsed.
    """
    v = _release(version)
    if not spec.strip():
        return True
    for op, ref, star in _check_spec(spec):
        if star:
            eq = v[: len(ref)] == ref
            ok = eq if op == "==" else not eq
        elif op == "~=":
            upper = ref[:-2] + (ref[-2] + 1,)
            ok = _cmp(v, ref) >= 0 and _cmp(v, upper) < 0
        else:
            c = _cmp(v, ref)
            ok = {">=": c >= 0, ">": c > 0, "<=": c <= 0, "<": c < 0, "==": c == 0,
                  "!=": c != 0}[op]
        if not ok:
            return False
    return True


# -- manifests ------------------------------------------------------------------------------
def _str_list(value: object, where: str, errors: list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        errors.append(f"{where} must be a list of non-empty strings")
        return ()
    return tuple(value)


def _parse_contribution(kind: Kind, raw: object, where: str, plugin: str,
                        errors: list[str]) -> Contribution | None:
    if not isinstance(raw, dict):
        errors.append(f"{where} must be a table")
        return None
    allowed = _COMMON_FIELDS | set(_KIND_FIELDS[kind])
    for key in sorted(set(raw) - allowed):
        errors.append(f"{where}: unknown field {key!r} (allowed: {', '.join(sorted(allowed))})")
    required = {"id", "python_name"} | {k for k, req in _KIND_FIELDS[kind].items() if req}
    for key in sorted(required - set(raw)):
        errors.append(f"{where}: missing field {key!r}")
    n_errors = len(errors)
    cid, pyname, title = raw.get("id", ""), raw.get("python_name", ""), raw.get("title", "")
    if "id" in raw and not (isinstance(cid, str) and _ID_RE.match(cid)):
        errors.append(f"{where}: id {cid!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if "python_name" in raw and not (isinstance(pyname, str) and _PYTHON_NAME_RE.match(pyname)):
        errors.append(f"{where}: python_name {pyname!r} must look like 'package.module:attribute'")
    if not isinstance(title, str):
        errors.append(f"{where}: title must be a string")
    what = raw.get("what", "")
    if not isinstance(what, str) or (kind is Kind.READERS and "what" in raw
                                     and what not in _READER_WHAT):
        errors.append(f"{where}: what must be one of {', '.join(_READER_WHAT)}; got {what!r}")
    patterns = (_str_list(raw["filename_patterns"], f"{where}: filename_patterns", errors)
                if "filename_patterns" in raw else ())
    if kind is Kind.READERS and "filename_patterns" in raw and not patterns:
        errors.append(f"{where}: filename_patterns must not be empty")
    modalities = (_str_list(raw["modalities"], f"{where}: modalities", errors)
                  if "modalities" in raw else ())
    if len(errors) > n_errors or not cid or not pyname:
        return None
    return Contribution(kind=kind, id=str(cid), python_name=str(pyname), plugin=plugin,
                        title=str(title), what=str(what), filename_patterns=patterns,
                        modalities=tuple(m.upper() for m in modalities))


def parse_manifest(data: Mapping[str, object], *, source: str, name: str = "",
                   version: str = "") -> Plugin:
    """Check a manifest document and build its :class:`Plugin`.

    Parameters
    ----------
    data : mapping
        The parsed manifest (TOML document).
    source : str
        Where it came from, for messages.
    name, version : str
        Fallbacks when the manifest has no ``name`` / ``version``.

    Returns
    -------
    Plugin
        Status ``available``; or ``failed`` with the reason when its IR Planner version
        range excludes this version.

    Raises
    ------
    ManifestError
        Every problem of the manifest, in one message naming ``source``.
    """
    errors: list[str] = []
    if not isinstance(data, Mapping):
        raise ManifestError(f"{source}: manifest must be a table, got {type(data).__name__}")
    schema = data.get("schema")
    if schema != MANIFEST_SCHEMA:
        errors.append(f"schema must be {MANIFEST_SCHEMA!r}; got {schema!r}")
    for key in sorted(set(data) - _TOP_FIELDS):
        errors.append(f"unknown field {key!r} (contribution kinds: {', '.join(KINDS)})")
    pname = data.get("name", name)
    if not (isinstance(pname, str) and _ID_RE.match(pname)):
        errors.append(f"name {pname!r} must be 1-64 letters, digits, '.', '_' or '-'")
        pname = name or "?"
    texts = {}
    for key in ("display_name", "description", "version", "ir_planner_version"):
        value = data.get(key, "")
        if not isinstance(value, str):
            errors.append(f"{key} must be a string")
            value = ""
        texts[key] = value
    spec = texts["ir_planner_version"]
    try:
        _check_spec(spec) if spec.strip() else None
    except ValueError as exc:
        errors.append(f"ir_planner_version: {exc}")
        spec = ""
    contributions: list[Contribution] = []
    for kind in Kind:
        raw = data.get(kind.value, [])
        if not isinstance(raw, list):
            errors.append(f"{kind.value} must be an array of tables ([[{kind.value}]])")
            continue
        for i, item in enumerate(raw):
            c = _parse_contribution(kind, item, f"{kind.value}[{i}]", str(pname), errors)
            if c is not None:
                if any(o.key == c.key for o in contributions):
                    errors.append(f"{kind.value}[{i}]: id {c.id!r} declared twice")
                contributions.append(c)
    if not contributions and not errors:
        errors.append(f"contributes nothing (declare at least one of {', '.join(KINDS)})")
    if errors:
        raise ManifestError(f"{source}: " + "; ".join(errors))
    plugin = Plugin(name=str(pname), source=source, version=texts["version"] or version,
                    display_name=texts["display_name"], description=texts["description"],
                    ir_planner_version=spec.strip(), contributions=contributions)
    if spec.strip() and not version_in_range(__version__, spec):
        plugin.status = Status.FAILED
        plugin.reason = (f"supports IR Planner {spec.strip()}, this is {__version__}; "
                         "update the plugin or IR Planner")
    return plugin


def _read_manifest(ep: EntryPoint) -> Mapping[str, object]:
    """The manifest file named by ``ep`` (``package:file.toml``), read without importing
    anything but the package's ``__init__``."""
    if not ep.attr or not ep.attr.endswith(".toml"):
        raise ManifestError(f"entry point {ep.name} = {ep.value!r} must name a manifest "
                            "file: 'package:plugin.toml'")
    try:
        text = (resources.files(ep.module) / ep.attr).read_text(encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 - any failure is the plugin's, reported
        raise ManifestError(f"cannot read manifest {ep.value}: {type(exc).__name__}: "
                            f"{exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"manifest {ep.value} is not valid TOML: {exc}") from exc


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "", ""
    try:
        return str(dist.metadata["Name"] or dist.name), str(dist.version)
    except Exception:  # noqa: BLE001 - metadata of a broken install
        return "", ""


def _import_object(python_name: str) -> object:
    module_name, _, attr = python_name.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


# -- the registry -----------------------------------------------------------------------------
class PluginRegistry:
    """Every plugin and contribution, their state, and lazy loading.

    Parameters
    ----------
    discover : bool
        Read installed plugins (entry points) on first use. False = only what is
        :meth:`register`-ed (tests, embedding).
    """

    def __init__(self, *, discover: bool = True) -> None:
        self._discover = discover
        self._plugins: list[Plugin] | None = None
        self._registered: list[Plugin] = []
        self._objects: dict[tuple[Kind, str], object] = {}

    # -- discovery ------------------------------------------------------------------------
    def _discovered(self) -> list[Plugin]:
        found: list[Plugin] = []
        if not self._discover:
            return found
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist_name, dist_version = _dist_of(ep)
            where = (f"{dist_name} {dist_version} " if dist_name else "") + \
                f"(entry point {ep.name} = {ep.value})"
            try:
                plugin = parse_manifest(_read_manifest(ep), source=where, name=ep.name,
                                        version=dist_version)
            except ManifestError as exc:
                plugin = Plugin(name=ep.name, source=where, version=dist_version,
                                status=Status.FAILED, reason=str(exc))
            found.append(plugin)
        for group, kind in LEGACY_GROUPS.items():
            for ep in sorted(entry_points(group=group), key=lambda e: e.name):
                dist_name, dist_version = _dist_of(ep)
                name = f"{dist_name or ep.name}:{ep.name}"
                where = (f"{dist_name} {dist_version} " if dist_name else "") + \
                    f"(legacy group {group}: {ep.name} = {ep.value}; move it to " \
                    f"{ENTRY_POINT_GROUP})"
                try:
                    plugin = parse_manifest(
                        {"schema": MANIFEST_SCHEMA, "name": re.sub(r"[^\w.-]", "-", name),
                         kind: [{"id": ep.name, "python_name": ep.value}]},
                        source=where, version=dist_version)
                except ManifestError as exc:
                    plugin = Plugin(name=name, source=where, version=dist_version,
                                    status=Status.FAILED, reason=str(exc))
                plugin.legacy = True
                found.append(plugin)
        return found

    def _all(self) -> list[Plugin]:
        if self._plugins is None:
            plugins = self._discovered()
            # IR Planner's own plugin first, so its ids win over a third party's
            plugins.sort(key=lambda p: (p.name != BUILTIN_PLUGIN, p.legacy))
            self._plugins = []
            for p in plugins:
                self._add(p)
            for p in self._registered:
                self._add(p)
        return self._plugins

    def _add(self, plugin: Plugin) -> None:
        assert self._plugins is not None
        if any(p.name == plugin.name for p in self._plugins):
            plugin.status = Status.FAILED
            plugin.reason = f"another plugin is already called {plugin.name!r}"
        elif plugin.status is not Status.FAILED:
            for c in plugin.contributions:
                owner = next((o for o in self.contributions(c.kind) if o.id == c.id), None)
                if owner is not None:
                    c.status = Status.FAILED
                    c.reason = (f"{c.kind.value} {c.id!r} is already contributed by plugin "
                                f"{owner.plugin!r}")
        if plugin.status is Status.FAILED:
            log.info("plugin %r is not used: %s", plugin.name, plugin.reason)
        self._plugins.append(plugin)

    def register(self, manifest: Mapping[str, object] | str | Path, *,
                 source: str = "registered in-process") -> Plugin:
        """Add a plugin from a manifest (a parsed document, TOML text or a ``.toml`` file).

        Raises
        ------
        ManifestError
            If the manifest is invalid (nothing is registered).
        """
        if isinstance(manifest, Path):
            source = f"{source} ({manifest})"
            manifest = manifest.read_text(encoding="utf-8")
        if isinstance(manifest, str):
            try:
                manifest = tomllib.loads(manifest)
            except tomllib.TOMLDecodeError as exc:
                raise ManifestError(f"{source}: not valid TOML: {exc}") from exc
        plugin = parse_manifest(manifest, source=source)
        self._registered.append(plugin)
        if self._plugins is None:
            self._all()  # discovers, then adds the registered ones (this one included)
        else:
            self._add(plugin)
        return plugin

    def register_builtin(self) -> Plugin:
        """Register IR Planner's own manifest (``ir_planner/plugin.toml``); for registries
        built with ``discover=False`` that need the built-in readers, segmenters, ...."""
        text = (resources.files("ir_planner") / "plugin.toml").read_text(encoding="utf-8")
        return self.register(text, source="IR Planner built-in (ir_planner/plugin.toml)")

    # -- queries --------------------------------------------------------------------------
    def plugins(self) -> list[Plugin]:
        """Every plugin, usable or not, in discovery order."""
        return list(self._all())

    def plugin(self, name: str) -> Plugin:
        """The plugin called ``name``."""
        for p in self._all():
            if p.name == name:
                return p
        raise PluginError(f"no plugin named {name!r}; installed: "
                          f"{', '.join(p.name for p in self._all()) or '(none)'}")

    def contributions(self, kind: Kind | str) -> list[Contribution]:
        """Usable contributions of ``kind``: their plugin is valid and compatible and they
        have not failed."""
        k = Kind(kind)
        return [c for p in self._all() if p.status is not Status.FAILED
                for c in p.contributions if c.kind is k and c.status is not Status.FAILED]

    def get(self, kind: Kind | str, contribution_id: str) -> Contribution:
        """The usable contribution ``contribution_id`` of ``kind``.

        Raises
        ------
        PluginError
            Unknown, or known but failed (the message says why and what exists).
        """
        k = Kind(kind)
        for c in self.contributions(k):
            if c.id == contribution_id:
                return c
        for p in self._all():
            for c in p.contributions:
                if c.kind is k and c.id == contribution_id:
                    why = p.reason if p.status is Status.FAILED else c.reason
                    raise PluginError(f"{c.describe()} cannot be used: {why}")
        usable = ", ".join(sorted(c.id for c in self.contributions(k))) or "(none)"
        raise PluginError(f"no {k.value} contribution named {contribution_id!r}; "
                          f"available: {usable}")

    # -- loading and running --------------------------------------------------------------
    def fail(self, contribution: Contribution, reason: str) -> None:
        """Mark ``contribution`` failed (it is no longer offered) and log why."""
        contribution.status = Status.FAILED
        contribution.reason = reason
        self._objects.pop(contribution.key, None)
        log.info("%s failed: %s", contribution.describe(), reason)

    def load(self, contribution: Contribution) -> object:
        """Import the object named by ``contribution.python_name`` (once; cached).

        Raises
        ------
        PluginError
            If the contribution already failed, or the import fails (it is then marked
            failed with the reason).
        """
        if contribution.status is Status.FAILED:
            raise PluginError(f"{contribution.describe()} failed earlier: {contribution.reason}")
        if contribution.key in self._objects:
            return self._objects[contribution.key]
        try:
            obj = _import_object(contribution.python_name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must never be fatal
            reason = f"import failed: {type(exc).__name__}: {exc}"
            self.fail(contribution, reason)
            raise PluginError(f"{contribution.describe()} could not be loaded: {reason}") \
                from exc
        self._objects[contribution.key] = obj
        contribution.status = Status.LOADED
        return obj

    def load_all(self) -> None:
        """Try to import every usable contribution (``ir-planner plugins --load``)."""
        for p in self._all():
            if p.status is Status.FAILED:
                continue
            for c in p.contributions:
                if c.status is Status.AVAILABLE:
                    try:
                        self.load(c)
                    except PluginError:
                        pass  # recorded on the contribution

    @contextmanager
    def guard(self, contribution: Contribution, action: str = "run") -> Iterator[None]:
        """Run plugin code: an unexpected exception marks the contribution failed and is
        re-raised as :class:`PluginError` naming the plugin and the reason.

        :class:`IRPlannerError` raised by the plugin (an expected, explained failure such
        as "TotalSegmentator is not installed") passes through unchanged and does not
        mark the contribution failed.
        """
        try:
            yield
        except IRPlannerError:
            raise
        except Exception as exc:  # noqa: BLE001 - isolate the plugin
            reason = f"{action} raised {type(exc).__name__}: {exc}"
            self.fail(contribution, reason)
            raise PluginError(f"{contribution.describe()} failed: {reason}") from exc

    def find_reader(self, path: str | Path, what: str) -> Contribution | None:
        """The usable reader of ``what`` for ``path``: the first whose specific pattern
        (``*.nrrd``) matches, else the first whose catch-all (``*``, ``*/``) does.

        IR Planner's own readers come first, so a third party cannot take over a format
        IR Planner reads; a third party's ``*.xyz`` wins over a built-in catch-all.
        """
        readers = [c for c in self.contributions(Kind.READERS) if c.what == what]
        for specific in (True, False):
            for c in readers:
                if c.handles(path, specific=specific):
                    return c
        return None


# -- the process-wide registry ------------------------------------------------------------
_REGISTRY: PluginRegistry | None = None


def get_registry() -> PluginRegistry:
    """The application's registry (installed plugins, discovered on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = PluginRegistry()
    return _REGISTRY


@contextmanager
def use_registry(registry: PluginRegistry) -> Iterator[PluginRegistry]:
    """Make ``registry`` the application's registry inside the ``with`` block."""
    global _REGISTRY
    before = _REGISTRY
    _REGISTRY = registry
    try:
        yield registry
    finally:
        _REGISTRY = before


@contextmanager
def isolated_registry(*, builtin: bool = True,
                      manifests: Sequence[Mapping[str, object] | str | Path] = ()
                      ) -> Iterator[PluginRegistry]:
    """A registry that ignores installed plugins, made the application's registry.

    The test helper (fixture ``plugin_registry`` in ``tests/conftest.py``): code under
    test sees only IR Planner's own contributions (``builtin=True``) and what the test
    registers.
    """
    registry = PluginRegistry(discover=False)
    if builtin:
        registry.register_builtin()
    for m in manifests:
        registry.register(m)
    with use_registry(registry):
        yield registry

