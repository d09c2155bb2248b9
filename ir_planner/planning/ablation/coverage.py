"""Tumour coverage, ablative margins, critical-structure damage and heat-sink warnings.

Definitions (all distances in mm, volumes in ml, points LPS):

* **Tumour** — the union of its voxel *cells* (a voxel covers ``[i−½, i+½]`` in index
  space; see :mod:`ir_planner.core.volume`), or an analytic shape in tests. It is
  sampled once (:class:`TumourModel`) on a fine lattice (≤ 0.5 mm): each label cell is
  split into ``n³`` sub-cells, so cells (not only their centres) are represented
  exactly; the surface is sampled on the cells' boundary faces at ≤ 0.5 mm.
* **Coverage %** — the share of the tumour volume inside the zone (sub-cell samples,
  partial-volume weighted by the zone's signed distance).
* **Shell coverage** — the same for the tumour grown by 5 mm and by 10 mm (the whole
  grown volume, tumour included).
* **Minimal ablative margin** — over all tumour-surface points, the smallest signed
  distance to the zone boundary (positive: the point lies inside the zone that far
  from its edge; negative: it lies outside, that far from the zone). Reported with the
  LPS point where it occurs, area-weighted percentiles and a 1 mm histogram.
* **Critical structures** — volume (ml) of each structure inside the zone, from
  sub-samples of its cells (≤ 1 mm by default), partial-volume weighted.
* **Heat sink** — for heat-based zones, vessels (category ``vessel``) whose local
  diameter is ≥ 3 mm and whose wall comes within 10 mm of the zone. The diameter is
  ``2·EDT − h/2`` on the vessel's centreline (local maxima of the Euclidean distance
  transform ``EDT`` of the vessel mask between voxel centres, ``h`` the smallest voxel
  spacing); this is within ±h/2 of the diameter of the voxelised vessel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from ir_planner.core.catalog import Category
from ir_planner.core.errors import GeometryError, InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.progress import ProgressCallback, report
from ir_planner.core.volume import ImageVolume
from ir_planner.planning.ablation.zones import HeatZone, Zone

__all__ = [
    "SHELLS_MM",
    "TumourModel",
    "CriticalModel",
    "AblationMetrics",
    "evaluate",
    "margins",
]

SHELLS_MM = (5.0, 10.0)
HEAT_SINK_DIAMETER_MM = 3.0
HEAT_SINK_DISTANCE_MM = 10.0


def _pv_weight(sd: NDArray[np.float64], h: float) -> NDArray[np.float64]:
    """Partial-volume weight of a sample of size h with signed distance sd (inside > 0)."""
    return np.clip(0.5 + sd / h, 0.0, 1.0)


def _sub_offsets(n: int) -> NDArray[np.float64]:
    """Sub-cell centre offsets in index units for n sub-cells per cell."""
    return (np.arange(n) + 0.5) / n - 0.5


@dataclass
class TumourModel:
    """A tumour sampled for fast zone evaluation (built once, evaluated many times).

    Attributes
    ----------
    points_lps : numpy.ndarray, shape (N, 3)
        Fine samples of the tumour grown by the largest shell (``SHELLS_MM[-1]``).
    point_volume_mm3 : numpy.ndarray, shape (N,)
        Volume each sample stands for (samples farther than ``FINE_BAND_MM`` outside the
        tumour stand for 2 × 2 × 2 fine cells).
    point_size_mm : numpy.ndarray, shape (N,)
        Edge length of each sample's cell (for partial-volume weights).
    tumour_weight : numpy.ndarray, shape (N,)
        Share of each sample inside the tumour (0–1).
    distance_mm : numpy.ndarray, shape (N,)
        Distance of each sample outside the tumour (0 inside).
    surface_lps : numpy.ndarray, shape (M, 3)
        Samples of the tumour surface.
    surface_area_mm2 : numpy.ndarray, shape (M,)
        Area each surface sample stands for.
    spacing_mm : float
        Sample spacing (≤ 0.5 mm).
    name : str
        Structure name.
    """

    points_lps: NDArray[np.float64]
    point_volume_mm3: NDArray[np.float64]
    point_size_mm: NDArray[np.float64]
    tumour_weight: NDArray[np.float64]
    distance_mm: NDArray[np.float64]
    surface_lps: NDArray[np.float64]
    surface_area_mm2: NDArray[np.float64]
    spacing_mm: float
    name: str = "tumour"
    _shell_w: dict[float, NDArray[np.float64]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.surface_lps) == 0 or float(np.sum(self.tumour_weight)) <= 0:
            raise InputError(f"tumour {self.name!r} is empty (no voxels); segment it first")
        self.tumour_weight = self.tumour_weight * self.point_volume_mm3
        for s in SHELLS_MM:
            self._shell_w[s] = self.point_volume_mm3 * np.clip(
                0.5 + (s - self.distance_mm) / self.point_size_mm, 0.0, 1.0)

    @property
    def volume_ml(self) -> float:
        """Tumour volume in ml."""
        return float(np.sum(self.tumour_weight) / 1000.0)

    @property
    def centre_lps(self) -> NDArray[np.float64]:
        """Volume centroid (LPS, mm)."""
        w = self.tumour_weight
        return np.asarray((self.points_lps * w[:, None]).sum(axis=0) / w.sum())

    @property
    def radius_mm(self) -> float:
        """Radius of the sphere around the centroid enclosing the tumour surface."""
        return float(np.max(np.linalg.norm(self.surface_lps - self.centre_lps, axis=1)))

    def shell_weight(self, shell_mm: float) -> NDArray[np.float64]:
        """Per-sample volume (mm³) of the tumour grown by ``shell_mm`` (one of SHELLS_MM)."""
        return self._shell_w[float(shell_mm)]

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_mask(cls, mask: NDArray[Any], grid: ImageVolume, *, name: str = "tumour",
                  spacing_mm: float = 0.5) -> "TumourModel":
        """Sample a tumour given as a boolean mask ``[k, j, i]`` on ``grid``.

        Raises
        ------
        InputError
            If the mask is empty.
        GeometryError
            If shapes differ or the grid is sheared.
        """
        m = np.asarray(mask, dtype=bool)
        if m.shape != grid.shape:
            raise GeometryError(f"tumour mask shape {m.shape} differs from its grid {grid.shape}")
        if not m.any():
            raise InputError(f"tumour {name!r} is empty (no voxels); segment it first")
        if not grid.is_orthogonal():
            raise GeometryError("tumour grid is sheared; resample it to an orthogonal grid first")
        sp_ijk = grid.spacing_mm
        n_ijk = np.maximum(1, np.ceil(sp_ijk / spacing_mm - 1e-9)).astype(int)
        fine_ijk = sp_ijk / n_ijk
        h = float(fine_ijk.max())
        reach = SHELLS_MM[-1] + h
        pad_ijk = np.ceil(reach / sp_ijk).astype(int) + 1
        kk, jj, ii = np.nonzero(m)
        lo = np.array([ii.min(), jj.min(), kk.min()]) - pad_ijk
        hi = np.array([ii.max(), jj.max(), kk.max()]) + pad_ijk
        size = hi - lo + 1
        local = np.zeros((size[2], size[1], size[0]), dtype=bool)
        # copy the part of the mask inside the padded box (the box may leave the grid)
        src_lo = np.maximum(lo, 0)
        src_hi = np.minimum(hi, np.array(grid.shape_ijk) - 1)
        dst = src_lo - lo
        local[dst[2]:dst[2] + src_hi[2] - src_lo[2] + 1,
              dst[1]:dst[1] + src_hi[1] - src_lo[1] + 1,
              dst[0]:dst[0] + src_hi[0] - src_lo[0] + 1] = m[
            src_lo[2]:src_hi[2] + 1, src_lo[1]:src_hi[1] + 1, src_lo[0]:src_hi[0] + 1]
        fine = local
        for axis, n in zip((2, 1, 0), n_ijk):
            fine = np.repeat(fine, n, axis=axis)
        if fine.size > 60_000_000:
            raise InputError(f"tumour {name!r} is too large for fine sampling "
                             f"({fine.size} samples)")
        edt = ndimage.distance_transform_edt(~fine, sampling=(fine_ijk[2], fine_ijk[1],
                                                              fine_ijk[0]))
        # distance from a sub-cell centre to the nearest tumour sub-cell's face
        dist = np.where(fine, 0.0, np.maximum(edt - 0.5 * h, 0.0))

        def to_lps(fk: NDArray[np.float64], fj: NDArray[np.float64], fi: NDArray[np.float64]
                   ) -> NDArray[np.float64]:
            # fine index f → label index: lo + (f + 0.5) / n − 0.5 (exact for block means too)
            ijk = np.column_stack([lo[0] + (fi + 0.5) / n_ijk[0] - 0.5,
                                   lo[1] + (fj + 0.5) / n_ijk[1] - 0.5,
                                   lo[2] + (fk + 0.5) / n_ijk[2] - 0.5])
            return grid.index_to_world(ijk)

        pts, vol, size, tw, dd = _assemble(dist, fine.astype(float), to_lps,
                                           float(np.prod(fine_ijk)), h, reach)
        surface, area = _cell_surface(local, lo, grid, n_ijk)
        return cls(pts, vol, size, tw, dd, surface, area, h, name)

    @classmethod
    def from_labels(cls, labels: LabelMap, name: str, *, spacing_mm: float = 0.5
                    ) -> "TumourModel":
        """Sample structure ``name`` of a label map."""
        names = [s.name for s in labels.structures]
        if name not in names:
            raise InputError(f"tumour structure {name!r} is not in the label map; "
                             f"structures: {', '.join(names) or '(none)'}")
        return cls.from_mask(labels.mask(name), labels.grid, name=name, spacing_mm=spacing_mm)

    @classmethod
    def from_sdf(cls, sdf: Callable[[NDArray[np.float64]], NDArray[np.float64]],
                 bounds_lps: tuple[ArrayLike, ArrayLike], surface_lps: ArrayLike,
                 surface_area_mm2: ArrayLike, *, name: str = "tumour",
                 spacing_mm: float = 0.5) -> "TumourModel":
        """Sample an analytic tumour.

        Parameters
        ----------
        sdf : callable
            Points (N, 3) → signed distance in mm, **negative inside** the tumour.
        bounds_lps : (min, max)
            The tumour's bounding box.
        surface_lps, surface_area_mm2 : array_like
            Surface samples and the area each stands for.
        """
        h = float(spacing_mm)
        reach = SHELLS_MM[-1] + h
        lo = np.asarray(bounds_lps[0], dtype=float) - reach
        hi = np.asarray(bounds_lps[1], dtype=float) + reach
        n = np.ceil((hi - lo) / h).astype(int)
        # dense lattice indexed [k, j, i] ↔ (z, y, x), like a label grid
        gz, gy, gx = np.meshgrid(*[lo[c] + h / 2 + h * np.arange(n[c]) for c in (2, 1, 0)],
                                 indexing="ij")
        d = np.asarray(sdf(np.column_stack([gx.ravel(), gy.ravel(), gz.ravel()])),
                       dtype=float).reshape(gz.shape)

        def to_lps(fk: NDArray[np.float64], fj: NDArray[np.float64], fi: NDArray[np.float64]
                   ) -> NDArray[np.float64]:
            return np.column_stack([lo[0] + h / 2 + h * fi, lo[1] + h / 2 + h * fj,
                                    lo[2] + h / 2 + h * fk])

        pts, vol, size, tw, dd = _assemble(np.maximum(d, 0.0), np.clip(0.5 - d / h, 0.0, 1.0),
                                           to_lps, h ** 3, h, reach)
        return cls(pts, vol, size, tw, dd, np.asarray(surface_lps, dtype=float).reshape(-1, 3),
                   np.asarray(surface_area_mm2, dtype=float).reshape(-1), h, name)

    @classmethod
    def sphere(cls, centre_lps: ArrayLike, radius_mm: float, *, spacing_mm: float = 0.5,
               name: str = "tumour") -> "TumourModel":
        """An analytic spherical tumour (tests, benchmarks)."""
        c = np.asarray(centre_lps, dtype=float).reshape(3)
        r = float(radius_mm)
        n = max(200, int(4 * math.pi * r * r / (spacing_mm * spacing_mm)))
        surf = c + r * _fibonacci_sphere(n)
        area = np.full(n, 4 * math.pi * r * r / n)

        def sdf(p: NDArray[np.float64]) -> NDArray[np.float64]:
            return np.linalg.norm(p - c, axis=1) - r

        return cls.from_sdf(sdf, (c - r, c + r), surf, area, name=name, spacing_mm=spacing_mm)

    @classmethod
    def spheroid(cls, centre_lps: ArrayLike, axis_lps: ArrayLike, half_length_mm: float,
                 radius_mm: float, *, spacing_mm: float = 0.5, name: str = "tumour"
                 ) -> "TumourModel":
        """An analytic ellipsoid-of-revolution tumour (tests, benchmarks)."""
        from ir_planner.planning.ablation.zones import EllipsoidZone

        c = np.asarray(centre_lps, dtype=float).reshape(3)
        u = np.asarray(axis_lps, dtype=float).reshape(3)
        u = u / np.linalg.norm(u)
        e = EllipsoidZone(c, u, float(half_length_mm), float(radius_mm))
        a, b = float(half_length_mm), float(radius_mm)
        # surface samples: uniform in the parameter sphere, areas from the local Jacobian
        n = max(400, int(4 * math.pi * max(a, b) ** 2 / (spacing_mm * spacing_mm)))
        unit = _fibonacci_sphere(n)
        v1 = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
        v1 /= np.linalg.norm(v1)
        v2 = np.cross(u, v1)
        basis = np.stack([u, v1, v2], axis=1)  # columns: local → LPS
        local = unit * np.array([a, b, b])
        surf = c + local @ basis.T
        # area element of the map sphere → ellipsoid at each point
        jac = np.sqrt((b * b * unit[:, 0]) ** 2 + (a * b * unit[:, 1]) ** 2
                      + (a * b * unit[:, 2]) ** 2)
        area = jac * (4 * math.pi / n)

        def sdf(p: NDArray[np.float64]) -> NDArray[np.float64]:
            return -e.signed_distance(p)

        lo, hi = e.bounds_lps()
        return cls.from_sdf(sdf, (lo, hi), surf, area, name=name, spacing_mm=spacing_mm)


#: Samples within this distance (mm) outside the tumour stay fine; farther ones are
#: merged into 2 × 2 × 2 blocks (coverage of the 5/10 mm shells is partial-volume
#: weighted, so the coarser outer samples cost little accuracy and save 3–4× time).
FINE_BAND_MM = 2.0


def _assemble(dist: NDArray[np.float64], tumour_w: NDArray[np.float64],
              to_lps: Callable[..., NDArray[np.float64]], cell_mm3: float, h: float,
              reach: float) -> tuple[NDArray[np.float64], ...]:
    """Fine samples near the tumour, 2×2×2 blocks farther out (an exact partition)."""
    pad = [(0, int(s % 2)) for s in dist.shape]
    dist_p = np.pad(dist, pad, constant_values=np.inf)
    tw_p = np.pad(tumour_w, pad)
    bk, bj, bi = (s // 2 for s in dist_p.shape)
    blocks_d = dist_p.reshape(bk, 2, bj, 2, bi, 2)
    near = (blocks_d.min(axis=(1, 3, 5)) <= FINE_BAND_MM) | (
        tw_p.reshape(bk, 2, bj, 2, bi, 2).max(axis=(1, 3, 5)) > 0)
    fine_sel = np.repeat(np.repeat(np.repeat(near, 2, 0), 2, 1), 2, 2) & (dist_p <= reach)
    fk, fj, fi = np.nonzero(fine_sel)
    fine_pts = to_lps(fk.astype(float), fj.astype(float), fi.astype(float))
    finite = np.where(np.isfinite(blocks_d), blocks_d, np.nan)
    with np.errstate(invalid="ignore"):
        coarse_d = np.nanmean(finite, axis=(1, 3, 5))
    coarse_sel = ~near & np.isfinite(coarse_d) & (coarse_d <= reach)
    ck, cj, ci = np.nonzero(coarse_sel)
    coarse_pts = to_lps(2.0 * ck + 0.5, 2.0 * cj + 0.5, 2.0 * ci + 0.5)
    nf, nc = len(fk), len(ck)
    pts = np.concatenate([fine_pts, coarse_pts]) if nc else fine_pts
    vol = np.concatenate([np.full(nf, cell_mm3), np.full(nc, 8.0 * cell_mm3)])
    size = np.concatenate([np.full(nf, h), np.full(nc, 2.0 * h)])
    tw = np.concatenate([tw_p[fine_sel], np.zeros(nc)])
    dd = np.concatenate([dist_p[fine_sel], coarse_d[coarse_sel]])
    return pts, vol, size, tw, dd


def _fibonacci_sphere(n: int) -> NDArray[np.float64]:
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = math.pi * (1 + 5 ** 0.5) * k
    return np.column_stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi),
                            np.cos(phi)])


def _cell_surface(local: NDArray[np.bool_], lo: NDArray[np.int_], grid: ImageVolume,
                  n_ijk: NDArray[np.int_]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Samples (LPS) and areas (mm²) of the boundary faces of a cell union."""
    sp = grid.spacing_mm
    pts_idx = []
    areas = []
    padded = np.pad(local, 1)
    for axis_ijk in range(3):
        arr_axis = 2 - axis_ijk
        others = [a for a in range(3) if a != axis_ijk]
        sub = [_sub_offsets(n_ijk[o]) for o in others]
        grid_o = np.stack(np.meshgrid(*sub, indexing="ij"), axis=-1).reshape(-1, 2)
        area = float(sp[others[0]] * sp[others[1]] / (n_ijk[others[0]] * n_ijk[others[1]]))
        for sign in (-1, 1):
            neighbour = np.roll(padded, -sign, axis=arr_axis)
            faces = padded & ~neighbour
            fk, fj, fi = np.nonzero(faces[1:-1, 1:-1, 1:-1])
            if len(fi) == 0:
                continue
            cells = np.column_stack([fi, fj, fk]).astype(float) + lo
            cells[:, axis_ijk] += 0.5 * sign
            rep = np.repeat(cells, len(grid_o), axis=0)
            offs = np.tile(grid_o, (len(cells), 1))
            rep[:, others[0]] += offs[:, 0]
            rep[:, others[1]] += offs[:, 1]
            pts_idx.append(rep)
            areas.append(np.full(len(rep), area))
    idx = np.concatenate(pts_idx)
    return grid.index_to_world(idx), np.concatenate(areas)


# -- critical structures ---------------------------------------------------------------------
@dataclass
class CriticalModel:
    """Samples of the non-target structures near a tumour, and vessel centrelines.

    Attributes
    ----------
    names : list of str
        Structure names (index = ``structure_index`` values).
    forbidden : list of bool
        Whether each structure counts as critical (forbidden for needles).
    points_lps : numpy.ndarray, shape (N, 3)
        Sub-cell samples of the structures' cells within the region.
    structure_index : numpy.ndarray, shape (N,)
    point_volume_mm3 : numpy.ndarray, shape (N,)
    spacing_mm : float
        Largest sub-sample spacing (for partial-volume weights).
    vessel_points_lps, vessel_radius_mm, vessel_index : numpy.ndarray
        Centreline samples of vessels (local EDT maxima) with radius ≥ 1.5 mm.
    """

    names: list[str]
    forbidden: list[bool]
    points_lps: NDArray[np.float64]
    structure_index: NDArray[np.int_]
    point_volume_mm3: NDArray[np.float64]
    spacing_mm: float
    vessel_points_lps: NDArray[np.float64]
    vessel_radius_mm: NDArray[np.float64]
    vessel_index: NDArray[np.int_]

    @classmethod
    def empty(cls) -> "CriticalModel":
        """No structures."""
        z3 = np.zeros((0, 3))
        zi = np.zeros(0, dtype=int)
        return cls([], [], z3, zi, np.zeros(0), 1.0, z3, np.zeros(0), zi)

    @classmethod
    def from_labels(cls, labels: LabelMap, *, exclude: Sequence[str] = (),
                    centre_lps: ArrayLike, radius_mm: float, spacing_mm: float = 1.0,
                    progress: ProgressCallback | None = None) -> "CriticalModel":
        """Sample every structure (except ``exclude``) within ``radius_mm`` of ``centre_lps``."""
        grid = labels.grid
        if not grid.is_orthogonal():
            raise GeometryError("label grid is sheared; resample it to an orthogonal grid first")
        c = np.asarray(centre_lps, dtype=float).reshape(3)
        sp = grid.spacing_mm
        corners = c + radius_mm * np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1)
                                            for z in (-1, 1)])
        ijk = grid.world_to_index(corners)
        lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
        hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int), np.array(grid.shape_ijk) - 1)
        n_ijk = np.maximum(1, np.ceil(sp / spacing_mm - 1e-9)).astype(int)
        fine_sp = sp / n_ijk
        sub = np.stack(np.meshgrid(*[_sub_offsets(n) for n in n_ijk], indexing="ij"),
                       axis=-1).reshape(-1, 3)
        names, forbidden = [], []
        pts, sidx, vols = [], [], []
        vpts, vrad, vidx = [], [], []
        structs = [s for s in labels.structures if s.name not in set(exclude)]
        h_min = float(sp.min())
        for n, s in enumerate(structs):
            report(progress, n / max(len(structs), 1), f"sampling {s.name}")
            if np.any(hi < lo):
                break
            layer = labels.layers[s.layer][lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1]
            m = layer == s.label
            if not m.any():
                continue
            index = len(names)
            names.append(s.name)
            forbidden.append(bool(s.forbidden))
            kk, jj, ii = np.nonzero(m)
            cells = np.column_stack([ii, jj, kk]).astype(float) + lo
            inside = np.linalg.norm(grid.index_to_world(cells) - c, axis=1) <= radius_mm
            cells = cells[inside]
            if len(cells):
                allp = (cells[:, None, :] + sub[None]).reshape(-1, 3)
                pts.append(grid.index_to_world(allp))
                sidx.append(np.full(len(allp), index))
                vols.append(np.full(len(allp), float(np.prod(fine_sp))))
            if s.category == Category.VESSEL:
                edt = ndimage.distance_transform_edt(np.pad(m, 1, mode="edge"),
                                                     sampling=(sp[2], sp[1], sp[0]))[1:-1, 1:-1,
                                                                                    1:-1]
                ridge = m & (edt >= ndimage.maximum_filter(edt, size=3))
                # the EDT of a centre is its distance to the nearest outside centre; the
                # voxelised vessel's radius is EDT − h/2 on an odd-width centreline and
                # EDT on an even one (medial axis between centres): take the middle
                radius = edt - 0.25 * h_min
                ridge &= radius >= 0.5 * HEAT_SINK_DIAMETER_MM
                rk, rj, ri = np.nonzero(ridge)
                if len(ri):
                    vpts.append(grid.index_to_world(np.column_stack([ri, rj, rk]) + lo))
                    vrad.append(radius[ridge])
                    vidx.append(np.full(len(ri), index))
        report(progress, 1.0, "structures sampled")
        if not pts:
            out = cls.empty()
            out.names, out.forbidden = names, forbidden
        else:
            out = cls(names, forbidden, np.concatenate(pts), np.concatenate(sidx),
                      np.concatenate(vols), float(fine_sp.max()),
                      np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=int))
        if vpts:
            out.vessel_points_lps = np.concatenate(vpts)
            out.vessel_radius_mm = np.concatenate(vrad)
            out.vessel_index = np.concatenate(vidx)
        return out

    def volumes_inside(self, zone: Zone) -> dict[str, float]:
        """Volume (ml) of each structure inside the zone (only structures with > 0)."""
        if len(self.points_lps) == 0:
            return {}
        lo, hi = zone.bounds_lps()
        near = np.all((self.points_lps >= lo - self.spacing_mm)
                      & (self.points_lps <= hi + self.spacing_mm), axis=1)
        if not near.any():
            return {}
        sd = zone.signed_distance(self.points_lps[near], exact=False)
        w = _pv_weight(sd, self.spacing_mm) * self.point_volume_mm3[near]
        vol = np.bincount(self.structure_index[near], weights=w, minlength=len(self.names))
        return {self.names[i]: float(v / 1000.0) for i, v in enumerate(vol) if v > 0}

    def critical_damage_ml(self, zone: Zone) -> float:
        """Total volume (ml) of forbidden structures inside the zone."""
        vols = self.volumes_inside(zone)
        return float(sum(v for k, v in vols.items() if self.forbidden[self.names.index(k)]))

    def heat_sink(self, zone: Zone) -> list[dict[str, Any]]:
        """Vessels ≥ 3 mm in diameter whose wall lies within 10 mm of the zone."""
        if len(self.vessel_points_lps) == 0:
            return []
        sd = zone.signed_distance(self.vessel_points_lps, exact=False)
        wall_gap = -sd - self.vessel_radius_mm  # ≤ 0: the vessel reaches into the zone
        hit = wall_gap <= HEAT_SINK_DISTANCE_MM
        out = []
        for vi in np.unique(self.vessel_index[hit]):
            sel = hit & (self.vessel_index == vi)
            j = int(np.argmin(np.where(sel, wall_gap, np.inf)))
            out.append({
                "structure": self.names[int(vi)],
                "diameter_mm": round(float(2 * self.vessel_radius_mm[sel].max()), 1),
                "distance_to_zone_mm": round(max(float(wall_gap[j]), 0.0), 1),
                "closest_point_lps": [round(float(v), 2) for v in self.vessel_points_lps[j]],
            })
        return out


# -- metrics ---------------------------------------------------------------------------------------
@dataclass
class AblationMetrics:
    """Metrics of one zone against one tumour (see the module docstring)."""

    coverage_pct: float
    shell_coverage_pct: dict[str, float]
    min_margin_mm: float
    min_margin_point_lps: tuple[float, float, float]
    margin_percentiles_mm: dict[str, float]
    margin_histogram: dict[str, list[float]]
    zone_volume_ml: float
    tumour_volume_ml: float
    structure_volumes_ml: dict[str, float] = field(default_factory=dict)
    critical_damage_ml: float = 0.0
    heat_sink: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (keys carry units)."""
        return {
            "coverage_pct": round(self.coverage_pct, 2),
            "shell_coverage_pct": {k: round(v, 2) for k, v in self.shell_coverage_pct.items()},
            "min_margin_mm": round(self.min_margin_mm, 2),
            "min_margin_point_lps": [round(v, 2) for v in self.min_margin_point_lps],
            "margin_percentiles_mm": {k: round(v, 2) for k, v in
                                      self.margin_percentiles_mm.items()},
            "margin_histogram": self.margin_histogram,
            "zone_volume_ml": round(self.zone_volume_ml, 2),
            "tumour_volume_ml": round(self.tumour_volume_ml, 2),
            "structure_volumes_ml": {k: round(v, 3) for k, v in self.structure_volumes_ml.items()},
            "critical_damage_ml": round(self.critical_damage_ml, 3),
            "heat_sink": self.heat_sink,
            "warnings": list(self.warnings),
        }


def margins(zone: Zone, tumour: TumourModel, *, exact: bool = True
            ) -> tuple[float, NDArray[np.float64], NDArray[np.float64]]:
    """Signed margins (mm) at every tumour-surface sample.

    Returns
    -------
    min_margin_mm, point_lps, margins_mm
    """
    sd = zone.signed_distance(tumour.surface_lps, exact=exact)
    j = int(np.argmin(sd))
    return float(sd[j]), tumour.surface_lps[j], sd


def _inside_weights(zone: Zone, tumour: TumourModel) -> NDArray[np.float64]:
    """Partial-volume share of each tumour sample inside the zone."""
    sd = zone.signed_distance(tumour.points_lps, exact=False)
    return np.clip(0.5 + sd / tumour.point_size_mm, 0.0, 1.0)


def _weighted_percentiles(values: NDArray[np.float64], weights: NDArray[np.float64],
                          qs: Sequence[float]) -> list[float]:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cw = np.cumsum(w) - 0.5 * w
    cw /= w.sum()
    return [float(np.interp(q / 100.0, cw, v)) for q in qs]


def _zone_volume_ml(zone: Zone) -> float:
    if isinstance(zone, HeatZone) and len(zone.ellipsoids) == 1:
        return zone.ellipsoids[0].volume_ml
    lo, hi = zone.bounds_lps()
    h = 0.5
    axes = [np.arange(lo[c] + h / 2, hi[c], h) for c in range(3)]
    total = 0.0
    gx, gy = np.meshgrid(axes[0], axes[1], indexing="ij")
    for z in axes[2]:
        pts = np.column_stack([gx.ravel(), gy.ravel(), np.full(gx.size, z)])
        total += float(_pv_weight(zone.signed_distance(pts, exact=False), h).sum())
    return total * h ** 3 / 1000.0


def evaluate(zone: Zone, tumour: TumourModel, critical: CriticalModel | None = None, *,
             histogram_bin_mm: float = 1.0) -> AblationMetrics:
    """All metrics of ``zone`` against ``tumour`` (and ``critical`` structures if given).

    Raises
    ------
    InputError
        If ``tumour`` is None (a zone without a tumour has no coverage or margin).
    """
    if tumour is None:
        raise InputError("cannot evaluate an ablation zone without a tumour: give the plan a "
                         "target structure (the tumour label) first")
    inside = _inside_weights(zone, tumour)
    tw = tumour.tumour_weight
    coverage = 100.0 * float((inside * tw).sum() / tw.sum())
    shells = {}
    for s in SHELLS_MM:
        w = tumour.shell_weight(s)
        shells[f"{s:g}mm"] = 100.0 * float((inside * w).sum() / w.sum())
    mmin, where, msd = margins(zone, tumour)
    qs = (0, 5, 25, 50, 75, 95, 100)
    pct = _weighted_percentiles(msd, tumour.surface_area_mm2, qs)
    lo_edge = math.floor(msd.min() / histogram_bin_mm) * histogram_bin_mm
    hi_edge = math.ceil(msd.max() / histogram_bin_mm + 1e-9) * histogram_bin_mm
    edges = np.arange(lo_edge, hi_edge + histogram_bin_mm / 2, histogram_bin_mm)
    if len(edges) < 2:
        edges = np.array([lo_edge, lo_edge + histogram_bin_mm])
    counts, _ = np.histogram(msd, bins=edges, weights=tumour.surface_area_mm2)
    total_area = float(tumour.surface_area_mm2.sum())
    metrics = AblationMetrics(
        coverage_pct=coverage, shell_coverage_pct=shells, min_margin_mm=mmin,
        min_margin_point_lps=tuple(float(v) for v in where),  # type: ignore[arg-type]
        margin_percentiles_mm={f"p{q}": v for q, v in zip(qs, pct)},
        margin_histogram={"edges_mm": [round(float(e), 3) for e in edges],
                          "area_pct": [round(100.0 * float(c) / total_area, 3) for c in counts]},
        zone_volume_ml=_zone_volume_ml(zone), tumour_volume_ml=tumour.volume_ml,
    )
    if critical is not None:
        metrics.structure_volumes_ml = critical.volumes_inside(zone)
        metrics.critical_damage_ml = float(sum(
            v for k, v in metrics.structure_volumes_ml.items()
            if critical.forbidden[critical.names.index(k)]))
        if isinstance(zone, HeatZone):
            metrics.heat_sink = critical.heat_sink(zone)
            for hs in metrics.heat_sink:
                metrics.warnings.append(
                    f"heat sink: {hs['structure']} ({hs['diameter_mm']:.1f} mm) lies "
                    f"{hs['distance_to_zone_mm']:.1f} mm from the zone; the zone may be smaller "
                    "on that side")
    if mmin < 0:
        metrics.warnings.append(f"tumour extends {-mmin:.1f} mm outside the zone")
    elif mmin < 5.0:
        metrics.warnings.append(f"minimal margin {mmin:.1f} mm is below 5 mm")
    return metrics
