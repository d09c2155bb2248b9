"""Body outline and skin surface (``ir_planner.planning.body``).

Analytic phantoms in LPS (a body cylinder along the grid's slice axis, cut by the first
and last slice, lying on a thin couch), a reference scipy implementation (the former
code) for exactness, the real CT for "the CT result is unchanged", MR-like phantoms for
the automatic threshold, and the error cases.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage as ndi

from ir_planner.core.errors import InputError
from ir_planner.core.labels import LabelMap
from ir_planner.core.volume import ImageVolume, affine_from_geometry
from ir_planner.planning.body import (
    auto_threshold,
    body_mask,
    looks_like_hounsfield,
    skin_points,
)

from .synthetic import rotation

R_MM = 40.0  # body radius
FLIP = np.diag([-1.0, -1.0, 1.0])  # the usual NIfTI-derived CT orientation in LPS


# -- reference: scipy (the former implementation, edge voxel repeated outside) ------------------------------------------
def reference_body(arr: NDArray[np.generic], thr: float, any_mask: NDArray[np.bool_],
                   step: int = 1) -> NDArray[np.bool_]:
    small = arr[:, ::step, ::step] > thr
    # opening with the edge voxel repeated outside the array (no bevel at the image edge)
    cross = ndi.generate_binary_structure(3, 1)
    for op in (ndi.binary_erosion, ndi.binary_erosion, ndi.binary_dilation,
               ndi.binary_dilation):
        small = op(np.pad(small, 1, mode="edge"), structure=cross)[1:-1, 1:-1, 1:-1]
    lab, _ = ndi.label(small)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    out = ndi.binary_fill_holes(lab == int(np.argmax(sizes)))
    for k in range(out.shape[0]):
        out[k] = ndi.binary_fill_holes(out[k])
    if step > 1:
        out = np.repeat(np.repeat(out, step, axis=1), step, axis=2)[:, :arr.shape[1],
                                                                    :arr.shape[2]]
    return out | any_mask


def reference_skin(mask: NDArray[np.bool_], grid: ImageVolume, spacing_mm: float = 2.0
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    from skimage.measure import marching_cubes

    step_size = 2 if float(np.min(grid.spacing_mm)) < 1.0 else 1
    verts, faces, _, _ = marching_cubes(mask.astype(np.uint8), level=0.5,
                                        spacing=tuple(float(s) for s in grid.spacing_mm[::-1]),
                                        step_size=step_size, allow_degenerate=False)
    tri = (verts[:, ::-1] / grid.spacing_mm)[faces] * grid.spacing_mm
    edge = np.max(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2), axis=1)
    nsub = np.maximum(1, np.ceil(edge / spacing_mm)).astype(int)
    tri_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    pts, nrm = [], []
    for n in np.unique(nsub):
        ab = [(a / n, b / n) for a in range(n + 1) for b in range(n + 1 - a)]
        w = np.array([[1 - u - v, u, v] for u, v in ab])
        pts.append(np.einsum("bw,mwc->mbc", w, tri[nsub == n]).reshape(-1, 3))
        nrm.append(np.repeat(tri_n[nsub == n], len(ab), axis=0))
    p, q = np.concatenate(pts), np.concatenate(nrm)
    key = np.floor(p / (0.75 * spacing_mm)).astype(np.int64)
    key -= key.min(axis=0)
    flat = np.ravel_multi_index(key.T, tuple(int(x) + 1 for x in key.max(axis=0)))
    _, first = np.unique(flat, return_index=True)
    return p[first] @ grid.direction.T + grid.origin_lps, q[first]


# -- phantoms ----------------------------------------------------------------------------
def cylinder_phantom(direction: NDArray[np.float64] = FLIP, *, shape_ijk=(56, 60, 20),
                     spacing=(2.0, 2.0, 2.5), origin=(12.0, -30.0, 100.0),
                     inside: float = 40.0, outside: float = -1000.0, couch: float = 300.0,
                     modality: str = "CT", noise_sigma: float = 0.0, seed: int = 0):
    """Cylinder (radius R_MM) along the grid's slice axis, on a 2-voxel-thick couch.

    Returns grid, labels (one small 'liver' inside the body), the axis point (LPS, on
    slice 0), the axis direction, the couch normal (grid row axis), the in-plane and
    axial offsets ``(x, y, z)`` of the voxel centres from the axis point along the grid
    axes (mm, broadcastable), the body and the couch masks.
    """
    affine = affine_from_geometry(origin, spacing, direction)
    ni, nj, nk = shape_ijk
    tmp = ImageVolume(np.zeros((1, 1, 1), np.float32), affine, modality=modality)
    ci, cj = ni / 2 - 0.3, nj / 2 - 4.2
    centre = tmp.index_to_world([[ci, cj, 0.0]])[0]
    x = ((np.arange(ni) - ci) * spacing[0])[None, None, :]
    y = ((np.arange(nj) - cj) * spacing[1])[None, :, None]
    z = (np.arange(nk) * spacing[2])[:, None, None]
    r2d = np.sqrt(x**2 + y**2)
    body = np.broadcast_to(r2d <= R_MM, (nk, nj, ni))
    plate = np.broadcast_to((y >= R_MM) & (y < R_MM + 2 * spacing[1])
                            & (np.abs(x) < R_MM + 8), (nk, nj, ni))
    img = np.full((nk, nj, ni), outside, dtype=np.float32)
    img[plate] = couch
    img[body] = inside
    if noise_sigma > 0:
        rng = np.random.default_rng(seed)
        img = np.abs(img + rng.normal(0, noise_sigma, img.shape)
                     + 1j * rng.normal(0, noise_sigma, img.shape)).astype(np.float32)
    grid = ImageVolume(img, affine, modality=modality)
    zm = z - nk * spacing[2] / 2
    liver = body & ((x - 15) ** 2 + y**2 + zm**2 <= 100.0)
    labels = LabelMap.from_masks([("liver", liver)], grid)
    return (grid, labels, centre, tmp.direction[:, 2], tmp.direction[:, 1], (x, y, z),
            np.array(body), np.array(plate))


def radial_of(p_lps: NDArray[np.float64], centre, axis) -> tuple[NDArray, NDArray]:
    d = p_lps - centre
    along = d @ axis
    rad_vec = d - along[:, None] * axis
    r = np.linalg.norm(rad_vec, axis=1)
    return r, rad_vec / np.maximum(r, 1e-9)[:, None]


def assert_body_within_one_voxel(mask: NDArray[np.bool_], body: NDArray[np.bool_],
                                 ignore: NDArray[np.bool_] | None = None) -> None:
    """``mask`` equals the analytic ``body`` except on its one-voxel boundary band and
    ``ignore`` (the couch within the opening's reach), up to the first and last slice
    (no bevel where the image edge cuts the body)."""
    band = ndi.binary_dilation(body) & ~ndi.binary_erosion(body)
    if ignore is not None:
        band |= ignore
    assert np.array_equal(mask[~band], body[~band])
    assert not (mask & ~ndi.binary_dilation(body) & ~band).any()
    assert mask[ndi.binary_erosion(body, iterations=3)].all()


# -- CT phantoms ---------------------------------------------------------------------------
@pytest.mark.parametrize("direction", [FLIP, rotation("z", 30) @ rotation("x", 20) @ FLIP,
                                       np.diag([1.0, -1.0, -1.0])],
                         ids=["flipped", "oblique", "flipped-yz"])
def test_cylinder_on_couch(direction) -> None:
    grid, labels, centre, axis, row, xyz, body, plate = cylinder_phantom(direction)
    mask, source = body_mask(grid, labels)
    assert source == "CT threshold -300 HU"
    # The couch is removed (its thin contact cut by the opening): nothing of it is kept
    # beyond 2 voxels (the opening's reach) from the body; the body is kept.
    far = ndi.distance_transform_cdt(~body, metric="taxicab") > 2
    assert plate[far].sum() > 1000 and not (mask & plate & far).any()
    assert_body_within_one_voxel(mask, body, plate & ~far)
    # The same result as the former scipy implementation, voxel for voxel.
    ref = reference_body(grid.array, -300.0, labels.any_mask())
    assert np.array_equal(mask, ref)
    p, n = skin_points(mask, grid)
    ref_p, _ = reference_skin(mask, grid)
    assert np.array_equal(p, ref_p)
    r, radial = radial_of(p, centre, axis)
    vox = float(np.max(grid.spacing_mm))
    # Open at the image edge: no cap on the first/last slice (it would be at r ≪ R).
    assert r.min() > R_MM - vox - 1e-6
    # Up to the two cut ends (no bevel: the opening repeats the edge voxel outside the
    # image) the points are on the analytic surface within one voxel and ≤ 2 mm apart.
    couch = (p - centre) @ row > R_MM - 3 * vox  # the kept contact with the couch
    side = ~couch
    assert side.sum() > 500
    assert np.abs(r[side] - R_MM).max() <= vox
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0)
    # Outward and smooth: each normal points away from the centroid of the body voxels
    # within 2.5 voxels (the marching-cubes facet normals of the voxelised surface were
    # up to ~41° off on this cylinder; now ≤ 20°, median ≤ 6°).
    dots = np.sum(n * radial, axis=1)
    ang = np.degrees(np.arccos(np.clip(dots[side], -1.0, 1.0)))
    assert ang.max() <= 20.0 and np.median(ang) <= 6.0, (ang.max(), np.median(ang))
    # Spacing: every side point of the analytic surface has a skin point within 2 mm.
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(1)
    ang = rng.uniform(0, 2 * np.pi, 400)
    ks = rng.uniform(0, grid.shape[0] - 1, 400)  # slice index (the centre is on slice 0)
    u = grid.direction[:, 0]
    v = np.cross(axis, u)
    probe = (centre[None] + ks[:, None] * axis * grid.spacing_mm[2]
             + R_MM * (np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * v))
    probe = probe[(probe - centre) @ row < R_MM - 3 * vox]  # away from the couch contact
    assert cKDTree(p).query(probe)[0].max() <= 2.0 + vox / 2


def test_holes_filled_and_largest_component_and_labels_inside() -> None:
    grid, labels, centre, axis, row, (x, y, z), body, plate = cylinder_phantom()
    img = np.array(grid.array)
    zm = z - grid.shape[0] * grid.spacing_mm[2] / 2
    # A closed air pocket (bowel gas) and a "lung" open through both cut ends (a hole in
    # every slice but not a closed 3-D hole).
    pocket = np.broadcast_to((x - 12) ** 2 + y**2 + zm**2 <= 64.0, body.shape)
    lung = np.broadcast_to(x**2 + (y + 15) ** 2 <= 81.0, body.shape)
    img[pocket | lung] = -1000.0
    # A separate object beside the body (smaller component) and a structure sticking out.
    blob = np.broadcast_to((x + 54) ** 2 + y**2 + zm**2 <= 49.0, body.shape)
    img[blob] = 40.0
    stick = np.broadcast_to((np.abs(y + 44) <= 3.0) & (np.abs(x) <= 3.0) & (np.abs(zm) <= 6),
                            body.shape)
    labels2 = LabelMap.from_masks([("liver", labels.mask("liver")), ("lesion", stick)], grid)
    g2 = grid.with_array(img)
    mask, _ = body_mask(g2, labels2)
    assert mask[pocket].all() and mask[lung].all()
    assert not mask[blob].any()
    assert mask[stick].all()
    assert np.array_equal(mask, reference_body(img, -300.0, labels2.any_mask()))
    p, _ = skin_points(mask, g2)
    r, _ = radial_of(p, centre, axis)
    assert r.min() > R_MM - 2 * float(np.max(grid.spacing_mm)) - 1e-6  # no skin in the holes


def test_body_structure_is_used_and_filled_slicewise() -> None:
    grid, labels, centre, axis, row, xyz, body, plate = cylinder_phantom()
    ring = body & ~ndi.binary_erosion(body, iterations=3)  # a hollow 'skin' shell
    lab = LabelMap.from_masks([("liver", labels.mask("liver")), ("body", ring)], grid)
    mask, source = body_mask(None, lab)
    assert source == "structure body"
    truth = np.stack([ndi.binary_fill_holes(s) for s in ring])
    assert np.array_equal(mask, truth)
    assert mask[body].all()


def test_fine_grid_outline_on_coarser_grid_matches_reference() -> None:
    """> 16 M voxels, in-plane < 1 mm: the 2x in-plane path and marching on every other
    voxel, odd dimensions; compared voxel for voxel and point for point with the former
    scipy/skimage implementation."""
    grid, labels, centre, axis, row, xyz, body, plate = cylinder_phantom(
        shape_ijk=(301, 283, 189), spacing=(0.31, 0.33, 0.9))
    mask, source = body_mask(grid, labels)
    assert "2x coarser" in source
    assert np.array_equal(mask, reference_body(grid.array, -300.0, labels.any_mask(), step=2))
    p, n = skin_points(mask, grid)
    ref_p, _ = reference_skin(mask, grid)
    from scipy.spatial import cKDTree

    # Identical when the dimensions are even; with odd ones skimage's step_size and the
    # subsampled mask may differ on the last cells: within one (coarse) voxel.
    tol = 2 * float(np.max(grid.spacing_mm))
    assert cKDTree(ref_p).query(p)[0].max() <= tol
    assert cKDTree(p).query(ref_p)[0].max() <= tol
    r, radial = radial_of(p, centre, axis)
    k = np.rint(grid.world_to_index(p)[:, 2])
    side = (k >= 6) & (k <= grid.shape[0] - 7)
    assert np.abs(r[side] - R_MM).max() <= 2 * float(np.max(grid.spacing_mm))
    assert np.mean(np.sum(n * radial, axis=1)[side] > 0.9) > 0.75
    assert np.all(np.sum(n * radial, axis=1)[side] > 0.7)


# -- non-HU images -----------------------------------------------------------------------
def test_mr_phantom_uses_automatic_threshold() -> None:
    grid, labels, centre, axis, row, xyz, body, plate = cylinder_phantom(
        inside=300.0, outside=0.0, couch=0.0, modality="MR", noise_sigma=15.0)
    img = np.array(grid.array)
    x, y, z = xyz
    zm = z - grid.shape[0] * grid.spacing_mm[2] / 2
    fat = body & (np.sqrt(x**2 + y**2) > R_MM - 6)
    organ = np.broadcast_to((x + 15) ** 2 + y**2 + zm**2 <= 81.0, body.shape)
    lung = np.broadcast_to((x - 15) ** 2 + y**2 + zm**2 <= 81.0, body.shape)
    img[fat] += 700.0
    img[organ] += 900.0
    img[lung] = np.abs(img[lung] - 290.0)  # dark as air, enclosed by the body
    mr = grid.with_array(img)
    assert not looks_like_hounsfield(mr)
    assert (img > -300).all()  # the old −300 "HU" threshold would take the whole image
    mask, source = body_mask(mr, labels)
    assert source.startswith("automatic threshold ") and "MR image" in source
    thr = float(source.split()[2])
    assert thr == pytest.approx(auto_threshold(mr), rel=1e-3)
    assert 40.0 < thr < 300.0
    assert_body_within_one_voxel(mask, body)
    assert mask[lung].all()
    p, n = skin_points(mask, mr)
    r, radial = radial_of(p, centre, axis)
    k = np.rint(mr.world_to_index(p)[:, 2])
    side = (k >= 3) & (k <= mr.shape[0] - 4)
    assert np.abs(r[side] - R_MM).max() <= float(np.max(mr.spacing_mm))
    assert np.mean(np.sum(n * radial, axis=1)[side] > 0.9) > 0.75
    assert np.all(np.sum(n * radial, axis=1)[side] > 0.7)
    # Unknown modality, positive values: also not HU. An explicit threshold overrides.
    unknown = ImageVolume(img, mr.index_to_lps, modality="")
    assert not looks_like_hounsfield(unknown)
    assert body_mask(unknown, labels)[1].startswith("automatic threshold")
    m3, s3 = body_mask(mr, labels, threshold=thr)
    assert s3 == f"threshold {thr:g} (given)" and np.array_equal(m3, mask)


def test_raw_ct_without_rescale_matches_hu_result() -> None:
    grid, labels, *_ = cylinder_phantom()
    hu_mask, _ = body_mask(grid, labels)
    # Big-endian storage (as some files hold it) gives the same result.
    big = grid.with_array(np.asarray(grid.array).astype(">f4"))
    assert np.array_equal(body_mask(big, labels)[0], hu_mask)
    raw = grid.with_array(np.asarray(grid.array) + 1024.0)  # stored values, no rescale
    assert looks_like_hounsfield(grid) and not looks_like_hounsfield(raw)
    mask, source = body_mask(raw, labels)
    assert source.startswith("automatic threshold") and "CT image" in source
    assert np.array_equal(mask, hu_mask)


def test_real_ct_unchanged(shared_data) -> None:
    """The real TotalSegmentator CT: identical to the former implementation."""
    from .test_real_ct import load_case

    ct, labels, _ = load_case(shared_data)
    assert looks_like_hounsfield(ct)
    mask, source = body_mask(ct, labels)
    assert source == "CT threshold -300 HU"
    assert np.array_equal(mask, reference_body(ct.array, -300.0, labels.any_mask()))
    p, _ = skin_points(mask, ct)
    assert np.array_equal(p, reference_skin(mask, ct)[0])
    assert len(p) > 100_000


# -- errors ------------------------------------------------------------------------------
def test_mr_filling_the_field_of_view_is_rejected() -> None:
    grid, labels, *_ = cylinder_phantom(inside=300.0, outside=0.0, couch=0.0, modality="MR",
                                        noise_sigma=15.0)
    # A field of view inside the patient: the whole image is tissue, bright and dark.
    img = np.array(grid.array)
    rng = np.random.default_rng(3)
    tissue = ndi.gaussian_filter(rng.normal(size=img.shape), 3)
    tissue = 300 + 900 * (tissue > 0)
    with pytest.raises(InputError, match="no body can be separated"):
        body_mask(grid.with_array(tissue.astype(np.float32)), labels)
    # Bright everywhere but a dark centre: the "body" covers the whole image border.
    ring = np.full(grid.shape, 800.0, np.float32)
    ring[:, 20:40, 18:38] = 10.0
    with pytest.raises(InputError, match=r"body covers (9\d|100)% of the image border"):
        body_mask(grid.with_array(ring), labels)
    # A CT in HU whose field of view lies inside the patient keeps the former result
    # (the whole grid but its bevelled edges, skin on the image box), with a warning.
    ct = cylinder_phantom()[0]
    mask, source = body_mask(ct.with_array(np.full(ct.shape, 40.0, np.float32)), labels)
    assert mask[2:-2, 2:-2, 2:-2].all() and mask.mean() > 0.9
    assert "WARNING" in source and source.startswith("CT threshold -300 HU")


def test_pydicom_mr_small_is_rejected() -> None:
    """pydicom's MR_small.dcm: a 64×64 single slice cropped inside the head (no air
    around it). As one slice it is not a volume; stacked to 8 slices no body can be
    separated from a background."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    a = ds.pixel_array.astype(np.float32)
    sp = [float(x) for x in ds.PixelSpacing][::-1] + [float(ds.SliceThickness)]
    one = ImageVolume(a[None], affine_from_geometry((0, 0, 0), sp, np.eye(3)), modality="MR")
    lab1 = LabelMap.from_masks([("liver", np.pad(np.ones((1, 4, 4), bool), ((0, 0), (30, 30),
                                                                           (30, 30))))], one)
    with pytest.raises(InputError, match="at least 2 slices"):
        body_mask(one, lab1)
    stack = ImageVolume(np.repeat(a[None], 8, axis=0), one.index_to_lps, modality="MR")
    lab8 = LabelMap.from_masks([("liver", np.repeat(lab1.mask("liver"), 8, axis=0))], stack)
    with pytest.raises(InputError, match="no body can be separated"):
        body_mask(stack, lab8)


def test_other_errors() -> None:
    grid, labels, *_ = cylinder_phantom()
    with pytest.raises(InputError, match="no image"):
        body_mask(None, labels)
    small = ImageVolume(np.zeros((4, 4, 4)), np.eye(4), modality="CT")
    with pytest.raises(InputError, match="differs from label grid"):
        body_mask(small, labels)
    with pytest.raises(InputError, match="survives the opening"):
        body_mask(grid.with_array(np.full(grid.shape, -1000.0, np.float32)), labels)
    with pytest.raises(InputError, match="constant"):
        body_mask(ImageVolume(np.full(grid.shape, 7.0), grid.index_to_lps, modality="MR"),
                  labels)
    with pytest.raises(InputError, match="empty"):
        skin_points(np.zeros(grid.shape, bool), grid)
    with pytest.raises(InputError, match="fills the whole grid"):
        skin_points(np.ones(grid.shape, bool), grid)
    with pytest.raises(InputError, match="differs from the grid"):
        skin_points(np.ones((3, 3, 3), bool), grid)
