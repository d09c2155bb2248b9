"""Automatic entry-point search for one target.

Every skin point within reach is a candidate entry. By default (``all_clearances``)
the search computes the clearance of every candidate to every structure with the
compiled branch and bound of :mod:`ir_planner.planning.clearance_table` (exact
segment-to-cell-box distances over each structure's surface cells, candidates in
spatial order so each warm-starts from its neighbour), stopping at the accuracy
contract's window; every (candidate, forbidden structure) pair within that window of
the structure's margin is then recomputed exactly. Feasibility (clearance ≥ margin for
every forbidden structure) is therefore exact: a path reported feasible never crosses
(or comes within the margin of) a forbidden structure, and the table agrees with it.

With ``all_clearances=False`` the older minimum-clearance-only search runs: a
*guaranteed* interval for the axis distance from distance maps decides feasibility
where it can, and the exact tube kernel (:mod:`ir_planner.planning.tube`) decides the
rest; the minimum clearance is within the contract up to the score's clearance
saturation and a guaranteed lower bound beyond it (exactly with ``exact_clearance``).
Its distance maps (built once per structure, lazily, cached in the engine): exact
Euclidean distance transforms on the *corner lattice* of the grid (or of blocks
of f×f×f voxels on fine grids), over the structure's bounding box padded by the
range the search cares about. At a lattice corner this is the exact distance to
the union of (block) cells, because the closest point of an axis-aligned box to a
lattice point is itself a lattice point. For a sample point s with nearest
corner v, ``D(v) − |s−v| ≤ dist(s) ≤ D(v) + |s−v| (+ block diagonal when f > 1)``;
sampling the segment at step h subtracts h/2 (the distance is 1-Lipschitz).
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

from ir_planner.core.errors import InputError, PlanError
from ir_planner.core.fileio import atomic_output
from ir_planner.core.progress import ProgressCallback, report, subrange
from ir_planner.planning.clearance_table import structure_distances
from ir_planner.planning.metrics import TrajectoryMetrics, Verdict
from ir_planner.planning.tube import forbidden_maps, low_t_range, tube_distances

if TYPE_CHECKING:
    from ir_planner.planning.engine import PlanningEngine, _StructureData

__all__ = ["SearchConstraints", "SearchWeights", "SearchResult", "search", "REGIONS"]

#: Sample step (mm) of the first, coarse pass over every candidate path.
COARSE_STEP_MM = 3.0
#: Skin regions by outward-normal direction (LPS): excluded when normal·dir > cos 45°.
#: "table" is the side the patient lies on, from the DICOM PatientPosition (see
#: :func:`table_side`).
REGIONS: dict[str, tuple[float, float, float]] = {
    "anterior": (0.0, -1.0, 0.0), "posterior": (0.0, 1.0, 0.0),
    "left": (1.0, 0.0, 0.0), "right": (-1.0, 0.0, 0.0),
    "superior": (0.0, 0.0, 1.0), "inferior": (0.0, 0.0, -1.0),
    "table": (0.0, 0.0, 0.0),
}

#: PatientPosition → the skin side lying on the table.
_TABLE_SIDE = {"HFS": "posterior", "FFS": "posterior", "HFP": "anterior", "FFP": "anterior",
               "HFDL": "left", "FFDL": "left", "HFDR": "right", "FFDR": "right"}


def table_side(patient_position: str | None) -> tuple[str, str]:
    """The skin region lying on the table for a DICOM PatientPosition, and a note.

    Supine (HFS/FFS) → posterior, prone (HFP/FFP) → anterior, decubitus left
    (HFDL/FFDL: left side down) → left, decubitus right → right. Unknown or missing
    (e.g. a NIfTI image) → posterior (supine, the usual position for percutaneous
    procedures), said in the note.
    """
    pos = (patient_position or "").strip().upper()
    if pos in _TABLE_SIDE:
        return _TABLE_SIDE[pos], f"table side {_TABLE_SIDE[pos]} (PatientPosition {pos})"
    what = f"PatientPosition {pos!r} not recognised" if pos else "no PatientPosition"
    return "posterior", f"table side taken as posterior (supine): {what}"


@dataclass
class SearchConstraints:
    """Hard constraints of the search.

    Attributes
    ----------
    max_length_mm : float, optional
        Longest entry→target path; default the needle's usable length.
    max_cc_angle_deg : float, optional
        Largest craniocaudal (out-of-axial-plane) angle; 0 = in-plane only. A
        tolerance of half a slice over the path length is always allowed.
    excluded_regions : tuple of str
        Skin regions not to enter through ("posterior" for a supine patient, ...),
        see :data:`REGIONS`; a skin point belongs to a region when its outward
        normal is within 45° of that direction. "table" is the side the patient
        lies on, from the image's DICOM PatientPosition (:func:`table_side`).
    excluded_spheres : tuple of (x, y, z, radius)
        Skin points within ``radius`` mm of an LPS point (mm) are excluded (a wound,
        stoma, drain, dressing, ...).
    min_organ_length_mm : dict
        Organ name → minimum length (mm) the needle must travel through it (e.g.
        ``{"liver": 10}`` for normal parenchyma before a liver lesion). Measured on
        the samples (±1 sample step) during the search; suggestions are re-checked
        exactly.
    min_separation_deg : float
        Minimum angle between the directions of two suggestions (diversity).
    allow_reentry : bool
        Allow paths that leave and re-enter the target's organ (two capsule punctures,
        or a cavity inside it such as a vertebra's spinal canal). Off by default:
        such candidates are rejected ("re-enters NAME", found on the 3 mm samples and
        re-checked exactly for the suggestions).
    exact_clearance : bool
        Only without ``all_clearances``: compute every candidate's minimum clearance
        within the accuracy contract even beyond the score's clearance saturation +
        needle radius (≈ 10.6 mm), where it is otherwise only a guaranteed lower bound
        (``min_clearance_exact`` False).
    all_clearances : bool
        Compute the per-candidate × per-structure clearance table
        (:attr:`SearchResult.clearance_mm`: every structure of the label map, each value
        within the accuracy contract; pairs of a forbidden structure near its margin
        exact) and take every candidate's minimum clearance from it. Default on;
        False = minimum clearance only, from distance-map bounds refined near the
        needle (faster; see docs/planning.md).
    """

    max_length_mm: float | None = None
    max_cc_angle_deg: float | None = None
    excluded_regions: tuple[str, ...] = ()
    excluded_spheres: tuple[tuple[float, float, float, float], ...] = ()
    min_organ_length_mm: dict[str, float] = field(default_factory=dict)
    min_separation_deg: float = 15.0
    allow_reentry: bool = False
    exact_clearance: bool = False
    all_clearances: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored in the plan's settings)."""
        return {"max_length_mm": self.max_length_mm, "max_cc_angle_deg": self.max_cc_angle_deg,
                "excluded_regions": list(self.excluded_regions),
                "excluded_spheres": [list(x) for x in self.excluded_spheres],
                "min_organ_length_mm": dict(self.min_organ_length_mm),
                "min_separation_deg": self.min_separation_deg,
                "allow_reentry": self.allow_reentry,
                "exact_clearance": self.exact_clearance,
                "all_clearances": self.all_clearances}


@dataclass
class SearchWeights:
    """Weights of the soft objectives in the score (higher score = better, 0–1).

    ``score = 1 − (w_len·L/L_max + w_clear·(1 − min(c, C)/C) + w_angle·θ/90°) / Σw``
    with L the length, c the smallest clearance to a forbidden structure, C =
    ``clearance_saturation_mm`` (clearances beyond it count as perfect) and θ the
    angle between the needle and the target organ's capsule normal.
    """

    length: float = 1.0
    clearance: float = 1.0
    capsule_angle: float = 0.5
    clearance_saturation_mm: float = 10.0

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly form."""
        return {"length": self.length, "clearance": self.clearance,
                "capsule_angle": self.capsule_angle,
                "clearance_saturation_mm": self.clearance_saturation_mm}


@dataclass
class SearchResult:
    """Outcome of a search: every evaluated candidate and the diverse suggestions.

    Per-candidate arrays (length n = evaluated candidates, all skin points within
    reach) are aligned with ``entries_lps``. ``risk`` (0 best – 1 infeasible) is
    meant for colouring the skin.
    """

    target_lps: tuple[float, float, float]
    entries_lps: NDArray[np.float64]
    normals_lps: NDArray[np.float64]
    feasible: NDArray[np.bool_]
    reason: NDArray[np.object_]
    length_mm: NDArray[np.float64]
    min_clearance_mm: NDArray[np.float64]
    min_clearance_exact: NDArray[np.bool_]
    critical_structure: NDArray[np.object_]
    craniocaudal_angle_deg: NDArray[np.float64]
    capsule_angle_deg: NDArray[np.float64]
    score: NDArray[np.float64]
    risk: NDArray[np.float64]
    pareto: NDArray[np.bool_]
    suggestions: list[TrajectoryMetrics]
    rejected: dict[str, int]
    n_skin_points: int
    constraints: SearchConstraints
    weights: SearchWeights
    timings_s: dict[str, float]
    stats: dict[str, int]
    skin_index: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Guaranteed lower bound (mm) of each candidate's minimum clearance.
    min_clearance_lower_bound_mm: NDArray[np.float64] = field(
        default_factory=lambda: np.zeros(0))
    #: Clearance table (mm, float32, n_candidates × n_structures) when the search ran
    #: with ``all_clearances``: axis-to-structure distance minus the needle's outer
    #: radius for every structure of :attr:`structure_names`, within the accuracy
    #: contract (≤ 0.25 mm above, ≤ max(0.5 mm, half the largest spacing) below the
    #: truth); negative = the needle touches the structure (−radius: the axis enters
    #: one of its cells); ``inf`` for an empty structure. Empty (0 × 0) otherwise.
    clearance_mm: NDArray[np.float32] = field(
        default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    #: Structure names of the columns of :attr:`clearance_mm`.
    structure_names: list[str] = field(default_factory=list)
    #: How constraints were resolved (e.g. which side "table" meant).
    notes: list[str] = field(default_factory=list)

    def skin_risk(self) -> NDArray[np.float64]:
        """Risk per point of :meth:`PlanningEngine.skin_points` (n_skin_points,), for
        colouring the whole skin: the candidate's risk, 1.0 where out of reach."""
        out = np.ones(self.n_skin_points)
        out[self.skin_index] = self.risk
        return out

    def skin_feasible(self) -> NDArray[np.bool_]:
        """Feasibility per point of :meth:`PlanningEngine.skin_points`."""
        out = np.zeros(self.n_skin_points, dtype=bool)
        out[self.skin_index] = self.feasible
        return out

    @property
    def n_candidates(self) -> int:
        """Number of evaluated candidates (skin points within reach)."""
        return len(self.entries_lps)

    def explain(self) -> str:
        """Which constraint ruled out what share of the skin points."""
        total = max(1, self.n_skin_points)
        parts = [f"{name}: {100.0 * cnt / total:.1f}%"
                 for name, cnt in sorted(self.rejected.items(), key=lambda x: -x[1]) if cnt]
        n_ok = int(self.feasible.sum())
        text = (f"{n_ok} of {self.n_skin_points} skin points feasible "
                f"({100.0 * n_ok / total:.1f}%); ruled out by " + (", ".join(parts) or "nothing"))
        return text + (f" ({'; '.join(self.notes)})" if self.notes else "")

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """One row per evaluated candidate (x, y, z LPS mm, feasible, clearance, length,
        score, ...), written atomically.

        ``min_clearance_mm`` (smallest clearance to a forbidden structure) honours the
        accuracy contract (≤ 0.25 mm above, ≤ max(0.5 mm, half the largest spacing)
        below the truth); ``min_clearance_lower_bound_mm`` is a guaranteed lower bound.
        With the clearance table (``all_clearances``, the default) one column
        ``clearance_<name>_mm`` per structure follows the standard columns. Without
        it, ``min_clearance_mm`` is empty where only the lower bound is known
        (candidates farther than the search's clearance range from every forbidden
        structure)."""
        out = Path(path)
        table_names = self.structure_names if self.clearance_mm.shape[0] else []
        with atomic_output(out, what="candidates file") as tmp, \
                open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["x_lps_mm", "y_lps_mm", "z_lps_mm", "feasible", "min_clearance_mm",
                        "min_clearance_exact", "min_clearance_lower_bound_mm",
                        "critical_structure", "length_mm", "score",
                        "risk", "pareto", "rejected_by"]
                       + [f"clearance_{name}_mm" for name in table_names])
            # table part: one %-format per row ("inf" for an empty structure)
            fmt = ",".join(["%.3f"] * len(table_names))
            table = self.clearance_mm.astype(np.float64).tolist() if table_names else []
            for n in range(self.n_candidates):
                p = self.entries_lps[n]
                # min_clearance_mm only where it honours the accuracy contract;
                # elsewhere (far from every forbidden structure) the lower bound.
                ok = bool(self.min_clearance_exact[n])
                w.writerow([f"{p[0]:.2f}", f"{p[1]:.2f}", f"{p[2]:.2f}",
                            int(self.feasible[n]),
                            _num(self.min_clearance_mm[n]) if ok else "", int(ok),
                            _num(self.min_clearance_lower_bound_mm[n]),
                            self.critical_structure[n],
                            f"{self.length_mm[n]:.2f}", _num(self.score[n], 4),
                            f"{self.risk[n]:.4f}", int(self.pareto[n]), self.reason[n]]
                           + ((fmt % tuple(table[n])).split(",") if table_names else []))
        return out


def _num(v: float, nd: int = 3) -> str:
    return "" if not np.isfinite(v) else f"{v:.{nd}f}"


# ---------------------------------------------------------------------------------------
#: Slack (mm) subtracted from lower / added to upper bounds for float32 rounding.
_EPS_MM = 1e-3


def _edt_outside(mask: NDArray[np.bool_], spacing_ijk: NDArray[np.float64]
                 ) -> NDArray[np.float32]:
    """Euclidean distance (mm) from every lattice point to the nearest True point.

    SimpleITK's SignedMaurerDistanceMap (multi-threaded; outside values equal the exact
    EDT to the nearest object point, checked against scipy in the tests), inside
    clipped to 0.
    """
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing(tuple(float(x) for x in spacing_ijk))
    d = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False,
                                     useImageSpacing=True, backgroundValue=0)
    return np.maximum(sitk.GetArrayFromImage(d), 0.0).astype(np.float32)


class _Field:
    """Corner-lattice exact distance map of one structure over a padded ROI."""

    def __init__(self, engine: "PlanningEngine", d: "_StructureData", pad_mm: float,
                 block: NDArray[np.int64]) -> None:
        sp = engine.frame.spacing_mm
        shape = np.asarray(engine.frame.shape_ijk)
        self.block = block
        csp = block * sp  # coarse cell size (mm)
        ncoarse = -(-shape // block)
        pad = np.ceil(pad_mm / csp).astype(int) + 1
        c_lo = np.maximum(d.bbox_lo // block - pad, 0)
        c_hi = np.minimum(d.bbox_hi // block + pad, ncoarse - 1)
        f_lo = c_lo * block
        f_hi = np.minimum((c_hi + 1) * block, shape)
        layer = engine.labels.layers[d.struct.layer]
        fine = layer[f_lo[2]:f_hi[2], f_lo[1]:f_hi[1], f_lo[0]:f_hi[0]] == d.struct.label
        nc = c_hi - c_lo + 1
        if np.any(block > 1):
            padded = np.zeros(tuple(int(x) for x in (nc * block)[::-1]), dtype=bool)
            padded[:fine.shape[0], :fine.shape[1], :fine.shape[2]] = fine
            bk, bj, bi = (int(x) for x in block[::-1])
            coarse = np.zeros((int(nc[2]), int(nc[1]), int(nc[0])), dtype=bool)
            for ok in range(bk):
                for oj in range(bj):
                    for oi in range(bi):
                        coarse |= padded[ok::bk, oj::bj, oi::bi]
        else:
            coarse = fine
        # Corner m (0..nc) is in the set iff one of the 8 cells around it is.
        cp = np.pad(coarse, 1)
        corners = np.zeros(tuple(int(x) for x in (nc + 1)[::-1]), dtype=bool)
        for dk in (0, 1):
            for dj in (0, 1):
                for di in (0, 1):
                    corners |= cp[dk:dk + nc[2] + 1, dj:dj + nc[1] + 1, di:di + nc[0] + 1]
        self.dist = _edt_outside(corners, csp)
        self.m_lo = c_lo  # corner index of the first ROI corner
        self.m_n = nc + 1
        self.csp = csp
        self.extra = float(np.linalg.norm(csp)) if np.any(block > 1) else 0.0
        # Outside the ROI box the distance to the structure is at least this.
        self.outside_lb = float(np.min((pad - 1) * csp))

    def bounds(self, q: NDArray[np.float32], sp: NDArray[np.float64]
               ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Per-sample lower/upper bounds (mm) of the distance to the cell union."""
        u = q / sp.astype(np.float32)
        m = np.rint((u + 0.5) / self.block.astype(np.float32)).astype(np.int32)
        v = (m * self.block.astype(np.float32) - 0.5) * sp.astype(np.float32)
        dv = np.sqrt(np.sum((q - v) ** 2, axis=-1))
        rel = m - self.m_lo.astype(np.int32)
        inside = np.all((rel >= 0) & (rel < self.m_n.astype(np.int32)), axis=-1)
        lo = np.full(q.shape[:-1], self.outside_lb, dtype=np.float32)
        hi = np.full(q.shape[:-1], np.inf, dtype=np.float32)
        r = rel[inside]
        dd = self.dist[r[:, 2], r[:, 1], r[:, 0]]
        lo[inside] = np.maximum(dd - dv[inside], 0.0)
        hi[inside] = dd + dv[inside] + self.extra
        return lo, hi


def _block(engine: "PlanningEngine") -> NDArray[np.int64]:
    sp = engine.frame.spacing_mm
    return np.maximum(1, np.floor(engine.field_spacing_mm / sp)).astype(np.int64)


class _GlobalField:
    """Combined corner-lattice bounds over all forbidden structures.

    ``g_lo ≤ min_s(dist_s − margin_s) ≤ g_hi`` and ``u_lo ≤ min_s dist_s ≤ u_hi`` at every
    corner of the (block) lattice, with ``arg`` the structure attaining ``g_lo``.
    """

    def __init__(self, engine: "PlanningEngine", pad_mm: float,
                 progress: ProgressCallback | None = None,
                 exclude: frozenset[str] = frozenset()) -> None:
        self.forb = [d for d in engine._data.values()
                     if d.struct.forbidden and d.struct.name not in exclude]
        self.pad_mm = pad_mm
        self.block = _block(engine)
        shape = np.asarray(engine.frame.shape_ijk)
        ncorner = -(-shape // self.block) + 1
        cshape = tuple(int(x) for x in ncorner[::-1])
        fields = []
        for n, d in enumerate(self.forb):
            report(progress, 0.9 * n / max(1, len(self.forb)), f"distance map {d.struct.name}")
            fields.append(_Field(engine, d, pad_mm, self.block))
        report(progress, 0.9, "combining distance maps")
        margins = [d.struct.margin_mm for d in self.forb]
        g0 = min((f.outside_lb - m for f, m in zip(fields, margins)), default=np.inf)
        u0 = min((f.outside_lb for f in fields), default=np.inf)
        self.g_lo = np.full(cshape, g0, dtype=np.float32)
        self.g_hi = np.full(cshape, np.inf, dtype=np.float32)
        self.u_lo = np.full(cshape, u0, dtype=np.float32)
        self.u_hi = np.full(cshape, np.inf, dtype=np.float32)
        self.arg = np.zeros(cshape, dtype=np.uint16)
        for n, (f, m) in enumerate(zip(fields, margins)):
            lo, cnt = f.m_lo, f.m_n
            roi = (slice(int(lo[2]), int(lo[2] + cnt[2])), slice(int(lo[1]), int(lo[1] + cnt[1])),
                   slice(int(lo[0]), int(lo[0] + cnt[0])))
            val = f.dist - np.float32(m)
            better = val < self.g_lo[roi]
            self.g_lo[roi] = np.where(better, val, self.g_lo[roi])
            self.arg[roi] = np.where(better, np.uint16(n), self.arg[roi])
            np.minimum(self.g_hi[roi], val + np.float32(f.extra), out=self.g_hi[roi])
            np.minimum(self.u_lo[roi], f.dist, out=self.u_lo[roi])
            np.minimum(self.u_hi[roi], f.dist + np.float32(f.extra), out=self.u_hi[roi])
        self.ncorner = ncorner
        # Label value -> forbidden index per layer, and the "any forbidden" cell map,
        # for the exact tube kernel.
        labels = engine.labels
        n_lut = max(int(layer.max()) for layer in labels.layers) + 1
        self.luts = np.full((len(labels.layers), n_lut), -1, dtype=np.int16)
        for n, d in enumerate(self.forb):
            self.luts[d.struct.layer, d.struct.label] = n
        self.fmap, self.bmap = forbidden_maps(labels.layers, self.luts)
        self.margins = np.array([d.struct.margin_mm for d in self.forb], dtype=float)
        # Load (or compile, first time only) the kernel now rather than in the search.
        tube_distances(np.zeros((1, 3)), np.ones(3), labels.layers, self.luts,
                       engine.frame.spacing_mm, engine.frame.shape_ijk, 1.0,
                       max(1, len(self.forb)), self.fmap, bmap=self.bmap)
        low_t_range(np.zeros((1, 3)), np.ones(3), np.ones(1), 1.0, self.u_lo,
                    self.block.astype(float), engine.frame.spacing_mm.astype(float))
        report(progress, 1.0, "distance maps done")

    def lookup(self, q: NDArray[np.float32], sp: NDArray[np.float64]
               ) -> tuple[NDArray[np.float32], ...]:
        """Per-sample (g_lo, g_hi, u_lo, u_hi, arg) bounds at sample points (..., 3) q-space."""
        sp32 = sp.astype(np.float32)
        b32 = self.block.astype(np.float32)
        m = np.rint((q / sp32 + 0.5) / b32).astype(np.int32)
        np.clip(m, 0, (self.ncorner - 1).astype(np.int32), out=m)
        v = (m * b32 - 0.5) * sp32
        dv = np.sqrt(np.sum((q - v) ** 2, axis=-1))
        ix = (m[..., 2], m[..., 1], m[..., 0])
        dv += _EPS_MM
        return (self.g_lo[ix] - dv, self.g_hi[ix] + dv, self.u_lo[ix] - dv,
                self.u_hi[ix] + dv, self.arg[ix])


def global_field(engine: "PlanningEngine", pad_mm: float = 15.0,
                 progress: ProgressCallback | None = None,
                 exclude: frozenset[str] = frozenset()) -> _GlobalField:
    """The engine's cached combined search field (built on first use).

    ``exclude``: forbidden structures allowed for this target (its organ, e.g. lung).
    """
    caches: dict[frozenset[str], _GlobalField] = engine.__dict__.setdefault(
        "_search_fields", {})
    cache = caches.get(exclude)
    forb_names = [d.struct.name for d in engine._data.values()
                  if d.struct.forbidden and d.struct.name not in exclude]
    if (cache is None or cache.pad_mm < pad_mm or np.any(cache.block != _block(engine))
            or [d.struct.name for d in cache.forb] != forb_names):
        cache = _GlobalField(engine, pad_mm, progress, exclude)
        caches[exclude] = cache
    return cache


def precompute_fields(engine: "PlanningEngine", *, pad_mm: float = 15.0, fields: bool = False,
                      progress: ProgressCallback | None = None) -> None:
    """Load the search's compiled kernels now (numba's disk cache; compiled on the first
    run after installation) and, with ``fields``, build the distance maps of every
    forbidden structure that the minimum-clearance-only search
    (``SearchConstraints(all_clearances=False)``) uses (else built lazily)."""
    report(progress, 0.0, "loading the clearance kernel")
    index = engine.surface_index
    structure_distances(index, np.zeros((2, 3)), np.ones(3), tol_mm=1.0)
    if fields:
        global_field(engine, pad_mm, subrange(progress, 0.1, 1.0))
    report(progress, 1.0, "search ready")


# ---------------------------------------------------------------------------------------
def search(engine: "PlanningEngine", target_lps: ArrayLike,
           constraints: SearchConstraints | None = None, *, top_k: int = 5,
           weights: SearchWeights | None = None,
           progress: ProgressCallback | None = None) -> SearchResult:
    """Search the skin for safe entry points to ``target_lps``.

    Parameters
    ----------
    engine : PlanningEngine
    target_lps : array_like (3,)
        LPS mm.
    constraints : SearchConstraints, optional
    top_k : int
        Number of diverse suggestions (each re-evaluated exactly).
    weights : SearchWeights, optional
    progress : ProgressCallback, optional

    Returns
    -------
    SearchResult
        With no feasible candidate, ``suggestions`` is empty and
        :meth:`SearchResult.explain` says which constraints ruled out what.
    """
    c = constraints or SearchConstraints()
    w = weights or SearchWeights()
    if top_k < 1:
        raise InputError(f"top_k must be ≥ 1; got {top_k}")
    for region in c.excluded_regions:
        if region not in REGIONS:
            raise InputError(f"unknown skin region {region!r}; use one of {sorted(REGIONS)}")
    for sph in c.excluded_spheres:
        if len(sph) != 4 or not np.all(np.isfinite(sph)) or not sph[3] > 0:
            raise InputError(f"excluded sphere {tuple(sph)!r}: give x, y, z (LPS mm) and a "
                             "radius > 0 mm")
    for organ in c.min_organ_length_mm:
        engine.structure(organ)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    target = engine.check_target(target_lps)
    frame = engine.frame
    sp = frame.spacing_mm
    needle = engine.needle
    radius = needle.outer_radius_mm
    max_len = c.max_length_mm if c.max_length_mm is not None else needle.usable_length_mm
    if not max_len > 0:
        raise InputError(f"max_length_mm must be > 0; got {max_len}")

    skin, normals = engine.skin_points()
    n_skin = len(skin)
    rejected: dict[str, int] = {}
    vec = skin - target
    dist = np.linalg.norm(vec, axis=1)
    reach = (dist <= max_len) & (dist > 1e-6)
    rejected["length > needle"] = int(n_skin - reach.sum())
    notes: list[str] = []
    if not reach.any() and n_skin:
        notes.append(f"the nearest skin point is {float(dist.min()):.0f} mm from the target; "
                     f"the usable needle length is {max_len:.0f} mm")
    entries = skin[reach]
    nrm = normals[reach]
    length = dist[reach]
    n = len(entries)
    direction = (target - entries) / length[:, None]  # insertion direction
    feasible = np.ones(n, dtype=bool)
    reason = np.full(n, "", dtype=object)

    def reject(mask: NDArray[np.bool_], why: str) -> None:
        new = mask & feasible
        rejected[why] = rejected.get(why, 0) + int(mask.sum())
        reason[new] = why
        feasible[mask] = False

    for region in c.excluded_regions:
        side = region
        if region == "table":
            meta = (engine.image.metadata if engine.image is not None else {}) or {}
            side, note = table_side(meta.get("patient_position")
                                    or engine.grid.metadata.get("patient_position"))
            notes.append(note)
        reject(nrm @ np.asarray(REGIONS[side]) > math.cos(math.radians(45.0)),
               f"excluded region {region}" + (f" ({side})" if side != region else ""))
    for k, sph in enumerate(c.excluded_spheres):
        centre = np.asarray(sph[:3], dtype=float)
        reject(np.linalg.norm(entries - centre, axis=1) <= float(sph[3]),
               f"excluded sphere {k + 1} ({float(sph[3]):g} mm)")
    cc = np.degrees(np.arcsin(np.clip(direction[:, 2], -1.0, 1.0)))
    if c.max_cc_angle_deg is not None:
        slice_mm = float(np.max(np.abs(frame.rotation[2] * sp)))
        tol = np.degrees(np.arctan2(0.5 * slice_mm, length))
        reject(np.abs(cc) > c.max_cc_angle_deg + tol, "craniocaudal angle")
    timings["candidates"] = time.perf_counter() - t0
    report(progress, 0.05, f"{n} candidate entries within {max_len:.0f} mm")

    # -- sample every candidate path (target at t=0, entry at t=1) ---------------------
    # Pass 1 samples every path coarsely (step <= coarse_step_mm); passes 2 and 3 resample
    # only the paths whose bounds could not decide, at <= 1 mm, with the nearest and then
    # all 8 lattice corners; the exact computation decides what is left.
    t1 = time.perf_counter()
    fine_step = float(min(1.0, sp.min()))
    coarse_step = max(fine_step, COARSE_STEP_MM)
    tq = frame.lps_to_q(target).astype(np.float32)
    eq = frame.lps_to_q(entries).astype(np.float32)
    target_structs = engine.labels_at(target)
    organ = engine._target_organ(target_structs)
    min_len = dict(c.min_organ_length_mm)
    track = set(min_len) | ({organ} if organ else set())
    sat = w.clearance_saturation_mm
    allowed = frozenset(engine.allowed_at_target(target))
    forb_all = [d for d in engine._data.values()
                if d.struct.forbidden and d.struct.name not in allowed]
    max_margin = max((d.struct.margin_mm for d in forb_all), default=0.0)
    pad_mm = max(sat, max_margin + engine.caution_band_mm) + radius + 2.0
    if forb_all:
        # The target itself within a forbidden structure's margin: every path ends there.
        tq64 = frame.lps_to_q(target)
        for d, (dist, _) in zip(forb_all, engine._exact_many(forb_all, tq64, tq64)):
            if dist - radius < d.struct.margin_mm:
                notes.append(
                    f"the target is {max(dist - radius, 0.0):.1f} mm from {d.struct.name} "
                    f"(margin {d.struct.margin_mm:g} mm): every path ends there, so none "
                    "keeps the margin; lower its margin (plan structure override) or move "
                    "the target")
    tf = time.perf_counter()
    gf: _GlobalField | None = None
    if c.all_clearances:
        forb = forb_all
        margins = np.array([d.struct.margin_mm for d in forb], dtype=float)
    else:
        # distance-map bounds of every forbidden structure (built once per engine)
        gf = global_field(engine, max(pad_mm, 15.0), exclude=allowed)
        forb = gf.forb
        margins = gf.margins
    timings["fields"] = time.perf_counter() - tf
    g_lo = np.full(n, np.inf, dtype=np.float32)
    g_hi = np.full(n, np.inf, dtype=np.float32)
    u_lo = np.full(n, np.inf, dtype=np.float32)
    u_hi = np.full(n, np.inf, dtype=np.float32)
    arg_hi = np.zeros(n, dtype=np.int64)
    inside_len = {name: np.zeros(n, dtype=np.float64) for name in track}
    capsule_t = np.zeros(n, dtype=np.float32)
    organ_runs = np.ones(n, dtype=np.int64)
    sp32 = sp.astype(np.float32)
    shape = np.asarray(frame.shape_ijk)
    t_lo_s = np.zeros(n)
    t_hi_s = np.ones(n)

    def sample_pass(sel: NDArray[np.int64], h: float, mode: str) -> None:
        if not len(sel):
            return
        n_s = max(2, int(math.ceil(float(length[sel].max()) / h)) + 1)
        tt = np.linspace(0.0, 1.0, n_s, dtype=np.float32)
        chunk = max(1, 1_500_000 // n_s)
        for start in range(0, len(sel), chunk):
            idx = sel[start:start + chunk]
            rows = np.arange(len(idx))
            q = tq + tt[None, :, None] * (eq[idx] - tq)[:, None, :]
            half = (0.5 * length[idx] / (n_s - 1)).astype(np.float32)
            if gf is not None and forb:
                glo, ghi, ulo, uhi, arg = gf.lookup(q, sp)
                if mode == "nearest":
                    # Path parts whose guaranteed lower bound is below the radius (t = 0
                    # at the target): only there can a cell decide infeasibility.
                    low = (glo - half[:, None]) < radius
                    anyl = low.any(axis=1)
                    first = np.argmax(low, axis=1)
                    last = n_s - 1 - np.argmax(low[:, ::-1], axis=1)
                    ht = 1.0 / (n_s - 1)
                    t_lo_s[idx] = np.where(anyl, first * ht - ht, 2.0)
                    t_hi_s[idx] = np.where(anyl, last * ht + ht, -1.0)
                new_lo = glo.min(axis=1) - half
                g_lo[idx] = np.where(np.isfinite(g_lo[idx]), np.maximum(g_lo[idx], new_lo),
                                     new_lo)
                k_hi = np.argmin(ghi, axis=1)
                new_hi = ghi[rows, k_hi]
                upd = new_hi < g_hi[idx]
                g_hi[idx] = np.where(upd, new_hi, g_hi[idx])
                arg_hi[idx] = np.where(upd, arg[rows, k_hi], arg_hi[idx])
                new_ulo = np.maximum(ulo.min(axis=1) - half, 0.0)
                u_lo[idx] = np.where(np.isfinite(u_lo[idx]), np.maximum(u_lo[idx], new_ulo),
                                     new_ulo)
                u_hi[idx] = np.minimum(u_hi[idx], uhi.min(axis=1))
            if mode == "coarse" and track:
                cell = np.rint(q / sp32).astype(np.int32)
                np.clip(cell, 0, (shape - 1).astype(np.int32), out=cell)
                for name in track:
                    st = engine._data[name].struct
                    ino = engine.labels.layers[st.layer][cell[..., 2], cell[..., 1],
                                                         cell[..., 0]] == st.label
                    inside_len[name][idx] = ino.sum(axis=1) * (2.0 * half)
                    if name == organ:
                        # separate passages through the organ (target end first)
                        organ_runs[idx] = ino[:, 0] + np.sum(ino[:, 1:] & ~ino[:, :-1], axis=1)
                        outside = ~ino
                        first = np.where(outside.any(axis=1), np.argmax(outside, axis=1),
                                         n_s - 1)
                        capsule_t[idx] = (np.maximum(first, 1) - 0.5) / (n_s - 1)

    if gf is not None or track:
        sample_pass(np.flatnonzero(feasible), coarse_step, "coarse")
    report(progress, 0.4, "scoring candidates")
    timings["sampling"] = time.perf_counter() - t1 - timings["fields"]

    # -- feasibility against forbidden structures (exact where bounds cannot decide) ------
    # g = min_s(dist_s - margin_s): feasible iff g >= needle radius.
    t2 = time.perf_counter()
    # Accuracy contract: a reported clearance is at most 0.25 mm above and at most
    # max(0.5 mm, half the largest spacing) below the truth.
    tol_below = max(0.5, 0.5 * float(sp.max()))
    tol_above = 0.25
    n_amb0 = n_amb1 = n_tube = n_clear_refined = 0
    table = np.zeros((0, 0), dtype=np.float32)
    table_names: list[str] = []
    if c.all_clearances:
        # Per-candidate × per-structure clearance table within the contract (compiled
        # branch and bound over every structure's surface cells). A pair whose value
        # is within the contract's window of the structure's margin is recomputed
        # exactly, so feasibility (clearance ≥ margin for every forbidden structure) is
        # decided exactly and agrees with the table.
        t_tab = time.perf_counter()
        table_names = list(engine._data)
        table = clearance_table(engine, eq.astype(float), tq.astype(float), tol_below,
                                tol_above, radius)
        bad_sure = np.zeros(n, dtype=bool)
        cols = np.array([engine._data[d.struct.name].index for d in forb], dtype=np.int64)
        if forb and n:
            m32 = margins.astype(np.float32)[None, :]
            near = np.abs(table[:, cols] - m32) <= np.float32(tol_below + tol_above + 1e-3)
            rows = np.flatnonzero(near.any(axis=1))
            if len(rows):
                want = np.zeros((len(rows), len(table_names)), dtype=bool)
                want[:, cols] = near[rows]
                hi = _exact_distances(engine, eq[rows].astype(float), tq.astype(float), want)
                sub = table[np.ix_(rows, cols)]
                table[np.ix_(rows, cols)] = np.where(
                    near[rows], hi[:, cols] - np.float32(radius), sub)
                n_clear_refined = len(rows)
            val = table[:, cols] - m32
            arg_hi = np.argmin(val, axis=1)
            bad_sure = val[np.arange(n), arg_hi] < 0.0
        n_refined = n_clear_refined
        timings["clearance_table"] = time.perf_counter() - t_tab
    else:
        assert gf is not None
        amb = feasible & ~(g_lo >= radius) & ~(g_hi < radius)
        n_amb0 = int(amb.sum())
        sample_pass(np.flatnonzero(amb), fine_step, "nearest")
        amb = feasible & ~(g_lo >= radius) & ~(g_hi < radius)
        n_amb1 = int(amb.sum())
        ok_sure = g_lo >= radius
        bad_sure = g_hi < radius
        amb = feasible & ~ok_sure & ~bad_sure
        amb_idx = np.flatnonzero(amb)
        n_tube = len(amb_idx)
        t_tube = time.perf_counter()
        # Exact pass (compiled tube kernel): every forbidden cell within max margin + radius
        # of the path parts whose lower bound is below the radius gets its exact
        # segment-to-cell distance; a structure's value below margin + radius is exact,
        # otherwise the structure is at least that far (see ir_planner.planning.tube).
        tube_dist = np.zeros((0, len(forb)), dtype=np.float32)
        if n_tube and forb:
            r_tube = float(margins.max()) + radius + 1e-3
            tube_dist = tube_distances(
                eq[amb_idx].astype(float), tq.astype(float), engine.labels.layers, gf.luts,
                sp, frame.shape_ijk, r_tube, len(forb), gf.fmap,
                t_range=(1.0 - t_hi_s[amb_idx], 1.0 - t_lo_s[amb_idx]), bmap=gf.bmap)
            val = tube_dist - margins[None, :].astype(np.float32)
            k_min = np.argmin(val, axis=1)
            g_exact = val[np.arange(n_tube), k_min]
            bad_t = g_exact < radius
            g_lo[amb_idx] = np.where(bad_t, g_exact, np.maximum(g_lo[amb_idx], radius))
            g_hi[amb_idx] = np.where(bad_t, g_exact, g_hi[amb_idx])
            arg_hi[amb_idx[bad_t]] = k_min[bad_t]
            bad_sure[amb_idx] = bad_t
            # Minimum clearance bounds: a structure's value below margin + radius is exact;
            # otherwise the structure lies in [margin + radius, value].
            thr = (margins + radius).astype(np.float32)[None, :]
            exact_k = tube_dist < thr
            lo_k = np.where(exact_k, tube_dist, thr)
            u_lo[amb_idx] = np.maximum(u_lo[amb_idx], lo_k.min(axis=1))
            u_hi[amb_idx] = np.minimum(u_hi[amb_idx], tube_dist.min(axis=1))
        n_refined = n_tube
        timings["exact_tube"] = time.perf_counter() - t_tube
    bad_any = feasible & bad_sure
    for i in np.flatnonzero(bad_any):
        reason[i] = f"near {forb[arg_hi[i]].struct.name}"
    for name in set(reason[bad_any]):
        rejected[name] = int(np.sum(reason[bad_any] == name))
    feasible &= ~bad_any
    for organ_name, need in min_len.items():
        got = inside_len[organ_name]
        reject(feasible & (got < need), f"< {need:g} mm through {organ_name}")
    if organ and not c.allow_reentry:
        # leaving and re-entering the target's organ: a second capsule puncture, or a
        # cavity inside it (e.g. the spinal canal of a vertebra being biopsied)
        reject(feasible & (organ_runs > 1), f"re-enters {organ}")

    # -- minimum clearance per candidate -------------------------------------------------------
    # With the table: the minimum of its forbidden columns. Without it: with truth in [u_lo, u_hi],
    # x = min(u_lo + 0.25, u_hi) honours it iff u_hi − u_lo ≤ 0.25 + that tolerance.
    # Wider bounds are refined exactly with the tube kernel (range u_hi: every cell
    # closer than the current upper bound is visited) while the lower bound is below
    # ``clearance_range`` (the score saturation + radius); beyond it only the guaranteed
    # lower bound is known and the candidate is flagged ``min_clearance_exact = False``,
    # unless ``exact_clearance`` asks for the exact computation there too.
    width_ok = tol_below + tol_above - 2e-3
    clear_range = sat + radius
    if c.all_clearances:
        min_clear = np.full(n, np.inf)
        if forb and n:
            min_clear = table[:, cols].min(axis=1).astype(float)
        is_exact = np.ones(n, dtype=bool)
        # values are ≤ 0.25 mm above the truth: a guaranteed lower bound
        clear_lb = min_clear - tol_above
    else:
        assert gf is not None
        t_ref = time.perf_counter()
        if forb:
            with np.errstate(invalid="ignore"):
                refine = np.flatnonzero(~(u_hi - u_lo <= width_ok) & (u_lo < clear_range))
            if len(refine):
                # Range: nothing closer than u_hi − width_ok means the truth lies in
                # [u_hi − width_ok, u_hi], inside the contract; anything closer is exact.
                r_ref = np.minimum(u_hi[refine].astype(float) - width_ok, clear_range)
                r_ref = np.where(np.isfinite(r_ref), r_ref, float(max_len) + 1.0) + 2e-3
                # Only path parts whose guaranteed lower bound is below the range can hold
                # a cell closer than it (fine samples, nearest lattice corner).
                t_from, t_to = low_t_range(eq[refine].astype(float), tq.astype(float), r_ref,
                                           max(fine_step, 1.0), gf.u_lo,
                                           gf.block.astype(float), sp.astype(float))
                timings["clearance_t_range"] = time.perf_counter() - t_ref
                dist_r = tube_distances(eq[refine].astype(float), tq.astype(float),
                                        engine.labels.layers, gf.luts, sp, frame.shape_ijk,
                                        r_ref, len(forb), gf.fmap, t_range=(t_from, t_to),
                                        min_only=True, bmap=gf.bmap)
                dmin = dist_r.min(axis=1)
                found = np.isfinite(dmin)
                u_lo[refine] = np.where(found, dmin, np.maximum(u_lo[refine], r_ref - 1e-3))
                u_hi[refine] = np.where(found, dmin, u_hi[refine])
                n_clear_refined = len(refine)
        timings["clearance_refine"] = time.perf_counter() - t_ref
        with np.errstate(invalid="ignore"):
            is_exact = (u_hi - u_lo <= width_ok) & np.isfinite(u_lo)
        if forb and c.exact_clearance:
            # Beyond the tube range: the exact kernel for the remaining candidates.
            need = np.flatnonzero(~is_exact & np.isfinite(u_lo))
            if len(need):
                want = np.zeros(len(engine._data), dtype=bool)
                fcols = [engine._data[d.struct.name].index for d in forb]
                want[fcols] = True
                hi = _exact_distances(engine, eq[need].astype(float), tq.astype(float), want)
                best = hi[:, fcols].min(axis=1)
                u_lo[need] = best
                u_hi[need] = best
                is_exact[need] = True
                n_clear_refined += len(need)
        min_clear = np.where(is_exact, np.minimum(u_lo + tol_above, u_hi), u_lo).astype(float)
        min_clear -= radius
        min_clear[~np.isfinite(u_lo)] = np.inf
        clear_lb = np.where(np.isfinite(u_lo), u_lo.astype(float) - radius, np.nan)
    # The structure closest to violating its margin (smallest clearance − margin).
    closest = np.array([forb[k].struct.name if forb else "" for k in arg_hi], dtype=object)
    timings["feasibility"] = time.perf_counter() - t2

    # -- soft objectives, score, Pareto set ----------------------------------------------------
    t3 = time.perf_counter()
    capsule = np.full(n, np.nan)
    if organ and n:
        sel = np.flatnonzero(feasible)
        if len(sel):
            pts = target + (entries[sel] - target) * capsule_t[sel, None].astype(float)
            capsule[sel] = engine._capsule_angle(organ, pts, direction[sel])
    clear_sat = np.clip(np.where(np.isfinite(min_clear), min_clear, sat), 0.0, sat)
    cost = (w.length * length / max_len + w.clearance * (1.0 - clear_sat / sat)
            + w.capsule_angle * np.nan_to_num(capsule, nan=0.0) / 90.0)
    wsum = w.length + w.clearance + (w.capsule_angle if organ else 0.0)
    score = np.where(feasible, 1.0 - cost / max(wsum, 1e-9), np.nan)
    risk = np.where(feasible, 1.0 - np.nan_to_num(score, nan=0.0), 1.0)
    pareto = np.zeros(n, dtype=bool)
    sel = np.flatnonzero(feasible)
    if len(sel):
        obj = np.stack([length[sel], -clear_sat[sel], np.nan_to_num(capsule[sel], nan=0.0)],
                       axis=1).astype(np.float32)
        pareto[sel] = _pareto(obj)
    timings["scoring"] = time.perf_counter() - t3

    # -- diverse suggestions, each evaluated exactly -------------------------------------------
    t4 = time.perf_counter()
    suggestions: list[TrajectoryMetrics] = []
    chosen_dirs: list[NDArray[np.float64]] = []
    cos_sep = math.cos(math.radians(c.min_separation_deg))
    order = sel[np.argsort(-score[sel], kind="stable")] if len(sel) else sel
    for i in order:
        if len(suggestions) >= top_k:
            break
        if any(float(direction[i] @ dprev) > cos_sep for dprev in chosen_dirs):
            continue
        m = engine.evaluate(entries[i], target, check_entry=False,
                            max_cc_angle_deg=c.max_cc_angle_deg,
                            min_organ_length_mm=min_len or None)
        reenters = bool(organ) and not c.allow_reentry and sum(
            x.name == organ for x in m.crossings) > 1
        if m.verdict == Verdict.UNSAFE or reenters or any(
                m.length_in_structure_mm.get(o, 0.0) < v for o, v in min_len.items()):
            feasible[i] = False
            reason[i] = "failed exact re-check"
            continue
        suggestions.append(m)
        chosen_dirs.append(direction[i])
    timings["suggestions"] = time.perf_counter() - t4
    timings["total"] = time.perf_counter() - t0
    report(progress, 1.0, f"{int(feasible.sum())} feasible of {n} candidates")
    return SearchResult(
        target_lps=(float(target[0]), float(target[1]), float(target[2])),
        entries_lps=entries, normals_lps=nrm, feasible=feasible, reason=reason,
        length_mm=length, min_clearance_mm=min_clear, min_clearance_exact=is_exact,
        critical_structure=closest, craniocaudal_angle_deg=cc, capsule_angle_deg=capsule,
        score=score, risk=risk, pareto=pareto, suggestions=suggestions, rejected=rejected,
        n_skin_points=n_skin, constraints=c, weights=w, timings_s=timings,
        skin_index=np.flatnonzero(reach), min_clearance_lower_bound_mm=clear_lb,
        clearance_mm=table, structure_names=table_names, notes=notes,
        stats={"candidates": n, "exact_refinements": n_refined,
               "forbidden_structures": len(forb), "ambiguous_coarse": n_amb0, "ambiguous_nearest_corner": n_amb1,
               "exact_tube_paths": n_tube,
               "clearance_refined_paths": n_clear_refined})


def clearance_table(engine: "PlanningEngine", a_q: NDArray[np.float64],
                    b_q: NDArray[np.float64], tol_below: float, tol_above: float,
                    radius_mm: float) -> NDArray[np.float32]:
    """Clearance (mm) of every segment ``a_q[n] → b_q`` (q-space) to every structure of
    the engine (columns in ``engine._data`` order), within the accuracy contract (see
    :attr:`SearchResult.clearance_mm`)."""
    zero = engine.endpoint_zero(a_q, b_q)
    # The truth lies in [lo, hi]; x = min(lo + 0.25, hi) honours the contract when
    # hi − lo ≤ 0.25 + tol_below. 2 µm of slack (1 µm each side) absorb the float32
    # rounding of lo and hi (≤ 3e-5 mm below 500 mm).
    width = tol_below + tol_above - 2e-3
    lo, hi = structure_distances(engine.surface_index, a_q, b_q, zero=zero, tol_mm=width)
    val = np.minimum(lo + np.float32(tol_above - 1e-3), hi)
    out = val - np.float32(radius_mm)
    return out.astype(np.float32)


def _exact_distances(engine: "PlanningEngine", a_q: NDArray[np.float64],
                     b_q: NDArray[np.float64], want: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Exact axis distances (mm) of segments ``a_q[n] → b_q`` (q-space) to the structures
    selected by ``want`` ((n_struct,) or (n, n_struct) bool; the others are NaN)."""
    zero = engine.endpoint_zero(a_q, b_q)
    _, hi = structure_distances(engine.surface_index, a_q, b_q, zero=zero, want=want)
    return hi


def _pareto(obj: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Non-dominated rows of ``obj`` (all objectives minimised).

    Rows are visited in lexicographic order; a row can only be dominated by one
    visited before it, and only front members need checking (compiled loop).
    """
    obj = np.ascontiguousarray(obj, dtype=np.float64)
    order = np.lexsort(obj.T[::-1]).astype(np.int64)
    return _pareto_kernel(obj, order)


@njit(cache=True)
def _pareto_kernel(obj: NDArray[np.float64], order: NDArray[np.int64]) -> NDArray[np.bool_]:
    n, m = obj.shape
    keep = np.zeros(n, dtype=np.bool_)
    front = np.empty((n, m))
    nf = 0
    for i in order:
        dominated = False
        for f in range(nf):
            le = True
            lt = False
            for k in range(m):
                if front[f, k] > obj[i, k]:
                    le = False
                    break
                if front[f, k] < obj[i, k]:
                    lt = True
            if le and lt:
                dominated = True
                break
        if dominated:
            continue
        keep[i] = True
        for k in range(m):
            front[nf, k] = obj[i, k]
        nf += 1
    return keep


def require_feasible(result: SearchResult) -> None:
    """Raise :class:`PlanError` explaining the constraints when nothing is feasible."""
    if not result.suggestions:
        raise PlanError("no feasible path to the target: " + result.explain())
