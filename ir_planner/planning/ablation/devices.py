"""The device catalog: biopsy needles and ablation devices with cited zone data.

Catalog files are JSON (schema ``ir-planner-device/1``)::

    {"schema": "ir-planner-device/1",
     "references": {"key": "full citation ..."},
     "devices": [{"id": ..., "name": ..., "kind": "microwave" | "radiofrequency" | "cryo" |
                  "biopsy", "settings": [{"name": ..., "zone": {...}, "cite": {...}}]}]}

Every number of a zone must name its source: each key of ``zone`` (and ``power_w``,
``time_min``, ``duty_cycle_pct``, ``suggested_calibration`` when given) appears in the
setting's ``cite`` (a key of the file's ``references``) or, when no source reports it,
in ``assumed`` with the reason. Files violating this are rejected.

A setting may say what kind of evidence its numbers are (``evidence``, one of
:data:`EVIDENCE_KINDS`): a manufacturer's chart (``vendor-chart``: ex vivo, non-perfused
tissue), ``ex-vivo`` or ``in-vivo-animal`` measurements, zones measured in patients
(``in-vivo-patient``) or a ``phantom`` (gel) study. Measured zones are usually smaller
than charts; the catalog keeps them apart so the user can choose. A device may give
``outer_diameter_tolerance_mm`` (± around ``outer_diameter_mm``), cited like every number.

Sources, in order (a later one overrides a device with the same id, with a warning):

1. the package's own files (``ir_planner/data/devices/*.json``), contributed by IR
   Planner's own plugin manifest;
2. plugins' ``[[devices]]`` contributions (:mod:`ir_planner.core.plugins`); each
   ``python_name`` names a callable returning a path, a catalog dict, or a list of those
   (or is such an object itself). Loaded lazily on first use; a broken plugin is
   reported and skipped;
3. the user's folder: ``$IR_PLANNER_DEVICES_DIR`` or ``~/.config/ir-planner/devices/``.

Heat-based zones (microwave, RF) are ellipsoids: ``length_mm`` along the needle axis,
``diameter_mm`` across it, placed either by ``distal_edge_beyond_tip_mm`` (how far the
zone reaches past the tip) or by ``tip_to_centre_mm`` (distance from the tip back along
the shaft to the zone centre). Cryo zones are temperature fields (see
:mod:`ir_planner.planning.ablation.zones`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ir_planner.core.errors import InputError, IRPlannerError
from ir_planner.core.jsonfile import read_json_file
from ir_planner.core.plugins import BUILTIN_PLUGIN, Kind, Status, get_registry

__all__ = [
    "DEVICE_SCHEMA",
    "EVIDENCE_KINDS",
    "HEAT_KINDS",
    "Device",
    "DeviceSetting",
    "DeviceCatalog",
    "load_catalog",
    "get_device",
    "user_devices_dir",
    "builtin_catalog_files",
]

log = logging.getLogger(__name__)

DEVICE_SCHEMA = "ir-planner-device/1"
KINDS = ("microwave", "radiofrequency", "cryo", "biopsy")
HEAT_KINDS = ("microwave", "radiofrequency")
#: What the numbers of a setting are (its ``evidence``; optional).
EVIDENCE_KINDS = ("vendor-chart", "ex-vivo", "in-vivo-animal", "in-vivo-patient", "phantom")
_SETTING_NUMBERS = ("power_w", "time_min", "duty_cycle_pct", "suggested_calibration")


@dataclass(frozen=True)
class DeviceSetting:
    """One generator setting of an ablation device and its expected zone.

    Attributes
    ----------
    name : str
        Setting name (e.g. ``"65W-10min"``).
    zone : dict
        Zone geometry (mm, °C); see the module docstring.
    power_w, time_min, duty_cycle_pct : float or None
        Generator settings when reported.
    basis : str
        What the numbers are (vendor chart, ex vivo, patient CT ...), in words.
    evidence : str
        One of :data:`EVIDENCE_KINDS`, or ``""`` when not stated.
    cite : dict
        Field name → reference key.
    assumed : dict
        Field name → why it is an assumption (no source reports it).
    suggested_calibration : float or None
        A cited measured/chart ratio, if any (the applied factor defaults to 1.0).
    notes : str
        Free text.
    """

    name: str
    zone: dict[str, Any]
    power_w: float | None = None
    time_min: float | None = None
    duty_cycle_pct: float | None = None
    basis: str = ""
    cite: dict[str, str] = field(default_factory=dict)
    assumed: dict[str, str] = field(default_factory=dict)
    suggested_calibration: float | None = None
    notes: str = ""
    evidence: str = ""

    def label(self) -> str:
        """A short human description, e.g. ``"65 W, 10 min"``."""
        parts = []
        if self.power_w is not None:
            parts.append(f"{self.power_w:g} W")
        if self.time_min is not None:
            parts.append(f"{self.time_min:g} min")
        if self.duty_cycle_pct is not None:
            parts.append(f"{self.duty_cycle_pct:g} % duty")
        return ", ".join(parts) or self.name


@dataclass(frozen=True)
class Device:
    """A needle or ablation device of the catalog.

    Attributes
    ----------
    id, name, manufacturer, kind : str
        ``kind`` is one of ``microwave``, ``radiofrequency``, ``cryo``, ``biopsy``.
    settings : tuple of DeviceSetting
        Empty for biopsy needles.
    gauge : int or None
        Needle gauge.
    outer_diameter_mm, length_mm, active_tip_mm : float or None
        Needle geometry when known.
    outer_diameter_tolerance_mm : float or None
        Tolerance (±) of the outer diameter when cited.
    references : dict
        Reference key → full citation.
    cite, assumed : dict
        Sources / assumptions of device-level numbers.
    source_file : str
        Where the entry was read from (file path, ``plugin:NAME`` ...).
    notes : str
        Free text.
    """

    id: str
    name: str
    kind: str
    manufacturer: str = ""
    settings: tuple[DeviceSetting, ...] = ()
    gauge: int | None = None
    outer_diameter_mm: float | None = None
    length_mm: float | None = None
    active_tip_mm: float | None = None
    references: dict[str, str] = field(default_factory=dict)
    cite: dict[str, str] = field(default_factory=dict)
    assumed: dict[str, str] = field(default_factory=dict)
    source_file: str = ""
    notes: str = ""
    outer_diameter_tolerance_mm: float | None = None

    @property
    def is_heat(self) -> bool:
        """Whether the device ablates by heat (microwave, RF)."""
        return self.kind in HEAT_KINDS

    def setting(self, name: str | None = None) -> DeviceSetting:
        """The setting called ``name`` (the first one when None).

        Raises
        ------
        InputError
            If the device has no settings or no setting of that name (lists the known ones).
        """
        if not self.settings:
            raise InputError(f"device {self.id!r} ({self.kind}) has no ablation settings")
        if name is None or name == "":
            return self.settings[0]
        for s in self.settings:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.settings)
        raise InputError(f"device {self.id!r} has no setting {name!r}; known settings: {known}")

    def sources_for(self, setting: DeviceSetting) -> list[str]:
        """Full citations used by ``setting`` (and the device), in order."""
        keys: list[str] = []
        for k in list(self.cite.values()) + list(setting.cite.values()):
            if k not in keys:
                keys.append(k)
        return [f"[{k}] {self.references.get(k, '(missing reference)')}" for k in keys]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (as listed by ``ir-planner devices --json``)."""
        return {
            "id": self.id, "name": self.name, "kind": self.kind,
            "manufacturer": self.manufacturer, "gauge": self.gauge,
            "outer_diameter_mm": self.outer_diameter_mm,
            "outer_diameter_tolerance_mm": self.outer_diameter_tolerance_mm,
            "length_mm": self.length_mm,
            "active_tip_mm": self.active_tip_mm, "cite": dict(self.cite),
            "assumed": dict(self.assumed), "notes": self.notes,
            "source_file": self.source_file,
            "settings": [
                {"name": s.name, "power_w": s.power_w, "time_min": s.time_min,
                 "duty_cycle_pct": s.duty_cycle_pct, "basis": s.basis,
                 "evidence": s.evidence, "zone": dict(s.zone),
                 "cite": dict(s.cite), "assumed": dict(s.assumed),
                 "suggested_calibration": s.suggested_calibration, "notes": s.notes}
                for s in self.settings
            ],
            "references": dict(self.references),
        }


# -- parsing ----------------------------------------------------------------------------
def _num(value: Any, what: str, *, positive: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} must be a number; got {value!r}")
    if not math.isfinite(value) or abs(value) > 1000:
        raise InputError(f"{what} must be a finite number of at most 1000 (mm/°C); got {value!r}")
    if positive and not value > 0:
        raise InputError(f"{what} must be > 0; got {value!r}")
    return float(value)


def _check_zone(kind: str, zone: dict[str, Any], where: str) -> None:
    if kind in HEAT_KINDS:
        for key in ("length_mm", "diameter_mm"):
            _num(zone.get(key), f"{where}: zone.{key}", positive=True)
            if zone.get(key) is None:
                raise InputError(f"{where}: heat zone needs {key}")
        placed = [k for k in ("distal_edge_beyond_tip_mm", "tip_to_centre_mm") if k in zone]
        if len(placed) != 1:
            raise InputError(f"{where}: heat zone needs exactly one of distal_edge_beyond_tip_mm "
                             f"or tip_to_centre_mm; got {placed or 'none'}")
        _num(zone[placed[0]], f"{where}: zone.{placed[0]}")
    elif kind == "cryo":
        radii = zone.get("isotherm_radii_mm")
        if not isinstance(radii, dict) or len(radii) < 2:
            raise InputError(f"{where}: cryo zone needs isotherm_radii_mm with >= 2 "
                             "temperature → radius pairs")
        try:
            pts = sorted((float(t), float(r)) for t, r in radii.items())
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: isotherm_radii_mm must map temperatures to radii in mm "
                             f"({exc})") from exc
        if not all(math.isfinite(t) and math.isfinite(r) and r <= 1000 for t, r in pts):
            raise InputError(f"{where}: isotherm radii and temperatures must be finite numbers")
        if any(r <= 0 for _, r in pts) or any(b[1] <= a[1] for a, b in zip(pts, pts[1:])):
            raise InputError(f"{where}: isotherm radii must be > 0 and grow with temperature")
        for key in ("lethal_isotherm_c", "body_temperature_c", "tip_to_centre_mm"):
            if key not in zone:
                raise InputError(f"{where}: cryo zone needs {key}")
            _num(zone[key], f"{where}: zone.{key}")


def _parse_setting(kind: str, raw: dict[str, Any], refs: dict[str, str], where: str
                   ) -> DeviceSetting:
    if not isinstance(raw, dict) or not raw.get("name"):
        raise InputError(f"{where}: each setting needs a name")
    where = f"{where} setting {raw['name']!r}"
    zone = raw.get("zone")
    if not isinstance(zone, dict):
        raise InputError(f"{where}: missing 'zone' object")
    _check_zone(kind, zone, where)
    cite = dict(raw.get("cite") or {})
    assumed = dict(raw.get("assumed") or {})
    for key in list(zone) + [k for k in _SETTING_NUMBERS if raw.get(k) is not None]:
        if key not in cite and key not in assumed:
            raise InputError(f"{where}: {key} has no source: add it to 'cite' (a reference "
                             "key) or to 'assumed' (with the reason)")
    for key, ref in cite.items():
        if ref not in refs:
            raise InputError(f"{where}: cite.{key} names unknown reference {ref!r}")
    evidence = str(raw.get("evidence", ""))
    if evidence and evidence not in EVIDENCE_KINDS:
        raise InputError(f"{where}: evidence must be one of {', '.join(EVIDENCE_KINDS)}; "
                         f"got {evidence!r}")
    return DeviceSetting(
        name=str(raw["name"]), zone=dict(zone),
        power_w=_num(raw.get("power_w"), f"{where}: power_w", positive=True),
        time_min=_num(raw.get("time_min"), f"{where}: time_min", positive=True),
        duty_cycle_pct=_num(raw.get("duty_cycle_pct"), f"{where}: duty_cycle_pct",
                            positive=True),
        basis=str(raw.get("basis", "")), cite=cite, assumed=assumed,
        suggested_calibration=_num(raw.get("suggested_calibration"),
                                   f"{where}: suggested_calibration", positive=True),
        notes=str(raw.get("notes", "")),
        evidence=evidence,
    )


def parse_catalog(data: Any, source: str) -> list[Device]:
    """Validate one catalog document and return its devices.

    Raises
    ------
    InputError
        Naming ``source`` and what is wrong.
    """
    if not isinstance(data, dict) or data.get("schema") != DEVICE_SCHEMA:
        raise InputError(f"device catalog {source}: expected an object with "
                         f"\"schema\": \"{DEVICE_SCHEMA}\"")
    refs = {str(k): str(v) for k, v in (data.get("references") or {}).items()}
    devices = data.get("devices")
    if not isinstance(devices, list):
        raise InputError(f"device catalog {source}: 'devices' must be a list")
    out: list[Device] = []
    for raw in devices:
        if not isinstance(raw, dict) or not raw.get("id"):
            raise InputError(f"device catalog {source}: every device needs an 'id'")
        where = f"device catalog {source}, device {raw['id']!r}"
        kind = raw.get("kind")
        if kind not in KINDS:
            raise InputError(f"{where}: kind must be one of {', '.join(KINDS)}; got {kind!r}")
        cite = dict(raw.get("cite") or {})
        assumed = dict(raw.get("assumed") or {})
        for key in ("outer_diameter_mm", "outer_diameter_tolerance_mm", "length_mm",
                    "active_tip_mm"):
            if raw.get(key) is not None and key not in cite and key not in assumed:
                raise InputError(f"{where}: {key} has no source ('cite' or 'assumed')")
        for key, ref in cite.items():
            if ref not in refs:
                raise InputError(f"{where}: cite.{key} names unknown reference {ref!r}")
        settings = tuple(_parse_setting(kind, s, refs, where) for s in raw.get("settings", []))
        if kind != "biopsy" and not settings:
            raise InputError(f"{where}: an ablation device needs at least one setting")
        out.append(Device(
            id=str(raw["id"]), name=str(raw.get("name", raw["id"])), kind=kind,
            manufacturer=str(raw.get("manufacturer", "")), settings=settings,
            gauge=int(raw["gauge"]) if raw.get("gauge") is not None else None,
            outer_diameter_mm=_num(raw.get("outer_diameter_mm"), f"{where}: outer_diameter_mm",
                                   positive=True),
            length_mm=_num(raw.get("length_mm"), f"{where}: length_mm", positive=True),
            active_tip_mm=_num(raw.get("active_tip_mm"), f"{where}: active_tip_mm",
                               positive=True),
            references=refs, cite=cite, assumed=assumed, source_file=source,
            notes=str(raw.get("notes", "")),
            outer_diameter_tolerance_mm=_num(raw.get("outer_diameter_tolerance_mm"),
                                             f"{where}: outer_diameter_tolerance_mm",
                                             positive=True),
        ))
    return out


def _read_file(path: Path) -> list[Device]:
    data = read_json_file(path, what="device catalog", max_bytes=4 * 2**20)
    return parse_catalog(data, str(path))


def user_devices_dir() -> Path:
    """The user's device folder: ``$IR_PLANNER_DEVICES_DIR`` or ``~/.config/ir-planner/devices``."""
    env = os.environ.get("IR_PLANNER_DEVICES_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "ir-planner" / "devices"


def builtin_catalog_files() -> list[Path]:
    """The package's own catalog files (contributed through ``ir_planner/plugin.toml``)."""
    folder = resources.files("ir_planner") / "data" / "devices"
    return sorted(Path(str(p)) for p in folder.iterdir() if str(p).endswith(".json"))


def _plugin_items(obj: Any) -> Iterable[Any]:
    if callable(obj):
        obj = obj()
    if isinstance(obj, (list, tuple)):
        yield from obj
    else:
        yield obj


class DeviceCatalog:
    """All known devices; see the module docstring for where they come from.

    Parameters
    ----------
    include_plugins : bool
        Whether to load plugins' device catalogs (lazily, on first use); the built-in
        files are always loaded.
    user_dir : path or None
        The user's folder; None = :func:`user_devices_dir`. Missing folders are fine.
    extra : list of path or dict
        More catalog files / documents (highest priority), e.g. for tests.
    """

    def __init__(self, *, include_plugins: bool = True, user_dir: str | os.PathLike[str] | None
                 = None, extra: Iterable[Any] = ()) -> None:
        self._include_plugins = include_plugins
        self._user_dir = Path(user_dir) if user_dir is not None else None
        self._extra = list(extra)
        self._devices: dict[str, Device] | None = None
        self.warnings: list[str] = []

    # -- loading ---------------------------------------------------------------------------
    def _add(self, devices: Iterable[Device]) -> None:
        assert self._devices is not None
        for d in devices:
            if d.id in self._devices:
                msg = (f"device {d.id!r} from {d.source_file} overrides the one from "
                       f"{self._devices[d.id].source_file}")
                log.info(msg)
                self.warnings.append(msg)
            self._devices[d.id] = d

    def _add_item(self, item: Any, source: str) -> None:
        if isinstance(item, dict):
            self._add(parse_catalog(item, source))
        else:
            self._add(_read_file(Path(item)))

    def _load(self) -> dict[str, Device]:
        if self._devices is not None:
            return self._devices
        self._devices = {}
        self._load_contributed()
        folder = self._user_dir if self._user_dir is not None else user_devices_dir()
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                try:
                    self._add(_read_file(path))
                except InputError as exc:
                    msg = f"skipped user device file: {exc}"
                    log.warning(msg)
                    self.warnings.append(msg)
        for n, item in enumerate(self._extra):
            self._add_item(item, f"extra[{n}]")
        return self._devices

    def _load_contributed(self) -> None:
        registry = get_registry()
        for contrib in registry.contributions(Kind.DEVICES):
            if contrib.plugin == BUILTIN_PLUGIN:
                # a broken built-in file is a bug: let it raise
                for item in _plugin_items(registry.load(contrib)):
                    self._add_item(item, "built-in")
                continue
            if not self._include_plugins:
                continue
            try:
                with registry.guard(contrib, "reading its catalog"):
                    for item in _plugin_items(registry.load(contrib)):
                        self._add_item(item, f"plugin {contrib.plugin}")
            except IRPlannerError as exc:  # bad catalog data or a plugin failure: skip it
                if contrib.status is not Status.FAILED:
                    registry.fail(contrib, str(exc))
                msg = (f"device plugin {contrib.plugin!r} ({contrib.python_name}) failed "
                       f"and was skipped: {exc}")
                log.warning(msg)
                self.warnings.append(msg)

    # -- access ------------------------------------------------------------------------------
    def devices(self, kind: str | None = None) -> list[Device]:
        """All devices (of ``kind`` when given), sorted by id."""
        devs = sorted(self._load().values(), key=lambda d: d.id)
        return [d for d in devs if kind is None or d.kind == kind]

    def ids(self) -> list[str]:
        """All device ids, sorted."""
        return sorted(self._load())

    def get(self, device_id: str) -> Device:
        """The device with id ``device_id``.

        Raises
        ------
        InputError
            If unknown (the message lists the known ids).
        """
        devices = self._load()
        if device_id not in devices:
            raise InputError(f"unknown device {device_id!r}; known devices: "
                             f"{', '.join(sorted(devices))}")
        return devices[device_id]


_DEFAULT: DeviceCatalog | None = None


def load_catalog(*, refresh: bool = False) -> DeviceCatalog:
    """The default catalog (built-ins, plugins, user folder), cached."""
    global _DEFAULT
    if _DEFAULT is None or refresh:
        _DEFAULT = DeviceCatalog()
    return _DEFAULT


def get_device(device_id: str) -> Device:
    """Shortcut for ``load_catalog().get(device_id)``."""
    return load_catalog().get(device_id)
