#!/usr/bin/python3
"""The augmentation engine (libcirrdata/augment) against scipy and against its own written definitions.

  /usr/bin/python3 tests/python/test_augment_scipy.py --lib build/libcirrdata/libcirrdata.so

Calls the library through ctypes (cd_aug_params mirrored below) and checks:
  (a) cd_aug_apply_spatial, images, for random rotations + scales + mirrors on random volumes vs
      scipy.ndimage.affine_transform(order=1, mode='grid-constant', prefilter=False): max abs error
      <= 1e-4 of the data range. 'grid-constant' (zero padding, interpolating into the zeros) is the
      engine's documented semantics, the same as torch grid_sample(padding_mode='zeros') that
      nnU-Net v2 uses; scipy's 'constant' differs only within half a voxel... of the border, where it
      returns 0 outright: checked too, away from that band;
  (b) parameters drawn by cd_aug_draw (rotation + scaling + mirror, p = 1): the matrix equals
      Rz Ry Rx S F built in numpy from the drawn angles/scale/mirrors, and the warp matches scipy;
  (c) masks (nearest) vs scipy map_coordinates(order=0, mode='grid-constant'): exact, except where a
      source coordinate lies within 1e-9 of a .5 tie -- there both round half up, but the position is
      computed in a different floating-point order (scipy composes the affine its own way), so the
      two can land on opposite sides of the tie; such voxels are counted and allowed;
  (d) blur vs scipy.ndimage.gaussian_filter(mode='reflect', truncate=4.0, scipy's default; and 2.5);
  (e) lowres vs the batchgeneratorsv2 definition written with scipy: down with
      zoom(order=0, grid_mode=True, mode='nearest') (= torch 'nearest-exact'), up with
      zoom(order=1, grid_mode=True, mode='nearest') (= torch trilinear, align_corners=False);
  (f) noise and elastic deformation vs a numpy re-implementation of the documented Philox scheme
      (draw.c), i.e. what a GPU implementation must reproduce; elastic vs map_coordinates;
  (g) brightness / contrast (clipped) / gamma / inverted gamma vs numpy formulas of batchgeneratorsv2.
Ends with exactly one line `augment: N passed, M failed`.

Against an ASan-instrumented library (sanitizer builds) the script re-executes itself with the ASan
runtime in LD_PRELOAD (an uninstrumented interpreter must load it first) and detect_leaks=0 for this
process only (CPython itself is not leak-clean); UBSan's halt_on_error still applies.
"""
import argparse
import ctypes as C
import json
import math
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from asan_reexec import reexec_under_asan  # noqa: E402
from scipy import ndimage as nd  # noqa: E402

PASSED = 0
FAILED = 0


def check(ok, name, detail=''):
    global PASSED, FAILED
    if ok:
        PASSED += 1
    else:
        FAILED += 1
        print('FAIL %s%s' % (name, (': ' + str(detail)[:600]) if detail else ''))
    return ok


class Params(C.Structure):
    _fields_ = [('matrix', (C.c_double * 3) * 3), ('center', C.c_double * 3), ('planar', C.c_bool),
                ('elastic', C.c_bool), ('elastic_alpha', C.c_double), ('elastic_sigma', C.c_double),
                ('elastic_key', C.c_uint64),
                ('noise', C.c_bool), ('noise_sigma', C.c_double), ('noise_key', C.c_uint64),
                ('blur', C.c_bool), ('blur_sigma', C.c_double * 3), ('blur_truncate', C.c_double),
                ('brightness', C.c_bool), ('brightness_factor', C.c_double),
                ('contrast', C.c_bool), ('contrast_factor', C.c_double),
                ('lowres', C.c_bool), ('lowres_zoom', C.c_double),
                ('gamma_invert', C.c_bool), ('gamma_invert_value', C.c_double),
                ('gamma', C.c_bool), ('gamma_value', C.c_double),
                ('mirror', C.c_bool * 3), ('rotation', C.c_double * 3), ('scale', C.c_double)]


class Err(C.Structure):
    _fields_ = [('status', C.c_int), ('message', C.c_char * 512)]


I64x3 = C.c_int64 * 3
LIB = None


def load(path):
    global LIB
    LIB = C.CDLL(path)
    LIB.cd_aug_apply_spatial.argtypes = [C.POINTER(Params), C.c_void_p, C.c_void_p, C.c_uint32, I64x3, I64x3, I64x3,
                                         C.c_void_p, C.c_void_p, C.POINTER(Err)]
    LIB.cd_aug_apply_intensity.argtypes = [C.POINTER(Params), C.c_void_p, C.c_uint32, I64x3, C.POINTER(Err)]
    LIB.cd_aug_draw.argtypes = [C.c_void_p, C.c_uint64, C.c_uint64, C.c_uint64, I64x3, C.c_double * 3,
                                C.POINTER(Params)]
    LIB.cd_aug_draw.restype = None
    LIB.cd_aug_pipeline_parse.argtypes = [C.c_char_p, C.c_char_p, C.POINTER(C.c_void_p), C.POINTER(Err)]
    LIB.cd_aug_pipeline_destroy.argtypes = [C.c_void_p]
    LIB.cd_aug_pipeline_destroy.restype = None
    LIB.cd_aug_params_to_json.argtypes = [C.POINTER(Params)]
    LIB.cd_aug_params_to_json.restype = C.c_void_p
    LIB.cd_aug_source_box.argtypes = [C.POINTER(Params), I64x3, I64x3, I64x3]
    LIB.cd_aug_source_box.restype = None
    libc = C.CDLL(None)
    libc.free.argtypes = [C.c_void_p]
    LIB.free = libc.free


def identity_params(center):
    p = Params()
    for i in range(3):
        p.matrix[i][i] = 1.0
        p.center[i] = center[i]
    p.scale = 1.0
    p.blur_truncate = 4.0
    return p


def set_matrix(p, m):
    for i in range(3):
        for j in range(3):
            p.matrix[i][j] = float(m[i][j])


def params_json(p):
    s = LIB.cd_aug_params_to_json(C.byref(p))
    out = json.loads(C.string_at(s).decode())
    LIB.free(s)
    return out


def warp(p, img, mask, box_lo, patch):
    """img: (C, box) float32; mask: (box) uint8 or None."""
    img = np.ascontiguousarray(img, dtype=np.float32)
    ch = img.shape[0]
    out = np.empty((ch,) + tuple(patch), np.float32)
    outm = np.empty(tuple(patch), np.uint8) if mask is not None else None
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=np.uint8)
    err = Err()
    st = LIB.cd_aug_apply_spatial(C.byref(p), img.ctypes.data, mask.ctypes.data if mask is not None else None, ch,
                                  I64x3(*box_lo), I64x3(*img.shape[1:]), I64x3(*patch), out.ctypes.data,
                                  outm.ctypes.data if outm is not None else None, C.byref(err))
    if st != 0:
        raise RuntimeError(err.message.decode())
    return out, outm


def intensity(p, img):
    img = np.array(img, dtype=np.float32, order='C', copy=True)
    err = Err()
    st = LIB.cd_aug_apply_intensity(C.byref(p), img.ctypes.data, img.shape[0], I64x3(*img.shape[1:]), C.byref(err))
    if st != 0:
        raise RuntimeError(err.message.decode())
    return img


def rot(angles):
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


# ---- Philox4x32-10, vectorised (a re-implementation of the documented scheme) ----
M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85


def philox(c0, c1, c2, c3, k0, k1):
    mask = np.uint64(0xFFFFFFFF)
    c0, c1, c2, c3 = (np.asarray(v, np.uint64) & mask for v in (c0, c1, c2, c3))
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for _ in range(10):
        p0 = np.uint64(M0) * c0
        p1 = np.uint64(M1) * c2
        n0 = (p1 >> np.uint64(32)) ^ c1 ^ k0
        n1 = p1 & mask
        n2 = (p0 >> np.uint64(32)) ^ c3 ^ k1
        n3 = p0 & mask
        c0, c1, c2, c3 = n0, n1, n2, n3
        k0 = (k0 + np.uint64(W0)) & mask
        k1 = (k1 + np.uint64(W1)) & mask
    return c0, c1, c2, c3


def noise_field(key, n):
    i = np.arange(n, dtype=np.uint64)
    b = i >> np.uint64(2)
    w = philox(b & np.uint64(0xFFFFFFFF), b >> np.uint64(32), np.zeros_like(b), np.zeros_like(b),
               key & 0xFFFFFFFF, key >> 32)
    lane = (i & np.uint64(3)).astype(np.int64)
    we = np.where(lane < 2, w[0], w[2]).astype(np.float64)
    wo = np.where(lane < 2, w[1], w[3]).astype(np.float64)
    u1 = (np.floor(we / 256) + 1) / 16777216.0
    u2 = np.floor(wo / 256) / 16777216.0
    r = np.sqrt(-2 * np.log(u1))
    return np.where(lane % 2 == 0, r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2))


def elastic_field(p, patch):
    n = int(np.prod(patch))
    i = np.arange(n, dtype=np.uint64)
    b = i >> np.uint64(2)
    lane = (i & np.uint64(3)).astype(np.int64)
    key = p.elastic_key
    out = []
    for k in range(3):
        if p.planar and k == 2:
            out.append(np.zeros(patch))
            continue
        w = philox(b & np.uint64(0xFFFFFFFF), b >> np.uint64(32), np.full_like(b, k), np.zeros_like(b),
                   key & 0xFFFFFFFF, key >> 32)
        word = np.choose(lane, [w[0], w[1], w[2], w[3]]).astype(np.float64)
        v = (2 * np.floor(word / 256) / 16777216.0 - 1).astype(np.float32).reshape(patch).astype(np.float64)
        sig = [p.elastic_sigma, p.elastic_sigma, 0 if p.planar else p.elastic_sigma]
        out.append(nd.gaussian_filter(v, sig, mode='constant', cval=0.0, truncate=4.0) * p.elastic_alpha)
    return out


# ---- tests ----

def test_spatial_vs_scipy(rng):
    worst, worst_const = 0.0, 0.0
    for trial in range(24):
        box = tuple(int(v) for v in rng.integers(12, 40, 3))
        patch = tuple(int(v) for v in rng.integers(5, 24, 3))
        ch = 1 + trial % 2
        img = rng.normal(size=(ch,) + box).astype(np.float32) * 100 + 20
        box_lo = tuple(int(v) for v in rng.integers(-5, 5, 3))
        center = [box_lo[i] + rng.uniform(-3, box[i] + 3) for i in range(3)]
        ang = rng.uniform(-np.pi, np.pi, 3) if trial % 4 else np.zeros(3)
        s = rng.uniform(0.6, 1.5) if trial % 3 else 1.0
        f = np.diag([-1.0 if rng.uniform() < 0.5 else 1.0 for _ in range(3)])
        m = rot(ang) @ np.diag([s, s, s]) @ f
        p = identity_params(center)
        set_matrix(p, m)
        out, _ = warp(p, img, None, box_lo, patch)
        h = (np.array(patch) - 1) / 2.0
        off = np.array(center) - np.array(box_lo) - m @ h
        rngv = float(img.max() - img.min())
        for c in range(ch):
            ref = nd.affine_transform(img[c].astype(np.float64), m, offset=off, output_shape=patch, order=1,
                                      mode='grid-constant', prefilter=False)
            e = float(np.max(np.abs(out[c] - ref))) / rngv
            worst = max(worst, e)
            refc = nd.affine_transform(img[c].astype(np.float64), m, offset=off, output_shape=patch, order=1,
                                       mode='constant', prefilter=False)
            # away from the border band [-1, 0) U (n-1, n] where 'constant' returns 0 outright
            g = np.stack(np.meshgrid(*[np.arange(k) for k in patch], indexing='ij'), 0).reshape(3, -1)
            pos = m @ (g - h[:, None]) + (np.array(center) - np.array(box_lo))[:, None]
            okb = np.all((pos >= 0) & (pos <= (np.array(box)[:, None] - 1)) | (pos < -1) | (pos > np.array(box)[:, None]), 0)
            e2 = float(np.max(np.abs(out[c].ravel()[okb] - refc.ravel()[okb]))) / rngv if okb.any() else 0.0
            worst_const = max(worst_const, e2)
    check(worst <= 1e-4, 'spatial vs affine_transform grid-constant', 'max rel err %.3g' % worst)
    check(worst_const <= 1e-4, "spatial vs affine_transform 'constant' away from the border band", '%.3g' % worst_const)
    print('  spatial: worst error %.2e of range (grid-constant), %.2e (constant, off-band)' % (worst, worst_const))


def parse_pipeline(text):
    h = C.c_void_p()
    err = Err()
    st = LIB.cd_aug_pipeline_parse(text.encode(), b'test.json', C.byref(h), C.byref(err))
    if st != 0:
        raise RuntimeError(err.message.decode())
    return h


def test_drawn(rng):
    pipe = parse_pipeline(json.dumps({"name": "t", "version": 1, "dims": 3, "ops": [
        {"op": "rotation", "p": 1, "range_deg": [-180, 180], "axes": "xyz"},
        {"op": "scaling", "p": 1, "range": [0.7, 1.4]},
        {"op": "mirror", "p": 0.5, "axes": "xyz"}]}))
    worst_m, worst = 0.0, 0.0
    box = (30, 34, 20)
    img = rng.uniform(-1, 3, size=(1,) + box).astype(np.float32)
    patch = (16, 18, 12)
    for sample in range(20):
        p = Params()
        LIB.cd_aug_draw(pipe, 7, 3, sample, I64x3(*patch), (C.c_double * 3)(15, 17, 10), C.byref(p))
        m = np.array([[p.matrix[i][j] for j in range(3)] for i in range(3)])
        ref = rot([p.rotation[i] for i in range(3)]) @ np.diag([p.scale] * 3) @ np.diag(
            [-1.0 if p.mirror[i] else 1.0 for i in range(3)])
        worst_m = max(worst_m, float(np.max(np.abs(m - ref))))
        out, _ = warp(p, img, None, (0, 0, 0), patch)
        off = np.array([15, 17, 10.0]) - m @ ((np.array(patch) - 1) / 2.0)
        r = nd.affine_transform(img[0].astype(np.float64), m, offset=off, output_shape=patch, order=1,
                                mode='grid-constant', prefilter=False)
        worst = max(worst, float(np.max(np.abs(out[0] - r))) / 4.0)
        js = params_json(p)
        if sample == 0:
            check(abs(js['scale'] - p.scale) < 1e-12 and js['mirror'] == [bool(v) for v in p.mirror] and
                  np.allclose(js['rotation_rad'], list(p.rotation)) and np.allclose(js['matrix'], m),
                  'params_to_json mirrors the ctypes layout', js)
    LIB.cd_aug_pipeline_destroy(pipe)
    check(worst_m < 1e-12, 'drawn matrix = Rz Ry Rx S F', worst_m)
    check(worst <= 1e-4, 'drawn params warp vs scipy', worst)


def test_masks(rng):
    total_mismatch, tie_mismatch, nvox = 0, 0, 0
    for trial in range(16):
        box = tuple(int(v) for v in rng.integers(10, 30, 3))
        patch = tuple(int(v) for v in rng.integers(5, 20, 3))
        mask = rng.integers(0, 4, size=box).astype(np.uint8)
        center = [rng.uniform(0, box[i]) for i in range(3)]
        ang = rng.uniform(-np.pi, np.pi, 3)
        s = rng.uniform(0.6, 1.5)
        m = rot(ang) @ np.diag([s, s, s]) @ np.diag([-1.0 if rng.uniform() < 0.5 else 1.0 for _ in range(3)])
        if trial % 4 == 0:  # integer scale/mirror only: many exact .5 ties
            m = np.diag([2.0, -1.0, 0.5]) if trial % 8 == 0 else np.diag([0.5, 0.5, 1.0])
            center = [float(int(c)) + 0.25 * (trial % 3) for c in center]
        p = identity_params(center)
        set_matrix(p, m)
        img = np.zeros((1,) + box, np.float32)
        _, outm = warp(p, img, mask, (0, 0, 0), patch)
        g = np.stack(np.meshgrid(*[np.arange(k) for k in patch], indexing='ij'), 0).reshape(3, -1).astype(np.float64)
        pos = m @ (g - ((np.array(patch) - 1) / 2.0)[:, None]) + np.array(center)[:, None]
        ref = nd.map_coordinates(mask, pos, order=0, mode='grid-constant').reshape(patch)
        frac = pos - np.floor(pos)
        tie = np.any(np.abs(frac - 0.5) < 1e-9, 0).reshape(patch)
        bad = outm != ref
        total_mismatch += int(np.sum(bad & ~tie))
        tie_mismatch += int(np.sum(bad & tie))
        nvox += bad.size
    check(total_mismatch == 0, 'masks vs map_coordinates order 0 (off ties)', total_mismatch)
    print('  masks: %d voxels, %d off-tie mismatches, %d mismatches at exact .5 ties (allowed)'
          % (nvox, total_mismatch, tie_mismatch))


def test_blur(rng):
    worst = 0.0
    for trial in range(8):
        shape = tuple(int(v) for v in rng.integers(3, 30, 3))
        img = rng.normal(size=(2,) + shape).astype(np.float32) * 10
        sig = rng.uniform(0.5, 2.5, 3) if trial % 2 else np.full(3, rng.uniform(0.5, 1.0))
        trunc = 4.0 if trial < 6 else 2.5
        p = identity_params([0, 0, 0])
        p.blur = True
        for i in range(3):
            p.blur_sigma[i] = sig[i]
        p.blur_truncate = trunc
        out = intensity(p, img)
        for c in range(2):
            ref = nd.gaussian_filter(img[c], sig, mode='reflect', truncate=trunc)  # float32 in, float32 out
            worst = max(worst, float(np.max(np.abs(out[c] - ref))) / float(img[c].max() - img[c].min()))
    check(worst <= 1e-5, 'blur vs gaussian_filter reflect', worst)
    print('  blur: worst error %.2e of range' % worst)


def lowres_ref(x, zoom, planar=False):
    n = np.array(x.shape)
    m = np.maximum(1, np.array([round(float(k) * zoom) for k in n]))  # Python round: half to even
    if planar:
        m[2] = n[2]
    m = np.minimum(m, n)
    down = nd.zoom(x, m / n, order=0, mode='nearest', grid_mode=True)
    assert tuple(down.shape) == tuple(m), (down.shape, m)
    up = nd.zoom(down.astype(np.float64), n / m, order=1, mode='nearest', grid_mode=True)
    assert tuple(up.shape) == tuple(n), (up.shape, n)
    return up


def test_lowres(rng):
    worst = 0.0
    for trial in range(12):
        shape = tuple(int(v) for v in rng.integers(4, 40, 3))
        img = rng.normal(size=(1,) + shape).astype(np.float32)
        zoom = rng.uniform(0.5, 1.0)
        p = identity_params([0, 0, 0])
        p.lowres = True
        p.lowres_zoom = zoom
        p.planar = trial % 4 == 3
        out = intensity(p, img)
        ref = lowres_ref(img[0], zoom, p.planar)
        worst = max(worst, float(np.max(np.abs(out[0] - ref))) / float(img.max() - img.min()))
    check(worst <= 1e-5, 'lowres vs scipy zoom (nearest-exact down, linear up)', worst)
    print('  lowres: worst error %.2e of range' % worst)


def test_noise_and_elastic(rng):
    shape = (9, 7, 5)
    img = rng.normal(size=(2,) + shape).astype(np.float32)
    p = identity_params([0, 0, 0])
    p.noise = True
    p.noise_sigma = 0.05
    p.noise_key = 0x0123456789ABCDEF
    out = intensity(p, img)
    nf = noise_field(p.noise_key, int(np.prod(shape))).reshape(shape)
    err = max(float(np.max(np.abs(out[c] - (img[c] + 0.05 * nf)))) for c in range(2))
    check(err < 1e-6, 'noise = documented Philox/Box-Muller field, same for all channels', err)
    big = noise_field(12345, 200000)
    check(abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01, 'noise field is standard normal',
          (big.mean(), big.std()))

    box = (30, 28, 22)
    src = rng.uniform(0, 1, size=(1,) + box).astype(np.float32)
    src = nd.gaussian_filter(src, 2).astype(np.float32)
    for planar in (False, True):
        patch = (14, 12, 1 if planar else 10)
        p = identity_params([15.0, 14.0, 11.0])
        p.elastic = True
        p.elastic_alpha = 60.0
        p.elastic_sigma = 3.0
        p.elastic_key = 0xFEEDFACE12345678 + planar
        p.planar = planar
        set_matrix(p, rot([0.2, -0.1, 0.3]) @ np.diag([1.1, 1.1, 1.1]) if not planar else rot([0, 0, 0.3]))
        out, _ = warp(p, src, None, (0, 0, 0), patch)
        d = elastic_field(p, patch)
        m = np.array([[p.matrix[i][j] for j in range(3)] for i in range(3)])
        g = np.stack(np.meshgrid(*[np.arange(k) for k in patch], indexing='ij'), 0).reshape(3, -1).astype(np.float64)
        q = g - ((np.array(patch) - 1) / 2.0)[:, None] + np.stack([x.ravel() for x in d], 0)
        pos = m @ q + np.array([15.0, 14.0, 11.0])[:, None]
        ref = nd.map_coordinates(src[0].astype(np.float64), pos, order=1, mode='grid-constant').reshape(patch)
        e = float(np.max(np.abs(out[0] - ref)))
        dm = max(float(np.max(np.abs(x))) for x in d)
        check(e < 1e-4 and dm > 0.5, 'elastic (planar=%s) = documented field + map_coordinates' % planar,
              'err %.3g, max displacement %.3g' % (e, dm))
        if planar:
            check(bool(np.all(np.abs(pos[2] - 11.0) < 1e-9)), 'planar elastic leaves z alone')
        lo, hi = I64x3(), I64x3()
        LIB.cd_aug_source_box(C.byref(p), I64x3(*patch), lo, hi)
        inside = all(np.floor(pos[i]).min() >= lo[i] and np.floor(pos[i]).max() + 1 < hi[i] for i in range(3))
        check(inside, 'source box bounds the elastic positions', (list(lo), list(hi)))


def test_intensity_formulas(rng):
    img = (rng.normal(size=(2, 6, 5, 4)) * 3 + 1).astype(np.float32)
    p = identity_params([0, 0, 0])
    p.brightness, p.brightness_factor = True, 1.2
    p.contrast, p.contrast_factor = True, 1.3
    p.gamma_invert, p.gamma_invert_value = True, 0.8
    p.gamma, p.gamma_value = True, 1.4
    out = intensity(p, img)
    ref = img.astype(np.float64).copy()
    for c in range(2):
        x = ref[c] * 1.2
        mn, lo, hi = x.mean(), x.min(), x.max()
        x = np.clip((x - mn) * 1.3 + mn, lo, hi)
        for g, inv in ((0.8, True), (1.4, False)):
            if inv:
                x = -x
            mean, sd = x.mean(), x.std(ddof=1)
            a, r = x.min(), x.max() - x.min()
            x = ((x - a) / max(r, 1e-7)) ** g * r + a
            x = (x - x.mean()) * (sd / max(x.std(ddof=1), 1e-7)) + mean
            if inv:
                x = -x
        ref[c] = x
    e = float(np.max(np.abs(out - ref)))
    check(e < 1e-4, 'brightness, contrast, inverted gamma, gamma vs numpy (batchgeneratorsv2)', e)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--lib', required=True)
    args = ap.parse_args()
    reexec_under_asan(args.lib)
    load(args.lib)
    rng = np.random.default_rng(20240601)
    for t in (test_spatial_vs_scipy, test_drawn, test_masks, test_blur, test_lowres, test_noise_and_elastic,
              test_intensity_formulas):
        try:
            t(rng)
        except Exception as e:  # a crash in one group is one failure, not the end of the run
            import traceback
            traceback.print_exc()
            check(False, t.__name__, repr(e))
    print('augment: %d passed, %d failed' % (PASSED, FAILED))
    return 1 if FAILED else 0


if __name__ == '__main__':
    sys.exit(main())
