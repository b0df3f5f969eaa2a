#!/usr/bin/python3
"""The peer of the loader benchmark: what users run today.

A torch.utils.data.Dataset over volumes held in memory (read once from the converted dataset with
python/cirrdata's Dataset, as float32 numpy arrays), patch sampling with nnU-Net's foreground forcing
(the last round(B * 0.33) samples of each batch centred on a random foreground voxel), and the
nnU-Net v2 default 3D augmentations written with numpy / scipy.ndimage, in nnU-Net's order and with
its probabilities (as batchgenerators does):

    rotation p 0.2 (U(-30, 30) degrees about each axis) and scaling p 0.2 (U(0.7, 1.4) isotropic),
        fused into one scipy.ndimage.affine_transform of the source volume (image order 1, mask
        order 0, zero padding); a plain crop (zero padded) when neither applies
    gaussian noise p 0.1 (sigma U(0, 0.1))
    gaussian blur p 0.2, p_per_channel 0.5 (sigma U(0.5, 1.0) per axis, scipy gaussian_filter)
    brightness (multiplicative) p 0.15 (U(0.75, 1.25), BGContrast sampling)
    contrast p 0.15 (U(0.75, 1.25) about the mean, clipped to the original range)
    simulated low resolution p 0.25, p_per_channel 0.5 (zoom U(0.5, 1): scipy zoom order 0 down,
        order 1 back up)
    inverted gamma p 0.1, then gamma p 0.3 (U(0.7, 1.5), BGContrast sampling, stats retained)
    mirroring p 0.5 per axis

served by DataLoader(num_workers=W, batch_size=B) (workers fork and share the cached volumes
copy-on-write). Prints one JSON line with samples/s.

    /usr/bin/python3 benchmarks/loader_peer.py DATASET [--min-seconds 5] [--batches 20] [--warmup 20]
        [--workers 2] [--batch-size 2] [--patch 96,96,32] [--augment nnunet|none] [--seed 0] [--split train]

Timed like ours (loader_bench.py): after `--warmup` batches, batches are timed with
time.perf_counter until at least `--min-seconds` have passed and at least `--batches` batches were
consumed; loading the volumes into memory is not timed.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
from scipy import ndimage

# ---------------------------------------------------------------------------------------- augment


def bg_sample(rng, lo, hi):
    """batchgenerators' BGContrast sampling: when lo < 1 < hi, U(lo, 1) or U(1, hi) with p 1/2."""
    if lo < 1 < hi:
        return rng.uniform(lo, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, hi)
    return rng.uniform(lo, hi)


def rotation_matrix(ax, ay, az):
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def crop_padded(vol, corner, patch):
    """vol[corner : corner + patch] with zeros outside the volume (vol: (C, X, Y, Z))."""
    out = np.zeros((vol.shape[0],) + tuple(patch), vol.dtype)
    src, dst = [slice(None)], [slice(None)]
    for a in range(3):
        lo, hi = corner[a], corner[a] + patch[a]
        s0, s1 = max(lo, 0), min(hi, vol.shape[a + 1])
        if s1 <= s0:
            return out
        src.append(slice(s0, s1))
        dst.append(slice(s0 - lo, s1 - lo))
    out[tuple(dst)] = vol[tuple(src)]
    return out


def gamma(img, g, invert, eps=1e-7):
    if invert:
        img = -img
    mean, sd = img.mean(), img.std()
    mn = img.min()
    rnge = img.max() - mn
    img = np.power((img - mn) / (rnge + eps), g) * (rnge + eps) + mn
    img = (img - img.mean()) / (img.std() + 1e-8) * sd + mean  # retain_stats
    if invert:
        img = -img
    return img.astype(np.float32, copy=False)


def augment_sample(img, mask, corner, patch, rng):
    """img (C, X, Y, Z) float32, mask (1, X, Y, Z) uint8 -> patch-sized, augmented copies."""
    patch = tuple(patch)
    # 1. spatial: rotation p 0.2, scaling p 0.2, one resampling pass
    m = np.eye(3)
    spatial = False
    if rng.uniform() < 0.2:
        m = rotation_matrix(*np.deg2rad(rng.uniform(-30, 30, 3)))
        spatial = True
    if rng.uniform() < 0.2:
        m = m * rng.uniform(0.7, 1.4)  # > 1 samples a larger region (objects shrink), as nnU-Net
        spatial = True
    if spatial:
        centre = np.asarray(corner, float) + (np.asarray(patch, float) - 1) / 2
        offset = centre - m @ ((np.asarray(patch, float) - 1) / 2)
        out = np.empty((img.shape[0],) + patch, np.float32)
        for c in range(img.shape[0]):
            ndimage.affine_transform(img[c], m, offset, output_shape=patch, output=out[c], order=1, mode='constant',
                                     cval=0.0, prefilter=False)
        seg = ndimage.affine_transform(mask[0], m, offset, output_shape=patch, order=0, mode='constant', cval=0)[None]
        img = out
    else:
        img = crop_padded(img, corner, patch)
        seg = crop_padded(mask, corner, patch)
    # 2. gaussian noise p 0.1
    if rng.uniform() < 0.1:
        sigma = rng.uniform(0, 0.1)
        img += rng.normal(0.0, sigma, img.shape).astype(np.float32)
    # 3. gaussian blur p 0.2, p_per_channel 0.5, sigma per axis
    if rng.uniform() < 0.2:
        for c in range(img.shape[0]):
            if rng.uniform() < 0.5:
                ndimage.gaussian_filter(img[c], rng.uniform(0.5, 1.0, 3), output=img[c], mode='reflect', truncate=4.0)
    # 4. brightness (multiplicative) p 0.15
    if rng.uniform() < 0.15:
        img *= np.float32(bg_sample(rng, 0.75, 1.25))
    # 5. contrast p 0.15, preserve range
    if rng.uniform() < 0.15:
        f = np.float32(bg_sample(rng, 0.75, 1.25))
        for c in range(img.shape[0]):
            mn, mx, mean = img[c].min(), img[c].max(), img[c].mean()
            img[c] = np.clip((img[c] - mean) * f + mean, mn, mx)
    # 6. simulated low resolution p 0.25, p_per_channel 0.5
    if rng.uniform() < 0.25:
        z = rng.uniform(0.5, 1.0)
        for c in range(img.shape[0]):
            if rng.uniform() < 0.5:
                small = [max(1, int(round(n * z))) for n in patch]
                down = ndimage.zoom(img[c], [s / n for s, n in zip(small, patch)], order=0, mode='nearest',
                                    grid_mode=True)
                img[c] = ndimage.zoom(down, [n / s for s, n in zip(down.shape, patch)], order=1, mode='nearest',
                                      grid_mode=True)
    # 7. inverted gamma p 0.1, then gamma p 0.3
    if rng.uniform() < 0.1:
        img = gamma(img, bg_sample(rng, 0.7, 1.5), True)
    if rng.uniform() < 0.3:
        img = gamma(img, bg_sample(rng, 0.7, 1.5), False)
    # 8. mirroring p 0.5 per axis
    flip = tuple(a + 1 for a in range(3) if rng.uniform() < 0.5)
    if flip:
        img = np.flip(img, flip)
        seg = np.flip(seg, flip)
    return np.ascontiguousarray(img, np.float32), np.ascontiguousarray(seg)


# ---------------------------------------------------------------------------------------- dataset


def load_volumes(path, split):
    """Every record of the split as in-memory numpy arrays, plus foreground voxel locations."""
    import cirrdata
    vols = []
    with cirrdata.Dataset(path) as ds:
        for i in range(len(ds)):
            if split != '*' and ds.manifest['records'][i]['split'] not in split.split(','):
                continue
            r = ds[i]
            img = np.ascontiguousarray(r['image'], np.float32)
            mask = np.ascontiguousarray(r['mask'], np.uint8)
            fg = np.argwhere(mask[0] > 0)
            if len(fg) > 10000:  # nnU-Net keeps at most 10,000 locations per class
                fg = fg[np.random.default_rng(i).choice(len(fg), 10000, replace=False)]
            vols.append((img, mask, fg.astype(np.int32), int(r['label'])))
    return vols


def make_dataset(vols, patch, batch_size, augment, seed, length):
    import torch

    forced = int(round(batch_size * 0.33))

    class PatchDataset(torch.utils.data.Dataset):
        def __len__(self):
            return length

        def __getitem__(self, k):
            rng = np.random.default_rng([seed, k])
            img, mask, fg, label = vols[int(rng.integers(len(vols)))]
            shape = img.shape[1:]
            if k % batch_size >= batch_size - forced and len(fg):
                c = fg[rng.integers(len(fg))]
            else:
                c = [rng.integers(n) for n in shape]
            corner = [int(c[a]) - patch[a] // 2 for a in range(3)]
            if augment == 'nnunet':
                im, seg = augment_sample(img, mask, corner, patch, rng)
            else:
                im, seg = crop_padded(img, corner, patch), crop_padded(mask, corner, patch)
            return {'image': torch.from_numpy(im), 'mask': torch.from_numpy(seg), 'label': label}

    return PatchDataset()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('dataset')
    ap.add_argument('--batches', type=int, default=20, help='at least this many timed batches')
    ap.add_argument('--min-seconds', type=float, default=5.0, help='the timed window lasts at least this long')
    ap.add_argument('--warmup', type=int, default=20)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--batch-size', type=int, default=2)
    ap.add_argument('--patch', default='96,96,32')
    ap.add_argument('--augment', default='nnunet', choices=['nnunet', 'none'])
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--split', default='train')
    a = ap.parse_args()
    import torch
    patch = tuple(int(v) for v in a.patch.split(','))
    t0 = time.perf_counter()
    vols = load_volumes(a.dataset, a.split)
    t_load = time.perf_counter() - t0
    # Long enough never to run out: the timed window ends by time (items are drawn lazily, by index).
    ds = make_dataset(vols, patch, a.batch_size, a.augment, a.seed, 1 << 40)
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch_size, shuffle=False, num_workers=a.workers,
                                     persistent_workers=False)
    n = 0
    t = time.perf_counter()
    it = iter(dl)
    for b in it:
        n += 1
        assert b['image'].shape == (a.batch_size, 1) + patch and b['image'].dtype == torch.float32
        if n == a.warmup:
            t = time.perf_counter()
        elif n > a.warmup and n - a.warmup >= a.batches and time.perf_counter() - t >= a.min_seconds:
            break
    dt = time.perf_counter() - t
    timed = n - a.warmup
    del it  # stops the workers
    print(json.dumps({'tool': 'peer', 'augment': a.augment, 'workers': a.workers, 'batch_size': a.batch_size,
                      'patch': list(patch), 'batches': timed, 'seconds': dt, 'min_seconds': a.min_seconds,
                      'samples_per_s': timed * a.batch_size / dt, 'records': len(vols),
                      'cache_load_s': t_load, 'cache_bytes': sum(v[0].nbytes + v[1].nbytes for v in vols)}))


if __name__ == '__main__':
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(os.path.dirname(here), 'python'))
    main()
