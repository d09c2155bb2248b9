"""Choosing depth, setting and the number of probes.

Single probe (:func:`optimize_single`): for one trajectory, every setting of the device
and tip depths along the path (coarse 2 mm sweep, then 0.25 mm refinement around the
best) are scored by the minimal ablative margin (exact, on the tumour surface) and the
volume of critical (forbidden) structures inside the zone. Choice, in order:

1. if some candidates reach the margin goal (default 5 mm): the one with the least
   critical damage (0.05 ml resolution), then the smallest zone (least normal tissue),
   then the largest margin;
2. otherwise the largest margin (the best achievable), then the least damage.

Several probes (:func:`optimize_multi`): probes are placed on candidate trajectories
(entry/target pairs, e.g. the planning engine's safe paths or the plan's trajectories) at
tip depths along each path; unsafe positions (an optional ``safety`` callable (entry, tip)
→ (ok, reason), e.g. :func:`engine_safety`) are dropped and tips stay
``min_tip_spacing_mm`` (10 mm) apart. The default ``method="search"``: for each probe
count n = 1 … ``max_probes``, two starts (the best (n−1)-probe set plus the best added
position, and the greedy coverage set of n probes) are improved by best-improvement swap
local search (any probe moved to any other safe path/depth) on the score: minimal margin
up to the goal, then the least critical damage, then the mean goal-capped margin (a
smooth tie-breaker), then the margin; each probe's depth is then refined in 0.5 mm steps.
The fewest probes reaching the goal are chosen; otherwise the largest margin over all n
(so allowing more probes never gives a worse margin). Heat zones combine as a union, so
each position's signed distances on the tumour-surface samples are computed once and a
set costs one max/min. ``method="greedy"`` keeps the earlier method (each round the
position covering most of the uncovered tumour + goal shell) as a baseline.

Every result carries human-readable ``reasons``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ir_planner.core.errors import InputError, IRPlannerError
from ir_planner.core.plan import AblationRecord
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

    @property
    def group(self) -> str:
        """Identifier shared by the records of one placement: ``device@traj1+traj2``."""
        return f"{self.device_id}@{'+'.join(p.trajectory for p in self.probes)}"

    def to_records(self, device: Device) -> list[AblationRecord]:
        """One plan :class:`~ir_planner.core.plan.AblationRecord` per probe.

        Each record carries the shared metrics of the combined zone plus its own tip
        (LPS mm), setting, zone specification, sources, assumptions, the margin goal
        and the reasons for the choice.
        """
        shared = self.metrics.to_dict()
        records = []
        for n, pl in enumerate(self.probes):
            setting = device.setting(pl.setting)
            records.append(AblationRecord(
                trajectory=pl.trajectory, device_id=device.id, setting=pl.setting,
                tip_depth_offset_mm=round(pl.depth_offset_mm, 3), calibration=self.calibration,
                metrics={
                    **shared,
                    "group": self.group, "probe_index": n, "probes_in_group": len(self.probes),
                    "tip_lps": [round(v, 3) for v in pl.tip_lps],
                    "setting_label": setting.label(), "basis": setting.basis,
                    "zone_spec": dict(setting.zone),
                    "sources": device.sources_for(setting),
                    "assumed": dict(setting.assumed),
                    "margin_goal_mm": self.margin_goal_mm, "goal_met": self.goal_met,
                    "reasons": list(self.reasons),
                }))
        return records


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
                   progress: ProgressCallback | None = None, method: str = "search",
                   search_points: int = 40_000, max_passes: int = 12) -> OptimizationResult:
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
        Tumour volume samples used by the greedy method's coverage score.
    seed : int
        Seed of the subsamples.
    method : {"search", "greedy"}
        ``"search"`` (default): for each probe count 1…``max_probes``, the best set of the
        previous count plus the best added probe, and the greedy coverage start, are
        improved by swap local search (each probe replaced by every other safe
        (path, depth) position while the minimal margin improves, then the least critical
        damage), then every probe's depth is refined in 0.5 mm steps; the fewest probes
        reaching the goal are chosen, otherwise the largest margin (never worse with a
        larger ``max_probes``). ``"greedy"``: the earlier method (each round the position
        covering most of the uncovered tumour + goal shell, then depth refinement).
    search_points : int
        Tumour-surface samples used to score sets during the search (the refinement and the
        final metrics use all surface samples, exact distances).
    max_passes : int
        Limit on swap local-search passes per start.
    """
    if not candidates:
        raise InputError("multi-probe planning needs at least one candidate trajectory")
    if max_probes < 1:
        raise InputError(f"max_probes must be >= 1; got {max_probes}")
    if method not in ("search", "greedy"):
        raise InputError(f"method must be 'search' or 'greedy'; got {method!r}")
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
    offsets = np.arange(depth_range_mm[0], depth_range_mm[1] + 1e-9, depth_step_mm)
    options: list[tuple[ProbePlacement, Probe]] = []
    vetoed = 0
    veto_reasons: dict[str, int] = {}
    for cand in cands:
        for off in offsets:
            pl, pr = _placement(device, st, cand, float(off), calibration)
            if safety is not None:
                ok, why = safety(np.asarray(cand.entry_lps), pr.tip_lps)
                if not ok:
                    vetoed += 1
                    key = f"{cand.name}: {(why or 'unsafe').split(';')[0].strip()}"
                    veto_reasons[key] = veto_reasons.get(key, 0) + 1
                    continue
            options.append((pl, pr))
    if not options:
        raise InputError("no candidate probe position passed the safety check")
    own_damage = np.array([crit.critical_damage_ml(zone_for(pr)) for _pl, pr in options])
    ctx = _Ctx(device, st, cands, options, own_damage, tumour, crit, calibration,
               depth_range_mm, depth_step_mm, margin_goal_mm, safety, min_tip_spacing_mm)
    if method == "greedy":
        chosen, reasons, n_eval = _greedy(ctx, max_probes, sample_limit, seed, progress)
    else:
        chosen, reasons, n_eval = _search(ctx, max_probes, search_points, seed, max_passes,
                                          progress)
    report(progress, 1.0, "placed")
    zone = zone_for([c[1] for c in chosen])
    metrics = evaluate(zone, tumour, critical)
    goal_met = metrics.min_margin_mm >= margin_goal_mm - 1e-6
    head = (f"{len(chosen)} probe(s) of {device.id} at {st.name} ({st.label()})")
    if goal_met:
        head += f" reach a {metrics.min_margin_mm:.1f} mm minimal margin"
    else:
        pt = " ".join(f"{v:.1f}" for v in metrics.min_margin_point_lps)
        head += (f" reach at best {metrics.min_margin_mm:.1f} mm (goal {margin_goal_mm:g} mm) "
                 f"with up to {max_probes} probes on {len(cands)} candidate path(s); the "
                 f"limiting part of the tumour surface is at LPS {pt} mm; add paths "
                 "reaching that side or allow more probes")
    reasons.insert(0, head)
    if vetoed:
        reasons.append(f"{vetoed} probe positions were vetoed by the safety check (" +
                       "; ".join(f"{k} ×{v}" for k, v in list(veto_reasons.items())[:4]) + ")")
    reasons.append(f"critical structures inside the zone: {metrics.critical_damage_ml:.2f} ml")
    return OptimizationResult(device.id, calibration, [c[0] for c in chosen], metrics, goal_met,
                              margin_goal_mm, reasons, n_eval)


@dataclass
class _Ctx:
    device: Device
    setting: DeviceSetting
    cands: list[Candidate]
    options: list[tuple[ProbePlacement, Probe]]
    own_damage: NDArray[np.float64]
    tumour: TumourModel
    crit: CriticalModel
    calibration: float
    depth_range_mm: tuple[float, float]
    depth_step_mm: float
    goal: float
    safety: Safety | None
    spacing: float

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.cands if c.name == name)

    def spaced(self, tip: NDArray[np.float64], others: Sequence[tuple[ProbePlacement, Probe]]
               ) -> bool:
        return all(np.linalg.norm(tip - o[1].tip_lps) >= self.spacing for o in others)


def _refine_depths(ctx: _Ctx, chosen: list[tuple[ProbePlacement, Probe]], best_margin: float,
                   passes: int = 2) -> tuple[list[tuple[ProbePlacement, Probe]], float, int]:
    """Greedy baseline: move each probe's tip in 0.5 mm steps while the margin improves."""
    n_eval = 0
    chosen = list(chosen)
    for _ in range(passes):
        for i in range(len(chosen)):
            pl, _pr = chosen[i]
            cand = ctx.candidate(pl.trajectory)
            trial_best = (best_margin, chosen[i])
            for d in np.arange(-ctx.depth_step_mm, ctx.depth_step_mm + 1e-9, 0.5):
                off = float(np.clip(pl.depth_offset_mm + d, *ctx.depth_range_mm))
                npl, npr = _placement(ctx.device, ctx.setting, cand, off, ctx.calibration)
                if not ctx.spaced(npr.tip_lps, chosen[:i] + chosen[i + 1:]):
                    continue
                if ctx.safety is not None and not ctx.safety(np.asarray(cand.entry_lps),
                                                             npr.tip_lps)[0]:
                    continue
                trial = chosen[:i] + [(npl, npr)] + chosen[i + 1:]
                n_eval += 1
                m, _, _ = margins(zone_for([c[1] for c in trial]), ctx.tumour, exact=False)
                if m > trial_best[0] + 1e-6:
                    trial_best = (m, (npl, npr))
            best_margin, chosen[i] = trial_best
    return chosen, best_margin, n_eval


def _refine_search(sc: "_SetScorer", chosen: list[tuple[ProbePlacement, Probe]],
                   passes: int = 2) -> tuple[list[tuple[ProbePlacement, Probe]], int]:
    """Move each probe's tip in 0.5 mm steps while the set's score (:func:`_set_key`) improves.

    Tip positions between the search grid's depths are checked for spacing and safety.
    """
    ctx = sc.ctx
    n_eval = 0
    chosen = list(chosen)

    def key_of(ch: list[tuple[ProbePlacement, Probe]]) -> tuple[float, int, float]:
        return _set_key(ctx.goal, sc.margin_probes(ch), sum(sc.damage_of(c) for c in ch))

    cur = key_of(chosen)
    for _ in range(passes):
        improved = False
        for i in range(len(chosen)):
            pl = chosen[i][0]
            cand = ctx.candidate(pl.trajectory)
            for d in np.arange(-ctx.depth_step_mm, ctx.depth_step_mm + 1e-9, 0.5):
                off = float(np.clip(pl.depth_offset_mm + d, *ctx.depth_range_mm))
                if abs(off - chosen[i][0].depth_offset_mm) < 1e-9:
                    continue
                npl, npr = _placement(ctx.device, ctx.setting, cand, off, ctx.calibration)
                if not ctx.spaced(npr.tip_lps, chosen[:i] + chosen[i + 1:]):
                    continue
                if not sc.safe(cand, off, npr):
                    continue
                trial = chosen[:i] + [(npl, npr)] + chosen[i + 1:]
                n_eval += 1
                k = key_of(trial)
                if k > cur:
                    cur, chosen, improved = k, trial, True
        if not improved:
            break
    return chosen, n_eval


def _greedy(ctx: _Ctx, max_probes: int, sample_limit: int, seed: int,
            progress: ProgressCallback | None
            ) -> tuple[list[tuple[ProbePlacement, Probe]], list[str], int]:
    """The earlier greedy coverage method (kept as a baseline and as a search start)."""
    idx_sets, reasons, n_eval = _greedy_sets(ctx, max_probes, sample_limit, seed, progress)
    chosen = [ctx.options[i] for i in idx_sets[-1]]
    m, _, _ = margins(zone_for([c[1] for c in chosen]), ctx.tumour, exact=False)
    chosen, _m, k = _refine_depths(ctx, chosen, m)
    return chosen, reasons, n_eval + k


def _greedy_sets(ctx: _Ctx, max_probes: int, sample_limit: int, seed: int,
                 progress: ProgressCallback | None, stop_at_goal: bool = True
                 ) -> tuple[list[list[int]], list[str], int]:
    """Greedy coverage rounds; returns the chosen option indices after each round."""
    tumour, options, heat = ctx.tumour, ctx.options, ctx.device.is_heat
    goal_w = tumour.shell_weight(5.0) if ctx.goal <= 5.0 else tumour.shell_weight(10.0)
    rng = np.random.default_rng(seed)
    idx = np.nonzero(goal_w > 0)[0]
    if len(idx) > sample_limit:
        idx = rng.choice(idx, sample_limit, replace=False)
    pts, w = tumour.points_lps[idx], goal_w[idx]
    contrib = []
    for _pl, pr in options:
        if heat:
            contrib.append(zone_for(pr).signed_distance(pts, exact=False) >= 0)
        else:
            cz = zone_for(pr)
            cool, _ = cz._single(pr, np.linalg.norm(pts - pr.cryo_centre(), axis=1))
            contrib.append(cool ** cz.p)
    n_eval = len(options)
    if heat:
        base: NDArray[Any] = np.zeros(len(pts), dtype=bool)
        need = 0.0
    else:
        cz0 = zone_for(options[0][1])
        body = float(ctx.setting.zone["body_temperature_c"])
        need = (body - cz0.isotherm_c) ** cz0.p
        base = np.zeros(len(pts))
    chosen_idx: list[int] = []
    sets: list[list[int]] = []
    reasons: list[str] = []
    for rnd in range(max_probes):
        report(progress, rnd / max_probes, f"placing probe {rnd + 1}")
        best = None
        for k in range(len(options)):
            if not ctx.spaced(options[k][1].tip_lps, [options[i] for i in chosen_idx]):
                continue
            inside = (base | contrib[k]) if heat else (base + contrib[k]) >= need
            covered = float(w[inside].sum())
            key = (round(covered / w.sum(), 4), -ctx.own_damage[k])
            if best is None or key > best[0]:
                best = (key, k)
        if best is None:
            break
        k = best[1]
        chosen_idx.append(k)
        sets.append(list(chosen_idx))
        base = (base | contrib[k]) if heat else base + contrib[k]
        zone = zone_for([options[i][1] for i in chosen_idx])
        best_margin, _, _ = margins(zone, tumour, exact=False)
        reasons.append(f"probe {len(chosen_idx)} on {options[k][0].trajectory} at tip offset "
                       f"{options[k][0].depth_offset_mm:+.1f} mm: tumour+{ctx.goal:g} mm "
                       f"covered {100 * best[0][0]:.1f} %, minimal margin {best_margin:.1f} mm")
        if stop_at_goal and best_margin >= ctx.goal:
            break
    return sets, reasons, n_eval


class _SetScorer:
    """Minimal margin of probe sets on a subsample of the tumour surface.

    Heat zones (union): the set's signed distance is the maximum of its probes', so each
    option's distances are computed once (exact) and a set costs one max/min per probe.
    Cryo zones combine non-linearly: each set is evaluated with the combined field.
    """

    def __init__(self, ctx: _Ctx, search_points: int, seed: int) -> None:
        surf = ctx.tumour.surface_lps
        if 0 < search_points < len(surf):
            rng = np.random.default_rng(seed)
            surf = surf[np.sort(rng.choice(len(surf), search_points, replace=False))]
        self.surf = surf
        self.ctx = ctx
        self.heat = ctx.device.is_heat
        self.n_eval = 0
        self._rows: dict[tuple[str, float], NDArray[np.float64]] = {}
        self._dmg: dict[tuple[str, float], float] = {}
        self._safe: dict[tuple[str, float], bool] = {}
        for (pl, _pr), d in zip(ctx.options, ctx.own_damage):
            self._dmg[(pl.trajectory, round(pl.depth_offset_mm, 3))] = float(d)
            self._safe[(pl.trajectory, round(pl.depth_offset_mm, 3))] = True
        if self.heat:
            self.sd = np.stack([self.row(c) for c in ctx.options])
        tips = np.array([pr.tip_lps for _pl, pr in ctx.options])
        self.ok_pair = np.linalg.norm(tips[:, None] - tips[None], axis=2) >= ctx.spacing
        np.fill_diagonal(self.ok_pair, False)

    def _key(self, c: tuple[ProbePlacement, Probe]) -> tuple[str, float]:
        return c[0].trajectory, round(c[0].depth_offset_mm, 3)

    def row(self, c: tuple[ProbePlacement, Probe]) -> NDArray[np.float64]:
        """Signed distances (mm) of one probe's zone at the search samples (cached)."""
        k = self._key(c)
        if k not in self._rows:
            self.n_eval += 1
            self._rows[k] = zone_for(c[1]).signed_distance(self.surf, exact=True)
        return self._rows[k]

    def damage_of(self, c: tuple[ProbePlacement, Probe]) -> float:
        """Critical damage (ml) of one probe's zone (cached)."""
        k = self._key(c)
        if k not in self._dmg:
            self._dmg[k] = self.ctx.crit.critical_damage_ml(zone_for(c[1]))
        return self._dmg[k]

    def safe(self, cand: Candidate, off: float, probe: Probe) -> bool:
        """Safety verdict for a tip position (cached)."""
        if self.ctx.safety is None:
            return True
        k = (cand.name, round(off, 3))
        if k not in self._safe:
            self._safe[k] = bool(self.ctx.safety(np.asarray(cand.entry_lps), probe.tip_lps)[0])
        return self._safe[k]

    def _stats(self, sd: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Minimal margin and mean goal-capped margin (a smooth tie-breaker) per row."""
        sd = np.atleast_2d(sd)
        return np.min(sd, axis=1), np.mean(np.minimum(sd, self.ctx.goal), axis=1)

    def margin_probes(self, chosen: Sequence[tuple[ProbePlacement, Probe]]
                      ) -> tuple[float, float]:
        """(minimal margin, mean capped margin) in mm of a set of probes at the samples."""
        if self.heat:
            sd = np.max([self.row(c) for c in chosen], axis=0)
        else:
            self.n_eval += 1
            sd = zone_for([c[1] for c in chosen]).signed_distance(self.surf, exact=False)
        m, s = self._stats(sd)
        return float(m[0]), float(s[0])

    def margin(self, idx: Sequence[int]) -> tuple[float, float]:
        """(minimal margin, mean capped margin) of a set of option indices."""
        self.n_eval += 1
        if self.heat:
            sd = np.max(self.sd[list(idx)], axis=0)
        else:
            zone = zone_for([self.ctx.options[i][1] for i in idx])
            sd = zone.signed_distance(self.surf, exact=False)
        m, s = self._stats(sd)
        return float(m[0]), float(s[0])

    def with_each(self, rest: Sequence[int], ks: NDArray[np.int_]
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(minimal margins, mean capped margins) of rest + [k] for every k in ks."""
        if self.heat:
            self.n_eval += len(ks)
            ms, ss = [], []
            for chunk in np.array_split(ks, max(1, len(ks) // 32)):
                vals = self.sd[chunk]
                if rest:
                    vals = np.maximum(vals, np.max(self.sd[list(rest)], axis=0)[None])
                m, s = self._stats(vals)
                ms.append(m)
                ss.append(s)
            return np.concatenate(ms), np.concatenate(ss)
        res = [self.margin(list(rest) + [int(k)]) for k in ks]
        return np.array([r[0] for r in res]), np.array([r[1] for r in res])

    def feasible(self, rest: Sequence[int]) -> NDArray[np.int_]:
        ok = np.ones(len(self.ctx.options), dtype=bool)
        for j in rest:
            ok &= self.ok_pair[j]
        return np.nonzero(ok)[0]

    def damage(self, idx: Sequence[int]) -> float:
        return float(self.ctx.own_damage[list(idx)].sum())


def _set_key(goal: float, margin: tuple[float, float], damage: float
             ) -> tuple[float, int, float, float]:
    """Lexicographic score of a probe set.

    The minimal margin up to the goal, then the least critical damage (0.05 ml steps), then
    the mean goal-capped margin over the surface (rewards moves that bring more of the
    surface to the goal while the minimum is stuck), then the minimal margin.
    """
    m, soft = margin
    return (round(min(m, goal), 2), -int(round(damage / DAMAGE_RESOLUTION_ML)),
            round(soft, 3), round(m, 3))


def _local_search(sc: _SetScorer, start: list[int], max_passes: int
                  ) -> tuple[list[int], tuple[float, int, float], list[str]]:
    """Best-improvement swap search: replace one probe by any other feasible position."""
    goal = sc.ctx.goal
    cur = list(start)
    cur_key = _set_key(goal, sc.margin(cur), sc.damage(cur))
    moves: list[str] = []
    for _ in range(max_passes):
        best: tuple[tuple[float, int, float], int, int] | None = None
        for i in range(len(cur)):
            rest = cur[:i] + cur[i + 1:]
            ks = sc.feasible(rest)
            if len(ks) == 0:
                continue
            ms, ss = sc.with_each(rest, ks)
            dmg = sc.damage(rest) + sc.ctx.own_damage[ks]
            for k, m, s, d in zip(ks, ms, ss, dmg):
                key = _set_key(goal, (float(m), float(s)), float(d))
                if key > cur_key and (best is None or key > best[0]):
                    best = (key, i, int(k))
        if best is None:
            break
        key, i, k = best
        old, new = sc.ctx.options[cur[i]][0], sc.ctx.options[k][0]
        moves.append(f"{old.trajectory} {old.depth_offset_mm:+.1f} mm → {new.trajectory} "
                     f"{new.depth_offset_mm:+.1f} mm (margin {key[3]:.1f} mm)")
        cur[i] = k
        cur_key = key
    return cur, cur_key, moves


def _search(ctx: _Ctx, max_probes: int, search_points: int, seed: int, max_passes: int,
            progress: ProgressCallback | None
            ) -> tuple[list[tuple[ProbePlacement, Probe]], list[str], int]:
    """Per probe count: greedy + swap local search + depth refinement; fewest reaching goal."""
    sc = _SetScorer(ctx, search_points, seed)
    greedy_sets, _g_reasons, n_eval = _greedy_sets(ctx, max_probes, 15_000, seed, None,
                                                   stop_at_goal=False)
    goal = ctx.goal

    prev: list[int] = []
    best_overall: tuple[Any, list[tuple[ProbePlacement, Probe]], float, int] | None = None
    reasons: list[str] = []
    prev_margin: float | None = None
    prev_point: NDArray[np.float64] | None = None
    for n in range(1, max_probes + 1):
        report(progress, (n - 1) / max_probes, f"searching {n} probe(s)")
        starts: list[list[int]] = []
        ks = sc.feasible(prev)
        if len(ks):
            ms, ss = sc.with_each(prev, ks)
            dmg = sc.damage(prev) + ctx.own_damage[ks]
            keys = [_set_key(goal, (float(m), float(s)), float(d))
                    for m, s, d in zip(ms, ss, dmg)]
            j = max(range(len(ks)), key=lambda q: keys[q])
            starts.append(prev + [int(ks[j])])
        if n <= len(greedy_sets) and len(greedy_sets[n - 1]) == n:
            starts.append(list(greedy_sets[n - 1]))
        if not starts:
            reasons.append(f"no room for probe {n}: every position is within "
                           f"{ctx.spacing:g} mm of a placed tip or vetoed")
            break
        results = [_local_search(sc, s, max_passes) for s in starts]
        idx, _key, moves = max(results, key=lambda r: r[1])
        prev = idx
        chosen = [ctx.options[i] for i in idx]
        chosen, k = _refine_search(sc, chosen)
        n_eval += k
        m, point, _sd = margins(zone_for([c[1] for c in chosen]), ctx.tumour, exact=True)
        key = _set_key(goal, (m, 0.0), sum(sc.damage_of(c) for c in chosen))
        where = " ".join(f"{v:.1f}" for v in point)
        placed = ", ".join(f"{c[0].trajectory} {c[0].depth_offset_mm:+.1f} mm" for c in chosen)
        if n == 1:
            why = ("first probe: the position with the best score (margin up to the goal, "
                   "then the least critical damage)")
        else:
            pw = " ".join(f"{v:.1f}" for v in prev_point) if prev_point is not None else "?"
            why = (f"probe {n} added because {n - 1} probe(s) reached only "
                   f"{prev_margin:.1f} mm (limited at LPS {pw} mm)")
        line = f"{why}; {n} probe(s) [{placed}]: minimal margin {m:.1f} mm at LPS {where} mm"
        if moves:
            line += f"; local search swapped {len(moves)}×: " + "; ".join(moves[:3])
        reasons.append(line)
        prev_margin, prev_point = m, point
        if m >= goal - 1e-6:
            best_overall = (key, chosen, m, n)
            break
        if best_overall is None or m > best_overall[2] + 1e-3:
            best_overall = (key, chosen, m, n)
    assert best_overall is not None
    _key, chosen, m, n = best_overall
    if n < len(reasons):
        reasons.append(f"chose {n} probe(s): more probes did not raise the minimal margin "
                       f"above {m:.1f} mm (fewer probes preferred on ties)")
    return chosen, reasons, n_eval + sc.n_eval


def _largest(device: Device) -> DeviceSetting:
    def size(s: DeviceSetting) -> float:
        z = s.zone
        if "length_mm" in z:
            return float(z["length_mm"]) * float(z["diameter_mm"]) ** 2
        radii = z["isotherm_radii_mm"]
        return float(max(radii.values()))

    return max(device.settings, key=size)
