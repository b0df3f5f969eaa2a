#!/usr/bin/python3
"""`cirrdata resample` vs scipy.ndimage.map_coordinates and vs SPM12 (nibabel's test data).

  /usr/bin/python3 tests/python/test_resample_scipy.py --cirrdata build/tools/cirrdata \
      [--workdir DIR] [--nibabel-data DIR] [--cases N] [--seed S]

(a) random volumes (float32, int16 with scaling, uint8) with random oblique, anisotropic, possibly
    flipped source affines and perturbed target affines: `resample --like` for orders 0, 1, 3 vs
    map_coordinates(mode='constant', cval=0, prefilter=True) on inv(A_src) @ A_ref voxel coordinates.
(b) nibabel's SPM12 reslice outputs (resampled_anat_moved.nii, reoriented_anat_moved.nii), rebuilt
    from anatomical.nii as make_moved_anat.py / resample_using_spm.m describe (trilinear, SPM
    'interp' 1), compared on the voxels nibabel's test_processing compares.
(c) --spacing and --shape: shape and affine vs a hand computation, values vs map_coordinates.
(d) recipe resample.separate_z (nnU-Net's anisotropic resampling) through `convert --layout nnunet`:
    the stored image, mask and affine vs an independent numpy/scipy version of nnunetv2's
    determine_do_sep_z_and_axis + compute_new_shape + resample_data_or_seg(do_separate_z=True) (per-slice
    2D order 3 clipped to the slice's range as skimage's resize, segmentation one-hot order 1, then
    map_coordinates along the axis with order_z, mode 'nearest'). The shape, the sampling positions and
    the edge rules are computed by the test (from nnU-Net, and where the library documents a different
    grid or in-plane edge rule, from that documentation; see the comment above part_d), never read from
    the library's output. Covers coarse z, a coarse axis that reorientation moves (sagittal), in-plane
    upsampling, nnU-Net's own grid (N * new == n * old) and the documented one, the target's coarse
    axis (auto), forced (true), off (3D reference) and order_z 1; bad separate_z / order_z values are
    refused. Tolerances as above; at an order-0 .5 tie along the axis either neighbour is accepted, and
    mask voxels whose in-plane value is within 1e-6 of 0.5 are not compared (nnU-Net keeps >= 0.5, the
    library > 0.5).
(e) raw recipe with permuted and flipped axes, int16/uint8/int8/uint16: stored arrays and affine equal
    nibabel's as_closest_canonical exactly (the reorientation is folded into the C-order store).

Tolerances:
  * Both sides snap positions within EDGE_TOL = 1e-4 voxel outside [0, n-1] onto the edge (the
    library's documented band; scipy itself has none). Otherwise the reference is scipy's.
  * Order 0 is exact, except where a coordinate lies within 1e-6 of a .5 tie: there the two sides'
    coordinates differ by round-off (numpy's inv() @ product vs the library's snapped matrix), so
    either neighbour is accepted (round-half-up vs round-half-down of the same tie).
  * Orders 1 and 3 are written as float32: |ours - scipy| <= 1e-5 * max|data| (float32 storage of
    the result is ~6e-8 relative; the cubic's float32 coefficients add ~1e-7 of the coefficient
    magnitude, which is at most ~3x the data range).
  * SPM: nibabel compares its scipy resampling with SPM at rtol 1e-5, atol 1e-8 (assert_allclose_safely)
    after masking voxels whose source position is outside [0, n-1] (SPM's 0.05-voxel edge tolerance
    and different boundary handling); we use the same mask and the same tolerances.
Prints one line per failure and ends with `resample: N passed, M failed`; exit 1 on failure.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import nibabel as nib
from scipy import ndimage

EDGE_TOL = 1e-4
TIE_TOL = 1e-6
REL_TOL = 1e-5

failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print('FAIL %s' % what)
    return ok


def run(cli, args):
    p = subprocess.run([cli] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def coords(M, shape):
    idx = np.indices(shape).reshape(3, -1).astype(np.float64)
    return M[:3, :3] @ idx + M[:3, 3:4]


def reference(data, M, shape, order, fill=0.0, nudge=0.0):
    """scipy's map_coordinates on inv(A_src) @ A_ref coordinates, with the edge band applied."""
    c = coords(M, shape) + nudge
    n = np.array(data.shape, dtype=np.float64)[:, None]
    inside = np.all((c >= -EDGE_TOL) & (c <= n - 1 + EDGE_TOL), axis=0)
    out = ndimage.map_coordinates(data.astype(np.float64), np.clip(c, 0, n - 1), order=order,
                                  mode='constant', cval=0.0, prefilter=True)
    out[~inside] = fill
    ties = np.any(np.abs(c - np.floor(c) - 0.5) < TIE_TOL, axis=0)
    return out.reshape(shape), ties.reshape(shape)


def compare(name, ours, data, M, order, fill=0.0):
    ref, ties = reference(data, M, ours.shape, order, fill)
    if order == 0:
        # At ties accept either rounding direction, independently per axis.
        any_ok = np.zeros(ours.shape, dtype=bool)
        for signs in np.ndindex(2, 2, 2):
            nudge = (np.array(signs, dtype=float)[:, None] * 2 - 1) * 10 * TIE_TOL
            alt, _ = reference(data, M, ours.shape, 0, fill, nudge=nudge)
            any_ok |= ours == alt
        ok = np.where(ties, any_ok, ours == ref)
        bad = np.count_nonzero(~ok)
        return check(bad == 0, '%s order 0: %d of %d voxels differ from scipy (%d ties)' %
                     (name, bad, ours.size, np.count_nonzero(ties)))
    atol = REL_TOL * max(1e-30, float(np.max(np.abs(data))))
    err = np.abs(ours - ref)
    return check(err.max() <= atol, '%s order %d: max |ours - scipy| %.3g > %.3g' % (name, order, err.max(), atol))


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))  # det may be -1: flipped axes included


def random_affine(rng):
    a = np.eye(4)
    a[:3, :3] = random_rotation(rng) @ np.diag(rng.uniform(0.5, 3.0, 3))
    a[:3, 3] = rng.uniform(-50, 50, 3)
    return a


def perturbed(rng, a, shape):
    """A target grid overlapping the source: small rotation + shear, new zooms, shifted."""
    small = np.eye(3) + rng.normal(scale=0.15, size=(3, 3))
    b = np.eye(4)
    b[:3, :3] = a[:3, :3] @ small @ np.diag(rng.uniform(0.6, 1.6, 3))
    centre = a[:3, :3] @ ((np.array(shape) - 1) / 2) + a[:3, 3]
    tshape = tuple(int(x) for x in rng.integers(4, 30, 3))
    b[:3, 3] = centre - b[:3, :3] @ ((np.array(tshape) - 1) / 2) + rng.normal(scale=3, size=3)
    return b, tshape


def part_a(cli, work, rng, ncases):
    for case in range(ncases):
        shape = tuple(int(x) for x in rng.integers(4, 28, 3))
        kind = ('float32', 'int16', 'uint8')[case % 3]
        if kind == 'float32':
            raw = (rng.normal(size=shape) * 100).astype(np.float32)
        elif kind == 'int16':
            raw = rng.integers(-3000, 3000, shape).astype(np.int16)
        else:
            raw = rng.integers(0, 4, shape).astype(np.uint8)  # a label mask
        a = random_affine(rng)
        img = nib.Nifti1Image(raw, a)
        if kind == 'int16':
            img.header.set_slope_inter(0.5, 0.0)
        src = os.path.join(work, 'a%d_src.nii' % case)
        nib.save(img, src)
        b, tshape = perturbed(rng, a, shape)
        ref = os.path.join(work, 'a%d_ref.nii.gz' % case)
        nib.save(nib.Nifti1Image(np.zeros(tshape, np.uint8), b), ref)
        src_img, ref_img = nib.load(src), nib.load(ref)
        data = src_img.get_fdata()
        M = np.linalg.inv(src_img.affine) @ ref_img.affine  # affines as stored (float32 sform)
        for order in (0, 1, 3):
            name = 'a%d %s %s->%s' % (case, kind, shape, tshape)
            out = os.path.join(work, 'a%d_o%d.nii' % (case, order))
            rc, so, se = run(cli, ['resample', src, '--like', ref, '-o', out, '--order', str(order),
                                   '--threads', str(1 + (case + order) % 3), '--json'])
            if not check(rc == 0, '%s order %d: exit %d: %s' % (name, order, rc, se.strip()[:300])):
                continue
            meta = json.loads(so)
            o = nib.load(out)
            check(o.shape == tshape and meta['shape'] == list(tshape), '%s order %d: shape %s' % (name, order, o.shape))
            check(np.allclose(o.affine, ref_img.affine, rtol=0, atol=1e-4), '%s order %d: affine' % (name, order))
            want_dtype = kind if order == 0 else 'float32'
            check(meta['dtype'] == want_dtype and o.get_data_dtype() == np.dtype(want_dtype),
                  '%s order %d: dtype %s, want %s' % (name, order, meta['dtype'], want_dtype))
            compare(name, o.get_fdata(), data, M, order)


def part_b(cli, work, datadir):
    anat = os.path.join(datadir, 'anatomical.nii')
    if not os.path.exists(anat):
        check(False, 'SPM data not found in %s' % datadir)
        return
    from nibabel.affines import from_matvec
    from nibabel.eulerangles import euler2mat
    # make_moved_anat.py, verbatim in effect.
    img = nib.load(anat)
    extra = from_matvec(euler2mat(0.1, 0.2, 0.3), [3, 4, 5])
    moved = nib.Nifti1Image(img.dataobj, extra.dot(img.affine), img.header)
    moved.set_data_dtype(np.float32)
    moved_path = os.path.join(work, 'anat_moved.nii')
    nib.save(moved, moved_path)
    moved = nib.load(moved_path)
    for spm_name in ('resampled_anat_moved.nii', 'reoriented_anat_moved.nii'):
        spm = nib.load(os.path.join(datadir, spm_name))
        out = os.path.join(work, 'ours_' + spm_name)
        # resample_using_spm.m: spm_reslice / to_canonical with interp 1 (trilinear).
        rc, so, se = run(cli, ['resample', moved_path, '--like', os.path.join(datadir, spm_name), '-o', out,
                               '--order', '1'])
        if not check(rc == 0, 'spm %s: exit %d: %s' % (spm_name, rc, se.strip()[:300])):
            continue
        ours = nib.load(out)
        # nibabel's assert_spm_resampling_close: mask positions outside [0, n-1].
        M = np.linalg.inv(moved.affine) @ spm.affine
        c = coords(M, spm.shape).T.reshape(spm.shape + (3,))
        outside = np.any((c < 0) | (c - np.array(moved.shape) > -1), axis=-1)
        a = ours.get_fdata()[~outside]
        s = np.asarray(spm.dataobj, dtype=np.float64)[~outside]
        ok = np.allclose(a, s, rtol=1e-5, atol=1e-8)
        rel = np.max(np.abs(a - s) / np.maximum(np.abs(s), 1e-30)) if a.size else 0.0
        check(ok and a.size > 0, 'spm %s: %d compared voxels, max relative difference %.3g (nibabel allows 1e-5)'
              % (spm_name, a.size, rel))
        check(np.allclose(ours.affine, spm.affine, atol=1e-5), 'spm %s: affine differs' % spm_name)
        # And the same voxels against scipy directly.
        ref, _ = reference(moved.get_fdata(), M, spm.shape, 1)
        check(np.max(np.abs(ours.get_fdata() - ref)) <= REL_TOL * np.max(np.abs(moved.get_fdata())),
              'spm %s: differs from scipy' % spm_name)


def hand_grid(a, shape, new_spacing=None, new_shape=None):
    norms = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    shape = np.array(shape, dtype=float)
    if new_spacing is not None:
        dims = np.maximum(1, np.floor(shape * norms / new_spacing + 0.5)).astype(int)
        sp = np.asarray(new_spacing, dtype=float)
    else:
        dims = np.asarray(new_shape, dtype=int)
        sp = shape * norms / dims
    g = np.eye(4)
    g[:3, :3] = a[:3, :3] / norms * sp
    centre = a[:3, :3] @ ((shape - 1) / 2) + a[:3, 3]
    g[:3, 3] = centre - g[:3, :3] @ ((dims - 1) / 2)
    return tuple(int(x) for x in dims), g


def part_c(cli, work, rng):
    cases = []
    for case in range(6):
        shape = tuple(int(x) for x in rng.integers(5, 25, 3))
        a = random_affine(rng) if case % 2 else np.diag([-1.0, 1.0, 2.0, 1.0])  # oblique and axis-aligned
        data = (rng.normal(size=shape) * 50).astype(np.float32)
        src = os.path.join(work, 'c%d.nii' % case)
        nib.save(nib.Nifti1Image(data, a), src)
        sp = [round(float(x), 3) for x in rng.uniform(0.4, 3.0, 3)]
        if case == 0:
            sp = [0.5, 2.0, 1.0]  # exact ratios: order-0 ties everywhere along x
        nshape = [int(x) for x in rng.integers(3, 30, 3)]
        cases.append((case, src, ['--spacing', ','.join('%r' % x for x in sp)], dict(new_spacing=sp)))
        cases.append((case, src, ['--shape', ','.join(str(x) for x in nshape)], dict(new_shape=nshape)))
    for case, src, opt, kw in cases:
        img = nib.load(src)
        want_shape, want_aff = hand_grid(img.affine, img.shape, **kw)
        for order in (0, 1, 3):
            name = 'c%d %s %s order %d' % (case, opt[0], opt[1], order)
            out = os.path.join(work, 'c_out.nii.gz')
            rc, so, se = run(cli, ['resample', src, '-o', out, '--order', str(order), '--json'] + opt)
            if not check(rc == 0, '%s: exit %d: %s' % (name, rc, se.strip()[:300])):
                continue
            meta = json.loads(so)
            aff = np.array(meta['affine'])
            check(tuple(meta['shape']) == want_shape, '%s: shape %s, want %s' % (name, meta['shape'], want_shape))
            check(np.allclose(aff, want_aff, rtol=0, atol=1e-9), '%s: affine %s, want %s' % (name, aff, want_aff))
            check(np.allclose(meta['spacing'], np.sqrt((want_aff[:3, :3] ** 2).sum(0)), atol=1e-9),
                  '%s: spacing %s' % (name, meta['spacing']))
            check(meta['order'] == order and meta['output'] == out, '%s: JSON order/output' % name)
            o = nib.load(out)
            check(o.shape == want_shape and np.allclose(o.affine, aff, atol=1e-4), '%s: file shape/affine' % name)
            # The library used the double-precision grid; the file's sform is float32.
            compare(name, o.get_fdata(), img.get_fdata(), np.linalg.inv(img.affine) @ aff, order)


def part_usage(cli, work):
    src = os.path.join(work, 'c0.nii')
    for args, want in ((['resample', src, '--spacing', '1'], 2),
                       (['resample', src, '-o', os.path.join(work, 'u.nii'), '--spacing', '1', '--order', '2'], 2),
                       (['resample', src, '-o', os.path.join(work, 'u.nii'), '--spacing', '1', '--shape', '3,3,3'], 2),
                       (['resample', src, '-o', os.path.join(work, 'u.nii'), '--spacing', '0,1,1'], 2),
                       (['resample', src, '-o', os.path.join(work, 'u.nii'), '--dtype', 'bogus', '--spacing', '1'], 2),
                       (['resample', os.path.join(work, 'missing.nii'), '-o', os.path.join(work, 'u.nii'),
                         '--spacing', '1'], 1),
                       (['resample', src, '-o', os.path.join(work, 'u.nii'), '--like',
                         os.path.join(work, 'missing.nii')], 1),
                       (['resample', '--help'], 0)):
        rc, so, se = run(cli, args)
        check(rc == want, 'usage %s: exit %d, want %d (%s)' % (' '.join(args[1:]), rc, want, se.strip()[:200]))


# ---- (d) nnU-Net's separate resampling of the low-resolution axis (recipe resample.separate_z) ----
#
# The reference is nnunetv2's preprocessing/resampling/default_resampling.py (determine_do_sep_z_and_axis,
# compute_new_shape, resample_data_or_seg) and the skimage.transform.resize it calls, re-derived with
# numpy/scipy (skimage is not installed). Nothing is read from the library except the stored arrays and
# affine under test: the output shape, the sampling positions and the edge rules are computed here.
# From nnU-Net:
#   * the axis: get_lowres_axis on the source spacing (anisotropic source) or the target's; ties: none;
#   * the shape: compute_new_shape, int(round(old_spacing / new_spacing * old_shape)) per axis;
#   * the positions: output voxel o samples source position (o + 0.5) * n / N - 0.5 per axis
#     (skimage resize in-plane, nnU-Net's own coord_map along the axis);
#   * every source slice across the axis resized in 2D (images order 3, each slice's result clipped to
#     that slice's value range as skimage's resize(clip=True) does; masks: one-hot order 1), then the
#     stack interpolated along the axis with map_coordinates(order=order_z, mode='nearest') (masks 0).
# Where the library differs on purpose, as documented, the reference follows the documentation:
#   * the grid (cirrdata/resample.h, cd_grid_for_spacing): exactly the target spacing, centred on the
#     source's centre, so position (n - 1) / 2 + (o - (N - 1) / 2) * new / old. nnU-Net stretches the
#     field of view over N voxels instead (its true spacing is old * n / N). The two agree when
#     N * new == n * old: recipe 'exact' is built so for every separate case, and there the nnU-Net
#     formula itself is used; the other recipes use the documented grid. The stored affine must be
#     that grid. At an exact .5 in the shape the library rounds half away from zero (resample.h),
#     nnU-Net's round() half to even: either is accepted there.
#   * the in-plane kernel is the library's 3D one (recipe.schema.json separate_z; resample.h): scipy
#     map_coordinates mode 'constant' (spline coefficients with mirror boundaries), positions outside
#     the slice 0 (with the 1e-4 voxel band), and that 0 kept by the clip (skimage's rule for mode
#     'constant'). skimage's mode 'edge' (nnU-Net) extends the edge pixels: the two differ on in-plane
#     border voxels, most when upsampling (case 'exact-up': a ring of 0 here, edge values in nnU-Net).
#   * masks are kept where the one-hot linear value is > 0.5 (schema), nnU-Net >= 0.5: voxels within
#     1e-6 of 0.5 are not compared.
# Cases without a separate axis go through the 3D resampling on the same documented grid.

def lowres_axis(sp):
    """nnU-Net's get_lowres_axis + the tie rule of determine_do_sep_z_and_axis: None unless one axis has the max."""
    axes = np.where(max(sp) / np.array(sp) == 1)[0]
    return int(axes[0]) if len(axes) == 1 else None


def sep_axis(mode, src_sp, dst_sp, threshold=3.0):
    """nnU-Net v2 determine_do_sep_z_and_axis (force_separate_z: None = 'auto')."""
    if mode is False:
        return None
    if mode is True or max(src_sp) / min(src_sp) > threshold:
        return lowres_axis(src_sp)
    if max(dst_sp) / min(dst_sp) > threshold:
        return lowres_axis(dst_sp)
    return None


def nnunet_shape(shape, old_sp, new_sp):
    """nnunetv2 compute_new_shape, as written there, and per axis whether x.5 made the rounding a tie."""
    x = [i / j * k for i, j, k in zip(old_sp, new_sp, shape)]
    return [int(round(v)) for v in x], [abs(v - np.floor(v) - 0.5) < 1e-9 for v in x]


def grid_positions(n, N, old, new):
    """Source positions of the N output voxels along one axis, and whether the grid is nnU-Net's own:
    nnU-Net's (o + 0.5) * n / N - 0.5 when N * new == n * old, else the library's documented grid."""
    if abs(N * new - n * old) <= 1e-9 * n * old:
        return (np.arange(N) + 0.5) * n / N - 0.5, True
    return (n - 1) / 2 + (np.arange(N) - (N - 1) / 2) * new / old, False


def documented_affine(A, n, N, new):
    """The voxel -> world matrix of cd_grid_for_spacing's grid (resample.h): A's axis directions, spacing
    `new`, the centre of voxel (N - 1) / 2 on the centre of the source's voxel (n - 1) / 2."""
    n, N = np.asarray(n, float), np.asarray(N, float)
    G = np.eye(4)
    G[:3, :3] = A[:3, :3] / np.sqrt((A[:3, :3] ** 2).sum(0)) * np.asarray(new, float)
    G[:3, 3] = A[:3, :3] @ ((n - 1) / 2) + A[:3, 3] - G[:3, :3] @ ((N - 1) / 2)
    return G


def banded(data, c, order):
    """map_coordinates(mode='constant') with the library's documented 1e-4 edge band (see the doc string)."""
    n = np.array(data.shape, dtype=np.float64)[:, None]
    inside = np.all((c >= -EDGE_TOL) & (c <= n - 1 + EDGE_TOL), axis=0)
    out = ndimage.map_coordinates(data.astype(np.float64), np.clip(c, 0, n - 1), order=order, mode='constant',
                                  cval=0.0, prefilter=True)
    out[~inside] = 0.0
    return out


def resize_slice(sl, pu, pv, order, is_seg):
    """One slice resized in 2D onto positions pu x pv. Images: clipped to the slice's range as
    skimage.transform.resize(clip=True), keeping the fill 0 where 0 is outside that range (skimage's
    mode 'constant' rule). Masks: the label's indicator at order 1, kept where > 0.5."""
    c = np.stack([g.ravel() for g in np.meshgrid(pu, pv, indexing='ij')])
    if is_seg:
        p = banded(sl == 1, c, 1).reshape(len(pu), len(pv))
        return p > 0.5, np.abs(p - 0.5) < 1e-6
    out = banded(sl, c, order).reshape(len(pu), len(pv))
    lo, hi = float(sl.min()), float(sl.max())
    fill = (out == 0.0) if not lo <= 0.0 <= hi else np.zeros(out.shape, dtype=bool)
    out = np.clip(out, lo, hi)
    out[fill] = 0.0
    return out, np.zeros(out.shape, dtype=bool)


def nnunet_separate(data, pos, axis, order, order_z, is_seg):
    """resample_data_or_seg(do_separate_z=True): every source slice across `axis` resized in 2D onto the
    in-plane positions, the stack then interpolated along `axis` at pos[axis] with
    map_coordinates(order=order_z, mode='nearest'). Returns (candidates, ambiguous): for order_z 0 the
    results with the positions along `axis` nudged by -10, 0 and +10 x TIE_TOL (at a .5 tie either
    neighbour is right: the two sides' positions differ by round-off), and the mask voxels whose in-plane
    value hinges on a 0.5 tie."""
    u, v = [a for a in range(3) if a != axis]
    n = data.shape[axis]
    Nu, Nv = len(pos[u]), len(pos[v])
    stack = np.empty((n, Nu, Nv))
    amb_in = np.zeros((n, Nu, Nv), dtype=bool)
    for k in range(n):
        stack[k], amb_in[k] = resize_slice(np.take(data, k, axis=axis).astype(np.float64), pos[u], pos[v], order, is_seg)
    order_axes = np.argsort([axis, u, v])  # (axis, u, v) -> (x, y, z)
    cands = []
    for nudge in ((-10 * TIE_TOL, 0.0, 10 * TIE_TOL) if order_z == 0 else (0.0,)):
        K, I, J = np.meshgrid(pos[axis] + nudge, np.arange(Nu), np.arange(Nv), indexing='ij')
        out = ndimage.map_coordinates(stack, [K, I, J], order=order_z, mode='nearest')
        cands.append(np.transpose(out, order_axes))
    amb = np.stack([amb_in[min(max(int(np.floor(c + 0.5)), 0), n - 1)] for c in pos[axis]])
    return cands, np.transpose(amb, order_axes)


def plain_3d(data, pos, is_seg):
    c = np.stack([g.ravel() for g in np.meshgrid(*pos, indexing='ij')])
    oshape = tuple(len(p) for p in pos)
    if is_seg:
        p = banded(data == 1, c, 1).reshape(oshape)
        return [(p > 0.5).astype(np.float64)], np.abs(p - 0.5) < 1e-6
    return [banded(data, c, 3).reshape(oshape)], np.zeros(oshape, dtype=bool)


def part_d(cli, work, rng):
    import harness
    import cdshard
    src = os.path.join(work, 'd_src')
    cases = []
    # (name, array shape, voxel -> world 3x3 (spacing per array axis; permuted/flipped)). With recipe
    # 'exact' the 'exact-*' cases have N * new == n * old on every axis (the documented grid is then
    # nnU-Net's); 'exact-up' upsamples in-plane.
    specs = [('exact-z', (30, 24, 9), np.diag([-0.8, -0.6, 4.0])),                           # coarse z, LPS-flipped x/y
             ('exact-sag', (8, 20, 24), np.array([[0, 0, 1.0], [4.5, 0, 0], [0, 0.9, 0]])),  # coarse axis -> RAS y
             ('exact-up', (16, 12, 8), np.diag([1.5, 1.5, 5.0])),                            # in-plane upsampling
             ('iso', (20, 18, 16), np.diag([1.0, 1.1, 1.2]))]
    for name, shape, lin in specs:
        g = np.indices(shape).astype(np.float64)
        img = (60 * np.sin(g[0] / 3.1) + 40 * np.cos(g[1] / 2.3 + g[2] / 1.7) + rng.normal(0, 10, shape)).astype(np.float32)
        c = np.array(shape) / 2 + rng.uniform(-1, 1, 3)
        r = np.array(shape) / 3.5
        mask = ((((g - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1).astype(np.uint8)
        aff = np.eye(4)
        aff[:3, :3] = lin
        aff[:3, 3] = rng.uniform(-30, 30, 3)
        cases.append((name, img, mask, aff))
    harness.write_nnunet(src, cases)
    base = {"name": "sepz", "version": 1, "crop": {"mode": "none"}, "normalize": {"mode": "none"},
            "dtype": "float32", "chunk": [16, 16, 16]}
    recipes = [('exact', [1.2, 1.2, 2.0], "auto", 0), ('auto', [1.1, 1.0, 2.5], "auto", 0),
               ('auto-oz1', [0.9, 0.95, 3.3], "auto", 1), ('off', [1.1, 1.0, 2.5], False, 0), ('on', [1.3, 1.2, 1.7], True, 0)]
    seen = set()
    for rname, sp, mode, oz in recipes:
        rec = dict(base, resample={"mode": "spacing", "spacing": sp, "image_order": 3, "mask_order": 1,
                                   "separate_z": mode, "order_z": oz})
        rpath = os.path.join(work, 'd_%s.json' % rname)
        with open(rpath, 'w') as f:
            json.dump(rec, f)
        out = os.path.join(work, 'd_out_%s' % rname)
        rc, so, se = run(cli, ['convert', '--layout', 'nnunet', src, '--recipe', rpath, '--out', out, '--quiet'])
        if not check(rc == 0, 'd %s: convert exit %d: %s' % (rname, rc, se.strip()[:300])):
            continue
        # Shards are read one by one (read_shard verifies each): the manifest is only needed for the recipe.
        with open(os.path.join(out, 'manifest.json')) as f:
            manifest = json.load(f)
        recs = [r for s in manifest['shards'] for r in cdshard.read_shard(os.path.join(out, s['path']))]
        rs = manifest['recipe']['resample']
        check(rs.get('separate_z') == mode and rs.get('order_z') == oz, 'd %s: manifest recipe %s' % (rname, rs))
        check(len(recs) == len(cases), 'd %s: %d records' % (rname, len(recs)))
        for r in recs:
            name = r['metadata']['patient_id']
            _, img, mask, aff = next(cs for cs in cases if cs[0] == name)
            ras = nib.as_closest_canonical(nib.Nifti1Image(img, aff))
            mras = nib.as_closest_canonical(nib.Nifti1Image(mask, aff))
            A, data, mdata = ras.affine, np.asarray(ras.dataobj, np.float64), np.asarray(mras.dataobj)
            ours, ours_m = r['tensors']['image'][0], r['tensors']['mask'][0]
            src_sp = list(np.sqrt((A[:3, :3] ** 2).sum(0)))
            axis = sep_axis(mode, src_sp, sp)
            label = 'd %s %s (axis %s)' % (rname, name, axis)
            N, tie = nnunet_shape(data.shape, src_sp, sp)
            # At a tie the library's half-away rounding may give one more voxel (documented).
            want = [N[a] + 1 if tie[a] and ours.shape[a] == N[a] + 1 else N[a] for a in range(3)]
            if not check(list(ours.shape) == want and ours_m.shape == ours.shape,
                         '%s: shape %s, nnU-Net compute_new_shape %s' % (label, ours.shape, N)):
                continue
            pos, own = zip(*[grid_positions(data.shape[a], want[a], src_sp[a], sp[a]) for a in range(3)])
            G = documented_affine(A, data.shape, want, sp)
            B = np.array(r['metadata']['affine'], dtype=np.float64)
            check(np.allclose(B, G, rtol=0, atol=1e-6), '%s: stored affine %s, documented grid %s' % (label, B.tolist(), G.tolist()))
            if axis is None:
                ref, _ = plain_3d(data, pos, False)
                ref_m, amb = plain_3d(mdata, pos, True)
            else:
                seen.add((rname, name, axis, all(own)))
                ref, _ = nnunet_separate(data, pos, axis, 3, oz, False)
                ref_m, amb = nnunet_separate(mdata, pos, axis, 1, 0, True)
            atol = REL_TOL * float(np.max(np.abs(data)))
            err = np.min([np.abs(ours - c) for c in ref], axis=0)
            check(err.max() <= atol, '%s: image max |ours - reference| %.3g > %.3g' % (label, err.max(), atol))
            bad = np.count_nonzero(~np.any([ours_m == c for c in ref_m], axis=0) & ~amb)
            check(bad == 0, '%s: mask: %d of %d voxels differ (%d ambiguous)' % (label, bad, ours_m.size,
                                                                             np.count_nonzero(amb)))
            if rname == 'exact' and name == 'exact-up':
                # The documented in-plane rule when upsampling: the outer ring lies (1 - 1.2/1.5)/2 voxel
                # outside the source slice and is 0 (nnU-Net's skimage mode 'edge' would repeat the edge).
                ring = np.zeros(ours.shape, dtype=bool)
                ring[[0, -1], :, :] = ring[:, [0, -1], :] = True
                check(np.all(ours[ring] == 0) and np.all(ours[~ring] != 0),
                      '%s: in-plane ring of 0 (documented), %d nonzero' % (label, np.count_nonzero(ours[ring])))
    # Each separate path was taken: coarse source axis (z, and the sagittal case's RAS axis 1) on
    # nnU-Net's own grid and on the documented one, the target's coarse axis for the near-isotropic
    # case, and forced.
    want = {('exact', 'exact-z', 2, True), ('exact', 'exact-sag', 1, True), ('exact', 'exact-up', 2, True),
            ('auto', 'exact-z', 2, False), ('auto', 'exact-sag', 1, False), ('auto-oz1', 'iso', 2, False),
            ('on', 'iso', 2, False)}
    check(want <= seen, 'd: separate axes taken %s, want at least %s' % (sorted(seen), sorted(want)))
    for bad_val, key in (('"yes"', 'separate_z'), ('3', 'order_z')):
        rpath = os.path.join(work, 'd_bad.json')
        with open(rpath, 'w') as f:
            f.write('{"name": "b", "version": 1, "resample": {"mode": "spacing", "spacing": [1, 1, 1], "%s": %s}}'
                    % (key, bad_val))
        rc, so, se = run(cli, ['convert', '--layout', 'nnunet', src, '--recipe', rpath, '--out',
                               os.path.join(work, 'd_bad_out'), '--quiet'])
        check(rc != 0 and key in se and 'd_bad.json' in se, 'd: bad %s %s: exit %d: %s' % (key, bad_val, rc, se.strip()[:200]))


# ---- (e) raw recipe: the reorientation folded into the C-order store, vs nibabel ----

def part_e(cli, work, rng):
    """Permuted and flipped axes, every raw-stored dtype: the stored arrays must be nibabel's
    as_closest_canonical voxels exactly, with its affine (no resampling is involved: exact)."""
    import harness
    import cdshard
    src = os.path.join(work, 'e_src')
    cases = []
    perms = [np.array([[0, 0, -1.5], [2.0, 0, 0], [0, -0.7, 0]]), np.array([[0, 1.1, 0], [0, 0, 1.3], [-0.9, 0, 0]]),
             np.diag([-1.0, -1.0, 3.0]), np.diag([0.8, 0.9, 1.0])]
    kinds = [np.int16, np.uint8, np.int8, np.uint16]
    for i, (lin, kind) in enumerate(zip(perms, kinds)):
        shape = tuple(int(x) for x in rng.integers(5, 70, 3))  # > 64 on some axes: several chunks
        info = np.iinfo(kind)
        img = rng.integers(max(info.min, -3000), min(info.max, 3000), shape).astype(kind)
        mask = (rng.random(shape) < 0.3).astype(np.uint8)
        aff = np.eye(4)
        aff[:3, :3] = lin
        aff[:3, 3] = rng.uniform(-20, 20, 3)
        cases.append(('e%d' % i, img, mask, aff))
    harness.write_nnunet(src, cases)
    out = os.path.join(work, 'e_out')
    rc, so, se = run(cli, ['convert', '--layout', 'nnunet', src, '--recipe', 'raw', '--out', out, '--quiet'])
    if not check(rc == 0, 'e: convert exit %d: %s' % (rc, se.strip()[:300])):
        return
    with open(os.path.join(out, 'manifest.json')) as f:
        manifest = json.load(f)
    recs = [r for s in manifest['shards'] for r in cdshard.read_shard(os.path.join(out, s['path']))]
    check(len(recs) == len(cases), 'e: %d records' % len(recs))
    for r in recs:
        name = r['metadata']['patient_id']
        _, img, mask, aff = next(cs for cs in cases if cs[0] == name)
        ras = nib.as_closest_canonical(nib.Nifti1Image(img, aff))
        mras = nib.as_closest_canonical(nib.Nifti1Image(mask, aff))
        ours, ours_m = r['tensors']['image'][0], r['tensors']['mask'][0]
        want = np.asarray(ras.dataobj)
        check(ours.dtype == (np.uint8 if img.dtype == np.uint8 else np.int16), 'e %s: dtype %s' % (name, ours.dtype))
        check(ours.shape == want.shape and np.array_equal(ours, want.astype(ours.dtype)), 'e %s: image != canonical' % name)
        check(np.array_equal(ours_m, np.asarray(mras.dataobj)), 'e %s: mask != canonical' % name)
        check(np.allclose(np.array(r['metadata']['affine']), ras.affine, atol=1e-5), 'e %s: affine' % name)
        fg = np.argwhere(ours_m)
        bbox = [[int(fg[:, a].min()), int(fg[:, a].max()) + 1] for a in range(3)]
        check(r['metadata'].get('orientation') == 'RAS', 'e %s: orientation %s' % (name, r['metadata'].get('orientation')))
        check(r['metadata'].get('mask_bbox') in (None, bbox) , 'e %s: bbox %s != %s' % (name, r['metadata'].get('mask_bbox'), bbox))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cirrdata', required=True)
    ap.add_argument('--workdir')
    ap.add_argument('--nibabel-data', default=os.path.join(os.path.dirname(nib.__file__), 'tests', 'data'))
    ap.add_argument('--cases', type=int, default=24)
    ap.add_argument('--seed', type=int, default=20240611)
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix='cirrdata-resample-')
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    try:
        part_a(args.cirrdata, work, rng, args.cases)
        part_b(args.cirrdata, work, args.nibabel_data)
        part_c(args.cirrdata, work, rng)
        part_d(args.cirrdata, work, rng)
        part_e(args.cirrdata, work, rng)
        part_usage(args.cirrdata, work)
    except Exception as e:  # a crash is a failure, not a silent pass
        check(False, 'exception: %r' % (e,))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print('resample: %d passed, %d failed' % (passed, len(failures)))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
