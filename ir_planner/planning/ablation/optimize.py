"""Choosing depth, setting and the number of probes.

Single probe (:func:`optimize_single`): for one trajectory, every setting of the device
and tip depths along the path (coarse 2 mm sweep, then 0.25 mm refinement around the
best) are scored by the minimal ablative margin (exact, on the tumour surface) and the
volume of critical (forbidden) structures inside the zone. Choice, in order:

1. if some candidates reach the margin goal (default 5 mm): the one with the least
   critical damage (0.05 ml resolution), then the smallest zone (least normal tissue),
   then the largest margin;
2. otherwise the largest margin (the best achievable), then the least damage.

Several probes (:func:`optimize_multi`): when one zone cannot reach the goal, probes
are added greedily on candidate trajectories (entry/target pairs, e.g. the planning
engine's safe paths or the plan's trajectories): each round tries every candidate at
depths along its path and keeps the one that covers most of the still-uncovered
tumour + goal shell (least damage on ties), until the margin goal is met or
``max_probes`` is reached; then each probe's depth is refined in turn to maximise the
minimal margin. Tips stay ``min_tip_spacing_mm`` (10 mm) apart. An optional ``safety``
callable (entry, tip) → (ok, reason) vetoes needle paths (e.g. :func:`engine_safety`
around the planning engine).

Every result carries human-readable ``reasons``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ir_planner.core.errors import InputError, IRPlannerError
from ir_planner.core.progress import ProgressCallback, report
from ir_planner.planning.ablation.coverage import (
    AblationMetrics,
    CriticalModel,
    TumourModel,
    evaluate,
    margins,
)
from ir_planner.planning.ablation.devices import Device, DeviceSetting
from ir_planner.planning.ablation.zones import Probe, Zone, zone_for

__all__ = ["Candidate", "ProbePlacement", "OptimizationResult", "optimize_single",
           "optimize_multi", "engine_safety"]

Safety = Callable[[NDArray[np.float64], NDArray[np.float64]], tuple[bool, str]]

DAMAGE_RESOLUTION_ML = 0.05


@dataclass(frozen=True)
class Candidate:
    """A candidate needle path (LPS, mm)."""

    entry_lps: tuple[float, float, float]
    target_lps: tuple[float, float, float]
    name: str = ""


@dataclass
class ProbePlacement:
    """One chosen probe: path, setting and tip depth offset beyond the path's target."""

    trajectory: str
    entry_lps: tuple[float, float, float]
    target_lps: tuple[float, float, float]
    setting: str
    depth_offset_mm: float
    tip_lps: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"trajectory": self.trajectory, "setting": self.setting,
                "depth_offset_mm": round(self.depth_offset_mm, 2),
                "entry_lps": list(self.entry_lps), "target_lps": list(self.target_lps),
                "tip_lps": [round(v, 2) for v in self.tip_lps]}


@dataclass
class OptimizationResult:
    """What was chosen, its metrics, and why."""

    device_id: str
    calibration: float
    probes: list[ProbePlacement]
    metrics: AblationMetrics
    goal_met: bool
    margin_goal_mm: float
    reasons: list[str] = field(default_factory=list)
    evaluations: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"device_id": self.device_id, "calibration": self.calibration,
                "probes": [p.to_dict() for p in self.probes],
                "goal_met": self.goal_met, "margin_goal_mm": self.margin_goal_mm,
                "reasons": list(self.reasons), "evaluations": self.evaluations,
                "metrics": self.metrics.to_dict()}


def engine_safety(engine: Any) -> Safety:
    """A safety check backed by the planning engine (:class:`PlanningEngine`).

    A path is acceptable unless the engine's verdict for entry → tip is "unsafe".
    """

    def check(entry: NDArray[np.float64], tip: NDArray[np.float64]) -> tuple[bool, str]:
        try:
            m = engine.evaluate(entry, tip, structures="forbidden", check_entry=False)
        except IRPlannerError as exc:  # e.g. the tip would lie in a forbidden structure
            return False, str(exc)
        verdict = getattr(m.verdict, "value", str(m.verdict))
        if verdict == "unsafe":
            return False, "; ".join(m.reasons) or "unsafe path"
        return True, ""

    return check


def _critical(critical: CriticalModel | None) -> CriticalModel:
    return critical if critical is not None else CriticalModel.empty()


def _settings(device: Device, settings: Sequence[str] | None) -> list[DeviceSetting]:
    if device.kind == "biopsy":
        raise InputError(f"device {device.id!r} is a biopsy needle; choose an ablation device")
    if not settings:
        return list(device.settings)
    return [device.setting(s) for s in settings]


@dataclass
class _Scored:
    setting: DeviceSetting
    offset: float
    margin: float
    damage: float
    volume: float
    safe: bool = True
    why_unsafe: str = ""


def _zone_volume(zone: Zone) -> float:
    ells = getattr(zone, "ellipsoids", None)
    if ells:
        return float(sum(e.volume_ml for e in ells))
    return 0.0


def optimize_single(device: Device, entry_lps: ArrayLike, target_lps: ArrayLike,
                    tumour: TumourModel, critical: CriticalModel | None = None, *,
                    settings: Sequence[str] | None = None, calibration: float = 1.0,
                    depth_range_mm: tuple[float, float] = (-20.0, 20.0),
                    margin_goal_mm: float = 5.0, safety: Safety | None = None,
                    trajectory_name: str = "T1",
                    progress: ProgressCallback | None = None) -> OptimizationResult:
    """Best depth and setting for one probe on the path entry → target.

    Parameters
    ----------
    device : Device
        An ablation device of the catalog.
    entry_lps, target_lps : array_like
        The (safe) trajectory, LPS mm.
    tumour : TumourModel
    critical : CriticalModel, optional
        Structures whose volume inside the zone counts as damage (forbidden ones).
    settings : list of str, optional
        Restrict to these settings (default: all of the device's).
    calibration : float
        Zone size factor.
    depth_range_mm : (float, float)
        Tip offsets beyond the target to try (negative = short of it).
    margin_goal_mm : float
        Wanted minimal ablative margin.
    safety : callable, optional
        (entry, tip) → (ok, reason); vetoes tip positions (e.g. :func:`engine_safety`).
    """
    crit = _critical(critical)
    entry = np.asarray(entry_lps, dtype=float).reshape(3)
    target = np.asarray(target_lps, dtype=float).reshape(3)
    lo, hi = float(depth_range_mm[0]), float(depth_range_mm[1])
    if not lo <= hi:
        raise InputError(f"depth range must be (min, max); got {depth_range_mm}")
    sts = _settings(device, settings)
    n_eval = 0
    scored: list[_Scored] = []
    safe_cache: dict[float, tuple[bool, str]] = {}

    def score(st: DeviceSetting, off: float) -> _Scored:
        nonlocal n_eval
        n_eval += 1
        probe = Probe.on_trajectory(device, st, entry, target, depth_offset_mm=off,
                                    calibration=calibration, name=trajectory_name)
        zone = zone_for(probe)
        m, _, _ = margins(zone, tumour)
        dmg = crit.critical_damage_ml(zone)
        key = round(off, 3)
        if safety is not None and key not in safe_cache:
            safe_cache[key] = safety(entry, probe.tip_lps)
        ok, why = safe_cache.get(key, (True, ""))
        return _Scored(st, off, m, dmg, _zone_volume(zone), ok, why)

    for n, st in enumerate(sts):
        report(progress, n / len(sts), f"setting {st.name}")
        coarse = [score(st, float(o)) for o in np.arange(lo, hi + 1e-9, 2.0)]
        ok = [c for c in coarse if c.safe] or coarse
        best = max(ok, key=lambda c: c.margin)
        fine_lo, fine_hi = max(lo, best.offset - 2.0), min(hi, best.offset + 2.0)
        fine = [score(st, float(o)) for o in np.arange(fine_lo, fine_hi + 1e-9, 0.25)]
        scored.extend(coarse + fine)
    report(progress, 1.0, "chosen")
    safe = [c for c in scored if c.safe]
    reasons: list[str] = []
    if not safe:
        reasons.append("every tip position was vetoed by the safety check (" +
                       scored[0].why_unsafe + "); showing the best unsafe one")
        safe = scored
    goal = [c for c in safe if c.margin >= margin_goal_mm]
    if goal:
        pick = min(goal, key=lambda c: (round(c.damage / DAMAGE_RESOLUTION_ML), c.volume,
                                          -c.margin))
        alternatives = sorted({c.setting.name for c in goal})
        reasons.append(f"{pick.setting.name} ({pick.setting.label()}) at tip offset "
                       f"{pick.offset:+.2f} mm reaches a {pick.margin:.1f} mm minimal margin "
                       f"(goal {margin_goal_mm:g} mm)")
        if len(alternatives) > 1:
            reasons.append("settings reaching the goal: " + ", ".join(alternatives) +
                           "; chosen for the least critical-structure damage "
                           f"({pick.damage:.2f} ml), then the smallest zone "
                           f"({pick.volume:.1f} ml)")
        else:
            reasons.append(f"critical structures inside the zone: {pick.damage:.2f} ml")
    else:
        pick = max(safe, key=lambda c: (round(c.margin, 2), -c.damage))
        reasons.append(f"no setting and depth reaches a {margin_goal_mm:g} mm margin; best "
                       f"achievable is {pick.margin:.1f} mm with {pick.setting.name} at tip "
                       f"offset {pick.offset:+.2f} mm")
        reasons.append("consider several probes (optimize_multi) or a larger setting")
    probe = Probe.on_trajectory(device, pick.setting, entry, target, depth_offset_mm=pick.offset,
                                calibration=calibration, name=trajectory_name)
    zone = zone_for(probe)
    metrics = evaluate(zone, tumour, critical)
    placement = ProbePlacement(trajectory_name, tuple(entry.tolist()),  # type: ignore[arg-type]
                               tuple(target.tolist()), pick.setting.name, pick.offset,
                               tuple(float(v) for v in probe.tip_lps))  # type: ignore[arg-type]
    if calibration != 1.0:
        reasons.append(f"zone sizes scaled by calibration factor {calibration:g}")
    return OptimizationResult(device.id, calibration, [placement], metrics,
                              bool(goal) and metrics.min_margin_mm >= margin_goal_mm - 1e-6,
                              margin_goal_mm, reasons, n_eval)


def _placement(device: Device, st: DeviceSetting, cand: Candidate, off: float,
               calibration: float) -> tuple[ProbePlacement, Probe]:
    probe = Probe.on_trajectory(device, st, cand.entry_lps, cand.target_lps,
                                depth_offset_mm=off, calibration=calibration, name=cand.name)
    return (ProbePlacement(cand.name, tuple(cand.entry_lps), tuple(cand.target_lps), st.name,
                           off, tuple(float(v) for v in probe.tip_lps)),  # type: ignore[arg-type]
            probe)


def optimize_multi(device: Device, candidates: Sequence[Candidate | tuple[ArrayLike, ArrayLike]],
                   tumour: TumourModel, critical: CriticalModel | None = None, *,
                   setting: str | None = None, calibration: float = 1.0,
                   max_probes: int = 4, depth_range_mm: tuple[float, float] = (-20.0, 20.0),
                   depth_step_mm: float = 2.5, margin_goal_mm: float = 5.0,
                   safety: Safety | None = None, min_tip_spacing_mm: float = 10.0,
                   sample_limit: int = 40_000, seed: int = 0,
                   progress: ProgressCallback | None = None) -> OptimizationResult:
    """Number and placement of probes along candidate trajectories covering tumour + margin.

    Parameters
    ----------
    device : Device
    candidates : sequence of Candidate or (entry, target)
        Safe paths to place probes on (a path may carry several probes at different depths).
    tumour, critical : see :func:`optimize_single`
    setting : str, optional
        Setting used for every probe (default: the device's largest zone).
    max_probes : int
        Upper limit on the number of probes.
    depth_range_mm, depth_step_mm : tip offsets tried along each path.
    safety : callable, optional
        (entry, tip) → (ok, reason); vetoes probe positions.
    min_tip_spacing_mm : float
        Probes are at least this far apart (tip to tip), also when stacked on one path.
    sample_limit : int
        Tumour samples used to score candidates (the final metrics use all).
    seed : int
        Seed of that subsample.
    """
    if not candidates:
        raise InputError("multi-probe planning needs at least one candidate trajectory")
    if max_probes < 1:
        raise InputError(f"max_probes must be >= 1; got {max_probes}")
    cands = []
    for n, c in enumerate(candidates):
        if isinstance(c, Candidate):
            cands.append(c if c.name else Candidate(c.entry_lps, c.target_lps, f"C{n + 1}"))
        else:
            e, t = c
            cands.append(Candidate(tuple(float(v) for v in np.ravel(e)),  # type: ignore[arg-type]
                                   tuple(float(v) for v in np.ravel(t)), f"C{n + 1}"))
    crit = _critical(critical)
    st = _largest(device) if setting is None else device.setting(setting)
    goal_w = tumour.shell_weight(5.0) if margin_goal_mm <= 5.0 else tumour.shell_weight(10.0)
    rng = np.random.default_rng(seed)
    idx = np.nonzero(goal_w > 0)[0]
    if len(idx) > sample_limit:
        idx = rng.choice(idx, sample_limit, replace=False)
    pts, w = tumour.points_lps[idx], goal_w[idx]
    offsets = np.arange(depth_range_mm[0], depth_range_mm[1] + 1e-9, depth_step_mm)
    options: list[tuple[ProbePlacement, Probe]] = []
    vetoed = 0
    for cand in cands:
        for off in offsets:
            pl, pr = _placement(device, st, cand, float(off), calibration)
            if safety is not None:
                ok, _ = safety(np.asarray(cand.entry_lps), pr.tip_lps)
                if not ok:
                    vetoed += 1
                    continue
            options.append((pl, pr))
    if not options:
        raise InputError("no candidate probe position passed the safety check")
    # each option's own contribution on the samples, computed once
    heat = device.is_heat
    contrib = []
    own_damage = []
    for _pl, pr in options:
        if heat:
            contrib.append(zone_for(pr).signed_distance(pts, exact=False) >= 0)
        else:
            cz = zone_for(pr)
            cool, _ = cz._single(pr, np.linalg.norm(pts - pr.cryo_centre(), axis=1))
            contrib.append(cool ** cz.p)
        own_damage.append(crit.critical_damage_ml(zone_for(pr)))
    n_eval = len(options)
    if heat:
        base: NDArray[Any] = np.zeros(len(pts), dtype=bool)
    else:
        cz0 = zone_for(options[0][1])
        body = float(st.zone["body_temperature_c"])
        need = (body - cz0.isotherm_c) ** cz0.p
        base = np.zeros(len(pts))
    chosen_idx: list[int] = []
    reasons: list[str] = []
    best_margin = -np.inf
    for rnd in range(max_probes):
        report(progress, rnd / max_probes, f"placing probe {rnd + 1}")
        best = None
        for k in range(len(options)):
            tip = options[k][1].tip_lps
            if any(np.linalg.norm(tip - options[i][1].tip_lps) < min_tip_spacing_mm
                   for i in chosen_idx):
                continue
            inside = (base | contrib[k]) if heat else (base + contrib[k]) >= need
            covered = float(w[inside].sum())
            key = (round(covered / w.sum(), 4), -own_damage[k])
            if best is None or key > best[0]:
                best = (key, k)
        if best is None:
            break
        k = best[1]
        chosen_idx.append(k)
        base = (base | contrib[k]) if heat else base + contrib[k]
        zone = zone_for([options[i][1] for i in chosen_idx])
        best_margin, _, _ = margins(zone, tumour, exact=False)
        reasons.append(f"probe {len(chosen_idx)} on {options[k][0].trajectory} at tip offset "
                       f"{options[k][0].depth_offset_mm:+.1f} mm: tumour+{margin_goal_mm:g} mm "
                       f"covered {100 * best[0][0]:.1f} %, minimal margin {best_margin:.1f} mm")
        if best_margin >= margin_goal_mm:
            break
    chosen = [options[i] for i in chosen_idx]
    # refine depths one probe at a time (maximise the minimal margin)
    step = 0.5
    for _ in range(2):
        for i in range(len(chosen)):
            pl, _pr = chosen[i]
            cand = next(c for c in cands if c.name == pl.trajectory)
            trial_best = (best_margin, chosen[i])
            for d in np.arange(-depth_step_mm, depth_step_mm + 1e-9, step):
                off = float(np.clip(pl.depth_offset_mm + d, *depth_range_mm))
                npl, npr = _placement(device, st, cand, off, calibration)
                if any(np.linalg.norm(npr.tip_lps - c[1].tip_lps) < min_tip_spacing_mm
                       for j, c in enumerate(chosen) if j != i):
                    continue
                if safety is not None and not safety(np.asarray(cand.entry_lps), npr.tip_lps)[0]:
                    continue
                trial = chosen[:i] + [(npl, npr)] + chosen[i + 1:]
                n_eval += 1
                m, _, _ = margins(zone_for([c[1] for c in trial]), tumour, exact=False)
                if m > trial_best[0] + 1e-6:
                    trial_best = (m, (npl, npr))
            best_margin, chosen[i] = trial_best
    report(progress, 1.0, "placed")
    zone = zone_for([c[1] for c in chosen])
    metrics = evaluate(zone, tumour, critical)
    goal_met = metrics.min_margin_mm >= margin_goal_mm - 1e-6
    head = (f"{len(chosen)} probe(s) of {device.id} at {st.name} ({st.label()})")
    if goal_met:
        head += f" reach a {metrics.min_margin_mm:.1f} mm minimal margin"
    else:
        head += (f" reach at best {metrics.min_margin_mm:.1f} mm (goal {margin_goal_mm:g} mm) "
                 f"with up to {max_probes} probes on {len(cands)} candidate path(s); add paths "
                 "or allow more probes")
    reasons.insert(0, head)
    if vetoed:
        reasons.append(f"{vetoed} probe positions were vetoed by the safety check")
    reasons.append(f"critical structures inside the zone: {metrics.critical_damage_ml:.2f} ml")
    return OptimizationResult(device.id, calibration, [c[0] for c in chosen], metrics, goal_met,
                              margin_goal_mm, reasons, n_eval)


def _largest(device: Device) -> DeviceSetting:
    def size(s: DeviceSetting) -> float:
        z = s.zone
        if "length_mm" in z:
            return float(z["length_mm"]) * float(z["diameter_mm"]) ** 2
        radii = z["isotherm_radii_mm"]
        return float(max(radii.values()))

    return max(device.settings, key=size)
