#!/usr/bin/env python3
"""Non-finite voxels (NaN, +-inf, or scaled values beyond the float32 range) never reach a stored record
silently. An nnU-Net layout of four float32/int16 cases, three of them damaged (one NaN; +inf and -inf;
int16 whose scl_slope makes 5 voxels overflow float32), converted with nnunet-3d (cubic resampling of
the whole volume, whose prefilter would spread one NaN to every voxel) and cirrhosisstage-2d (per-slice
linear resize, percentiles, float16):

  * default: every damaged case is skipped, listed in source.skipped with "<image path>: N non-finite
    voxel(s)" (the path named once), the exit status is 0, `verify` accepts the dataset, `--device vulkan`
    skips the same cases for the same reasons, and the intact case's record equals, bit for bit, the one
    of a conversion of the repaired source;
  * recipe "non_finite": "zero" (or `convert --non-finite zero`): every case is stored, every value finite, and each record equals, bit
    for bit, the record of the same recipe applied to the source repaired independently with nibabel
    (the damaged voxels set to 0; for the int16 case the raw value 0, physical 0);
  * a float32 mask with a NaN voxel: the case is skipped naming the mask; with "zero" the voxel is
    background, as in the repaired mask;
  * `cirrdata stage` of a scan with a NaN voxel: exit 1 naming the scan and the count, not the model;
  * `cirrdata resample --order 1` of a volume with a NaN: a trilinear weight of exactly 0 never reads the
    NaN (identity grid: only the NaN's own voxel; slices kept by --shape: only the NaN's own slice).

Ends with `nonfinite: N passed, M failed`.

  /usr/bin/python3 tests/python/test_nonfinite.py --cirrdata build/tools/cirrdata --lib build/libcirrdata/libcirrdata.so
"""
import gzip
import json
import os
import shutil
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import harness  # noqa: E402
from harness import check  # noqa: E402

import numpy as np  # noqa: E402
import nibabel as nib  # noqa: E402

SHAPE = (26, 22, 12)
SPACINGS = [(1.5, 1.25, 3.0), (1.4, 1.3, 2.8), (1.6, 1.2, 3.2), (1.5, 1.25, 3.0)]
NAN_AT = (13, 9, 5)                       # case01
INF_AT = [(6, 6, 3), (20, 15, 8)]         # case02: +inf, -inf
SLOPE = 1e36                              # case03: int16 raw 400 -> 4e38, above float32's 3.4e38
OVERFLOW_AT = [(4, 4, 2), (10, 12, 6), (20, 5, 9), (3, 18, 10), (22, 20, 1)]


def run(cmd, timeout=600):
    r = harness.run(cmd, timeout=timeout)
    check(not harness.sanitizer_report(r.stderr), f"sanitizer report from {cmd[1]}: {r.stderr[-800:]}")
    return r


def write_scaled_int16(path, raw, aff, slope):
    """A .nii.gz whose int16 raw values are stored as given with scl_slope = slope, scl_inter = 0 (nibabel
    would rescale on save, so the two header fields are written into the bytes afterwards)."""
    img = nib.Nifti1Image(raw.astype(np.int16), aff)
    img.header.set_data_dtype(np.int16)
    plain = path[:-3]
    nib.save(img, plain)
    with open(plain, 'rb') as f:
        b = bytearray(f.read())
    b[112:120] = struct.pack('<ff', slope, 0.0)
    with gzip.open(path, 'wb') as f:
        f.write(bytes(b))
    os.remove(plain)
    check(np.isclose(nib.load(path).dataobj.slope, slope), f"{path}: scl_slope written")


def make_layout(root, repaired, mask_nan=False):
    """The four-case nnU-Net layout; repaired: the damaged image voxels already 0 (what "zero" must give);
    mask_nan: case00's mask is float32 with one NaN voxel."""
    os.makedirs(os.path.join(root, 'imagesTr'))
    os.makedirs(os.path.join(root, 'labelsTr'))
    rng = np.random.default_rng(5)
    g = np.indices(SHAPE).astype(np.float64)
    c = np.array(SHAPE) / 2
    blob = (((g[0] - c[0]) / 7) ** 2 + ((g[1] - c[1]) / 6) ** 2 + ((g[2] - c[2]) / 3) ** 2 <= 1).astype(np.uint8)
    for i, sp in enumerate(SPACINGS):
        aff = np.diag(list(sp) + [1.0])
        aff[:3, 3] = rng.uniform(-40, 40, 3)
        img = (300 + 200 * np.sin(g[0] / (3 + i)) + 120 * np.cos(g[1] / 4) + 15 * g[2] + rng.normal(0, 10, SHAPE)).astype(np.float32)
        name = os.path.join(root, 'imagesTr', f'case{i:02d}_0000.nii.gz')
        if i == 1:
            img[NAN_AT] = 0 if repaired else np.nan
        if i == 2:
            img[INF_AT[0]] = 0 if repaired else np.inf
            img[INF_AT[1]] = 0 if repaired else -np.inf
        if i == 3:
            raw = np.clip(np.round(img / 100), 0, 9).astype(np.int16)  # physical up to 9e36: finite
            for p in OVERFLOW_AT:
                raw[p] = 0 if repaired else 400
            write_scaled_int16(name, raw, aff, SLOPE)
        else:
            nib.save(nib.Nifti1Image(img, aff), name)
        mask = blob.astype(np.float32 if (mask_nan and i == 0) else np.uint8)
        if mask_nan and i == 0:
            mask[2, 2, 2] = np.nan
        nib.save(nib.Nifti1Image(mask, aff), os.path.join(root, 'labelsTr', f'case{i:02d}.nii.gz'))
    harness.write_json(os.path.join(root, 'dataset.json'),
                       {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "liver": 1},
                        "numTraining": len(SPACINGS), "file_ending": ".nii.gz"})


def records(ds, cirrdata):
    """{key: (image, mask)} of a dataset."""
    d = cirrdata.Dataset(ds)
    try:
        out = {}
        for i in range(len(d)):
            r = d[i]
            out[r['key']] = (r['image'], r['mask'])
        return out
    finally:
        d.close()


def same(a, b):
    return a is None and b is None or (a is not None and b is not None and a.dtype == b.dtype and a.shape == b.shape
                                       and a.tobytes() == b.tobytes())


def convert(cli, src, recipe, out, extra=()):
    r = run([cli, 'convert', '--layout', 'nnunet', src, '--recipe', recipe, '--out', out, '--quiet', '--threads', '2']
            + list(extra))
    check(r.returncode == 0, f"convert {recipe} -> {out}: exit {r.returncode}: {r.stderr.strip()[-600:]}")
    return r


def recipe_with(cli, preset, work, value):
    """The preset's canonical JSON (cirrdata stores it in the manifest) with "non_finite": value."""
    tiny = os.path.join(work, f'probe-{preset}')
    if not os.path.isdir(tiny):
        src = os.path.join(work, 'probe-src')
        if not os.path.isdir(src):
            harness.make_source(src, ncases=1)
        convert(cli, src, preset, tiny)
    with open(os.path.join(tiny, 'manifest.json')) as f:
        r = json.load(f)['recipe']
    check('non_finite' not in r, f"{preset}: the canonical recipe writes the default non_finite: {r.get('non_finite')}")
    r['non_finite'] = value
    return harness.write_json(os.path.join(work, f'{preset}-{value}.json'), r)


def check_recipe(cli, cirrdata, work, preset, bad, good):
    # default: the damaged cases are skipped, named with their counts
    d_def = os.path.join(work, f'{preset}-default')
    convert(cli, bad, preset, d_def)
    with open(os.path.join(d_def, 'manifest.json')) as f:
        m = json.load(f)
    skipped = {os.path.basename(s.get('path', '')): s.get('reason', '') for s in m['source']['skipped']}
    want = {'case01_0000.nii.gz': '1 non-finite voxel ', 'case02_0000.nii.gz': '2 non-finite voxels',
            'case03_0000.nii.gz': '5 non-finite voxels'}
    check(sorted(skipped) == sorted(want), f"{preset}: skipped {sorted(skipped)}, expected {sorted(want)}")
    for name, count in want.items():
        reason = skipped.get(name, '')
        path = os.path.join(bad, 'imagesTr', name)
        check(count in reason and 'NaN or infinite' in reason, f"{preset}: {name}: reason {reason!r} lacks {count!r}")
        check(reason.count(path) == 1, f"{preset}: {name}: the reason names the image {reason.count(path)} times: {reason!r}")
        check('"non_finite": "zero"' in reason, f"{preset}: {name}: the reason does not say how to convert it: {reason!r}")
    r = run([cli, 'verify', d_def, '--quiet'])
    check(r.returncode == 0, f"{preset}: verify of the dataset with skipped cases: {r.stderr.strip()}")
    # --device vulkan (lavapipe here) checks on the CPU before anything is uploaded: the same skips
    d_vk = os.path.join(work, f'{preset}-vulkan')
    r = harness.run([cli, 'convert', '--layout', 'nnunet', bad, '--recipe', preset, '--out', d_vk, '--quiet', '--device', 'vulkan'],
                    timeout=600)
    check(not harness.sanitizer_report(r.stderr), f"sanitizer report from convert --device vulkan: {r.stderr[-800:]}")
    if r.returncode == 0 and os.path.isfile(os.path.join(d_vk, 'manifest.json')):
        with open(os.path.join(d_vk, 'manifest.json')) as f:
            vk = {os.path.basename(s.get('path', '')): s.get('reason', '') for s in json.load(f)['source']['skipped']}
        check(vk == skipped, f"{preset} --device vulkan: skipped {vk} vs the CPU's {skipped}")
    else:
        check(False, f"{preset} --device vulkan: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    # the repaired source, converted with "zero" (nothing to replace there) and with the default
    rec_zero = recipe_with(cli, preset, work, 'zero')
    d_good = os.path.join(work, f'{preset}-repaired')
    convert(cli, good, rec_zero, d_good)
    ref = records(d_good, cirrdata)
    got = records(d_def, cirrdata)
    check(sorted(got) == ['case00'], f"{preset}: default records {sorted(got)}")
    if 'case00' in got and 'case00' in ref:
        check(same(got['case00'][0], ref['case00'][0]) and same(got['case00'][1], ref['case00'][1]),
              f"{preset}: the intact case differs from the repaired source's")
    # "zero": every case, equal to the independently repaired source's records
    d_zero = os.path.join(work, f'{preset}-zero')
    convert(cli, bad, rec_zero, d_zero)
    got = records(d_zero, cirrdata)
    check(sorted(got) == sorted(ref) and len(got) == 4, f"{preset} zero: records {sorted(got)} vs {sorted(ref)}")
    for k in sorted(ref):
        if k not in got:
            continue
        img = got[k][0].astype(np.float64)
        check(np.isfinite(img).all(), f"{preset} zero: {k}: {int((~np.isfinite(img)).sum())} non-finite stored values")
        check(same(got[k][0], ref[k][0]), f"{preset} zero: {k}: image differs from the repaired source's "
              f"(max |diff| {np.nanmax(np.abs(img - ref[k][0].astype(np.float64)))})")
        check(same(got[k][1], ref[k][1]), f"{preset} zero: {k}: mask differs from the repaired source's")
    r = run([cli, 'verify', d_zero, '--quiet'])
    check(r.returncode == 0, f"{preset} zero: verify: {r.stderr.strip()}")
    # `convert --non-finite zero` with the preset: the same records, and the choice stored in the recipe
    d_opt = os.path.join(work, f'{preset}-option')
    convert(cli, bad, preset, d_opt, ['--non-finite', 'zero'])
    opt = records(d_opt, cirrdata)
    check(sorted(opt) == sorted(got) and all(same(opt[k][0], got[k][0]) and same(opt[k][1], got[k][1]) for k in got),
          f"{preset}: convert --non-finite zero differs from the recipe's \"non_finite\": \"zero\"")
    with open(os.path.join(d_opt, 'manifest.json')) as f:
        check(json.load(f)['recipe'].get('non_finite') == 'zero', f"{preset}: --non-finite zero is not in the stored recipe")


def check_mask(cli, cirrdata, work):
    bad, good = os.path.join(work, 'mask-bad'), os.path.join(work, 'mask-good')
    make_layout(bad, repaired=True, mask_nan=True)   # images intact, case00's float mask has a NaN
    make_layout(good, repaired=True, mask_nan=False)  # the same mask, 0 (background) at the NaN
    d = os.path.join(work, 'mask-default')
    convert(cli, bad, 'raw', d)
    with open(os.path.join(d, 'manifest.json')) as f:
        sk = json.load(f)['source']['skipped']
    mpath = os.path.join(bad, 'labelsTr', 'case00.nii.gz')
    check(len(sk) == 1 and mpath in sk[0].get('reason', '') and '1 non-finite voxel' in sk[0].get('reason', '')
          and 'mask' in sk[0].get('reason', ''), f"mask NaN: skipped {sk}")
    rec_zero = recipe_with(cli, 'raw', work, 'zero')
    dz, dg = os.path.join(work, 'mask-zero'), os.path.join(work, 'mask-repaired')
    convert(cli, bad, rec_zero, dz)
    convert(cli, good, rec_zero, dg)
    got, ref = records(dz, cirrdata), records(dg, cirrdata)
    check('case00' in got and same(got['case00'][1], ref['case00'][1]) and same(got['case00'][0], ref['case00'][0]),
          "mask NaN with zero: the record differs from the repaired mask's")


def check_stage(cli, work):
    """The scan is refused before the model runs, naming the scan and the count."""
    model = os.path.join(work, 'model.safetensors')
    env = dict(os.environ)
    env.pop('LD_PRELOAD', None)  # torch does not load libcirrdata
    env.pop('CIRRDATA_ASAN_REEXEC', None)
    import subprocess
    p = subprocess.run([sys.executable, os.path.join(harness.ROOT, 'tools', 'scripts', 'export_weights.py'), '--arch', 'cirrnet-small',
                        '--random', '-o', model, '--quiet'], capture_output=True, text=True, timeout=600, env=env)
    if not check(p.returncode == 0, f"export_weights --random: {p.stderr.strip()[-600:]}"):
        return
    scan = os.path.join(work, 'bad', 'imagesTr', 'case01_0000.nii.gz')
    r = run([cli, 'stage', scan, '--model', model, '--device', 'cpu'])
    check(r.returncode == 1, f"stage of a NaN scan: exit {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")
    check(scan in r.stderr and '1 non-finite voxel' in r.stderr and 'model' not in r.stderr,
          f"stage of a NaN scan: {r.stderr.strip()!r}")
    mask = os.path.join(work, 'mask-bad', 'labelsTr', 'case00.nii.gz')
    scan0 = os.path.join(work, 'mask-bad', 'imagesTr', 'case00_0000.nii.gz')
    r = run([cli, 'stage', scan0, '--mask', mask, '--model', model, '--device', 'cpu'])
    check(r.returncode == 1 and mask in r.stderr and '1 non-finite voxel' in r.stderr,
          f"stage with a NaN mask voxel: exit {r.returncode}: {r.stderr.strip()!r}")


def check_resample(cli, work):
    """Trilinear weights of exactly 0 do not read the NaN."""
    src = os.path.join(work, 'nan.nii')
    rng = np.random.default_rng(1)
    a = rng.uniform(-5, 5, (9, 8, 7)).astype(np.float32)
    at = (4, 3, 2)
    a[at] = np.nan
    nib.save(nib.Nifti1Image(a, np.diag([1.25, 0.75, 2.5, 1.0])), src)  # float32-exact spacings: M = I
    out = os.path.join(work, 'same.nii')
    r = run([cli, 'resample', src, '-o', out, '--spacing', '1.25,0.75,2.5', '--order', '1'])
    if check(r.returncode == 0, f"resample identity: {r.stderr.strip()}"):
        o = np.asarray(nib.load(out).dataobj)
        bad = np.argwhere(np.isnan(o))
        check(bad.tolist() == [list(at)], f"resample identity grid, order 1: NaN at {bad.tolist()}, expected only {list(at)}")
        ok = ~np.isnan(a)
        check(np.array_equal(o[ok], a[ok]), "resample identity grid, order 1: the other voxels equal the source")
    out = os.path.join(work, 'shape.nii')
    r = run([cli, 'resample', src, '-o', out, '--shape', '20,13,7', '--order', '1'])
    if check(r.returncode == 0, f"resample --shape: {r.stderr.strip()}"):
        o = np.asarray(nib.load(out).dataobj)
        zs = sorted(set(int(z) for z in np.argwhere(np.isnan(o))[:, 2]))
        check(zs == [at[2]], f"resample --shape keeping the slices, order 1: NaN in slices {zs}, expected only {at[2]}")


def main():
    args = harness.parser().parse_args()
    cirrdata = harness.load_binding(args.lib)
    cli = args.cirrdata
    work = tempfile.mkdtemp(prefix='cirrdata-nonfinite-', dir=args.workdir)
    try:
        bad, good = os.path.join(work, 'bad'), os.path.join(work, 'good')
        make_layout(bad, repaired=False)
        make_layout(good, repaired=True)
        check(int(np.isnan(nib.load(os.path.join(bad, 'imagesTr', 'case01_0000.nii.gz')).get_fdata()).sum()) == 1,
              "the damaged source has its NaN")
        with np.errstate(over='ignore'):
            f3 = np.asarray(nib.load(os.path.join(bad, 'imagesTr', 'case03_0000.nii.gz')).get_fdata(), np.float32)
        check(int((~np.isfinite(f3)).sum()) == len(OVERFLOW_AT), "case03 overflows float32 at 5 voxels")
        r = run([cli, 'convert', '--layout', 'nnunet', bad, '--out', os.path.join(work, 'x'), '--non-finite', 'nan'])
        check(r.returncode == 2 and '--non-finite' in r.stderr, f"convert --non-finite nan: {r.returncode} {r.stderr.strip()}")
        check_resample(cli, work)
        for preset in ('nnunet-3d', 'cirrhosisstage-2d'):
            check_recipe(cli, cirrdata, work, preset, bad, good)
        check_mask(cli, cirrdata, work)
        check_stage(cli, work)
    except Exception as e:  # a failure, not a run without a summary line
        harness.CHECKS.crashed(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary('nonfinite')


if __name__ == '__main__':
    sys.exit(main())
