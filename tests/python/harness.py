"""Pieces the Python tests share: pass/fail counting and the summary line, the common command-line
arguments, running the CLI, loading the binding, hashing a tree and reading the process's resources.

Only the standard library is imported here, and nothing loads libcirrdata: a test imports this first and
load_binding() re-executes under ASan (tests/python/asan_reexec.py) before the binding is imported.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import traceback

from asan_reexec import child_env, reexec_under_asan

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PYTHON_DIR = os.path.join(ROOT, 'python')
SANITIZER_MARKS = ('AddressSanitizer', 'runtime error', 'LeakSanitizer')


class Checks:
    """Counts checks; prints one line per failure, `FAIL name: detail` (detail cut to detail_limit)."""

    def __init__(self, detail_limit=600):
        self.passed = 0
        self.failed = 0
        self.detail_limit = detail_limit

    def count(self, ok, fail_line):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(fail_line, flush=True)
        return ok

    def check(self, ok, name, detail=''):
        d = str(detail)[:self.detail_limit] if self.detail_limit else str(detail)
        return self.count(ok, 'FAIL %s%s' % (name, (': ' + d) if detail else ''))

    def crashed(self, e):
        """An exception that escaped the checks: one failure (with the traceback), not a run without summary."""
        traceback.print_exc()
        self.check(False, 'unexpected exception', repr(e))

    def summary(self, label):
        """Prints the last line, `label: N passed, M failed`; returns the exit status."""
        print(f'{label}: {self.passed} passed, {self.failed} failed')
        return 1 if self.failed else 0


# The tests written as plain functions share one counter and print `FAIL: what`.
CHECKS = Checks()


def check(ok, what):
    return CHECKS.count(ok, f'FAIL: {what}')


def summary(label):
    return CHECKS.summary(label)


def parser(doc=None, cli=True, lib='required'):
    """The arguments every test takes: --cirrdata (the CLI), --lib (libcirrdata.so: 'required', 'optional'
    or None for none) and --workdir; the test adds its own."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if cli:
        ap.add_argument('--cirrdata', required=True, help='the cirrdata CLI')
    if lib:
        ap.add_argument('--lib', required=lib == 'required', help='libcirrdata.so of the build')
    ap.add_argument('--workdir')
    return ap


def load_binding(lib):
    """Re-executes under ASan when lib needs it, then imports the binding against lib and returns it."""
    reexec_under_asan(lib)
    os.environ['CIRRDATA_LIB'] = os.path.abspath(lib)
    if PYTHON_DIR not in sys.path:
        sys.path.insert(0, PYTHON_DIR)
    import cirrdata
    return cirrdata


def run(cmd, timeout=600, **kw):
    """subprocess.run with text output captured (a CLI child of a test re-executed under ASan is
    leak-checked: asan_reexec.child_env)."""
    kw['env'] = child_env(cmd, kw.get('env'))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def run_rc(cmd, timeout=600):
    """(exit status, stdout, stderr) with stdin closed; output decoded leniently."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout,
                       env=child_env(cmd))
    return p.returncode, p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')


def sanitizer_report(stderr):
    return any(s in stderr for s in SANITIZER_MARKS)


def write_json(path, obj):
    with open(path, 'w') as f:
        json.dump(obj, f)
    return path


def write_manifest(path, manifest):
    """Writes the dict `manifest` as a manifest.json file with a valid manifest_xxh3 (the checksum is
    recomputed), so that a test that edits a manifest tests what it edited, not the checksum. path may be
    the dataset directory or the file."""
    import cdshard  # numpy, xxhash: not loaded by the tests that do not need them
    if os.path.isdir(path):
        path = os.path.join(path, 'manifest.json')
    with open(path, 'wb') as f:
        f.write(cdshard.seal_manifest(manifest))
    return path


def tree_hashes(d):
    """{path relative to d: sha256} of every file below d."""
    out = {}
    for root, _, files in os.walk(d):
        for n in files:
            p = os.path.join(root, n)
            with open(p, 'rb') as f:
                out[os.path.relpath(p, d)] = hashlib.sha256(f.read()).hexdigest()
    return out


def rss_kb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def fd_thread_counts():
    """(open file descriptors, threads) of this process."""
    return len(os.listdir('/proc/self/fd')), len(os.listdir('/proc/self/task'))


# A raw recipe (no resampling, cropping or normalisation) for the tiny nnU-Net sets of make_source().
TINY_RECIPE = {"name": "tiny-raw", "version": 1, "reorient": "RAS",
               "resample": {"mode": "none", "image_order": 1, "mask_order": 0, "anisotropy_threshold": 3.0},
               "crop": {"mode": "none", "margin": [0, 0, 0]},
               "normalize": {"mode": "none", "region": "volume", "percentiles": [0.5, 99.5], "range": [0.0, 1.0]},
               "dtype": "auto", "mask_dtype": "uint8", "chunk": [8, 8, 8], "zstd_level": 3}


def write_nnunet(root, cases):
    """An nnU-Net v2 layout in root from (name, image, mask, affine) tuples, with its dataset.json."""
    import nibabel as nib
    os.makedirs(os.path.join(root, "imagesTr"))
    os.makedirs(os.path.join(root, "labelsTr"))
    n = 0
    for name, img, mask, aff in cases:
        nib.save(nib.Nifti1Image(img, aff), os.path.join(root, "imagesTr", f"{name}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(mask, aff), os.path.join(root, "labelsTr", f"{name}.nii.gz"))
        n += 1
    write_json(os.path.join(root, "dataset.json"),
               {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "liver": 1},
                "numTraining": n, "file_ending": ".nii.gz"})


def make_source(root, ncases=4, seed=17):
    """A tiny nnU-Net v2 layout: int16 images with smooth structure, uint8 masks with a blob."""
    import numpy as np
    rng = np.random.default_rng(seed)
    shape = (21, 18, 11)
    g = np.indices(shape).astype(np.float64)

    def case(i):
        aff = np.diag([1.5, 1.25, 3.0, 1.0])
        aff[:3, 3] = rng.uniform(-50, 50, 3)
        img = (200 * np.sin(g[0] / (3 + i)) + 150 * np.cos(g[1] / 4) + 40 * g[2] + rng.normal(0, 20, shape)).astype(np.int16)
        c = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
        mask = (((g[0] - c[0]) / 6) ** 2 + ((g[1] - c[1]) / 5) ** 2 + ((g[2] - c[2]) / 3) ** 2 <= 1).astype(np.uint8)
        return f"case{i:02d}", img, mask, aff

    write_nnunet(root, (case(i) for i in range(ncases)))


def tiny_source(work, ncases=4):
    """make_source() in work/src and TINY_RECIPE in work/tiny.json: (source dir, recipe path)."""
    src = os.path.join(work, "src")
    make_source(src, ncases=ncases)
    return src, write_json(os.path.join(work, "tiny.json"), TINY_RECIPE)
