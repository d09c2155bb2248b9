"""Synthetic planning cases and brute-force truth shared by the planning tests."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume, affine_from_geometry


def rotation(axis: str, deg: float) -> NDArray[np.float64]:
    """Rotation matrix about x, y or z."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    m = {"x": [[1, 0, 0], [0, c, -s], [0, s, c]], "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
         "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
    return np.array(m, dtype=float)


def make_grid(shape_ijk: tuple[int, int, int], spacing: tuple[float, float, float],
              direction: NDArray[np.float64] | None = None,
              origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> ImageVolume:
    """An empty CT (−1000 HU) on the given grid."""
    d = np.eye(3) if direction is None else direction
    affine = affine_from_geometry(origin, spacing, d)
    ni, nj, nk = shape_ijk
    return ImageVolume(np.full((nk, nj, ni), -1000.0, dtype=np.float32), affine, modality="CT")


def cell_centres_lps(grid: ImageVolume, mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """LPS centres of the True cells of ``mask`` [k, j, i]."""
    kji = np.argwhere(mask)
    return grid.index_to_world(kji[:, ::-1].astype(float))


def brute_force_clearance(grid: ImageVolume, mask: NDArray[np.bool_], a_lps: NDArray[np.float64],
                          b_lps: NDArray[np.float64], *, step_mm: float = 0.05) -> float:
    """Axis distance (mm) from segment a→b to the union of the mask's cells.

    Dense sampling of the segment (step ``step_mm``) and the exact point-to-cell
    distance, each cell an oriented box; overestimates the truth by ≤ step/2.
    """
    a = np.asarray(a_lps, float)
    b = np.asarray(b_lps, float)
    n = int(np.ceil(np.linalg.norm(b - a) / step_mm)) + 1
    pts = a + np.linspace(0, 1, n)[:, None] * (b - a)
    # Work in index-scaled space (rigid for orthonormal grids): cells are boxes.
    inv = grid.lps_to_index
    sp = grid.spacing_mm
    pq = (pts @ inv[:3, :3].T + inv[:3, 3]) * sp
    kji = np.argwhere(mask)
    cq = kji[:, ::-1] * sp
    half = sp / 2
    r_cell = float(np.linalg.norm(sp) / 2)
    # Only cells whose centre is within (smallest centre-to-segment distance + cell
    # diagonal) of the segment can hold the closest point.
    aq, bq = pq[0], pq[-1]
    dd = bq - aq
    t = np.clip((cq - aq) @ dd / max(float(dd @ dd), 1e-12), 0, 1)
    dc = np.linalg.norm(cq - (aq + t[:, None] * dd), axis=1)
    cq = cq[dc <= dc.min() + 2 * r_cell + 1e-9]
    best = np.inf
    for s in range(0, len(pq), 64):
        block = pq[s:s + 64]
        g = np.maximum(np.maximum(cq[None] - half - block[:, None], block[:, None] - cq[None] - half),
                       0)
        best = min(best, float(np.sqrt((g * g).sum(-1)).min()))
    return best


def sphere_case(*, direction: NDArray[np.float64] | None = None,
                spacing: tuple[float, float, float] = (1.0, 1.0, 2.0),
                shape: tuple[int, int, int] = (60, 60, 40)) -> tuple[ImageVolume, LabelMap]:
    """A body block (CT 40 HU) with a spherical 'aorta' (vessel) and a box 'liver'."""
    grid = make_grid(shape, spacing, direction)
    ni, nj, nk = shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    body = (i > 3) & (i < ni - 4) & (j > 3) & (j < nj - 4)
    img = np.where(body, 40.0, -1000.0).astype(np.float32)
    grid = grid.with_array(img)
    # physical mm relative to the grid centre (index space scaled)
    ci, cj, ck = (ni - 1) / 2, (nj - 1) / 2, (nk - 1) / 2
    x = (i - ci) * spacing[0]
    y = (j - cj) * spacing[1]
    z = (k - ck) * spacing[2]
    aorta = (x - 8) ** 2 + (y - 0) ** 2 + (z - 0) ** 2 <= 6.0 ** 2
    liver = (np.abs(x + 12) <= 8) & (np.abs(y) <= 10) & (np.abs(z) <= 12)
    labels = LabelMap.from_masks([("aorta", aorta), ("liver", liver)], grid)
    return grid, labels


class ExactOracle:
    """Exact axis distance (mm) from a segment to a structure, independent of the
    engine's kernels: the structure's boundary cells (scipy erosion; cells on the
    grid edge count), those whose centre lies within the smallest centre distance +
    one cell diagonal of the segment, and the exact segment-to-box distance of each
    (:func:`ir_planner.planning.geometry.segment_box_distance`, itself tested against
    dense sampling)."""

    def __init__(self, grid: ImageVolume, labels: LabelMap) -> None:
        from scipy import ndimage as ndi

        from ir_planner.planning.geometry import GridFrame

        self.frame = GridFrame.from_volume(grid)
        self.labels = labels
        self._cells: dict[str, NDArray[np.float64]] = {}
        self._masks: dict[str, NDArray[np.bool_]] = {}
        self._ndi = ndi

    def mask(self, name: str) -> NDArray[np.bool_]:
        if name not in self._masks:
            self._masks[name] = self.labels.mask(name)
        return self._masks[name]

    def cells_q(self, name: str) -> NDArray[np.float64]:
        if name not in self._cells:
            m = self.mask(name)
            edge = m & ~self._ndi.binary_erosion(m, border_value=0)
            self._cells[name] = np.argwhere(edge)[:, ::-1] * self.frame.spacing_mm
        return self._cells[name]

    def distance(self, name: str, a_lps: NDArray[np.float64], b_lps: NDArray[np.float64]
                 ) -> float:
        from ir_planner.planning.geometry import segment_box_distance

        cq = self.cells_q(name)
        if not len(cq):
            return float("inf")
        a = self.frame.lps_to_q(np.asarray(a_lps, float))
        b = self.frame.lps_to_q(np.asarray(b_lps, float))
        sp = self.frame.spacing_mm
        m = self.mask(name)
        shape = np.asarray(m.shape[::-1])
        for p in (a, b):  # an endpoint inside a cell: distance 0
            u = p / sp
            ijk = np.floor(u + 0.5).astype(int)
            if np.all((u >= -0.5) & (u <= shape - 0.5)):
                ijk = np.minimum(ijk, shape - 1)
                if m[ijk[2], ijk[1], ijk[0]]:
                    return 0.0
        d = b - a
        t = np.clip((cq - a) @ d / max(float(d @ d), 1e-12), 0.0, 1.0)
        dc = np.linalg.norm(cq - (a + t[:, None] * d), axis=1)
        near = cq[dc <= dc.min() + 2.0 * float(np.linalg.norm(sp) / 2) + 1e-9]
        dist, _ = segment_box_distance(a, b, near - sp / 2, near + sp / 2)
        return float(np.min(dist))
