#!/usr/bin/env python3
"""Installing the Python package from a clean clone, both ways README.md gives, and using it from elsewhere.

  /usr/bin/python3 tests/python/test_python_install.py [--repo DIR] [--workdir DIR] [--keep]

Clones the repository's HEAD (committed work only: uncommitted changes are not in the clone) and:
(a) `python3 -m venv --system-site-packages V` and `V/bin/python -m pip install --no-build-isolation CLONE`
    (meson-python: pyproject.toml); the venv's `cirrdata` CLI (linked with the library, no libcirrdata.so
    needed) makes a small dataset (`synth` + `convert --recipe raw`);
(b) `meson setup --prefix P` + `meson install` of the clone;
then, from another folder with an environment holding only PATH and HOME (no CIRRDATA_LIB, PYTHONPATH,
LD_LIBRARY_PATH), imports cirrdata from the venv and from P (PYTHONPATH = P's package folder alone):
each loads the library installed with it (cirrdata.library_path() inside the venv / P), has the project's
version, and reads record 0 of the dataset equal to the independent reader (tests/python/cdshard.py).
Every module of python/cirrdata/ must be installed both ways. Last, `pip uninstall` removes the package
and the CLI from the venv. Exit 77 (skipped) when the repository is not a git checkout.
Prints the time of each step; ends with `python install: N passed, M failed`.
"""
import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import harness  # noqa: E402
from harness import check  # noqa: E402

STEP_TIMEOUT_S = 900
# Both builds unoptimised, without debug information: about a third less compile time on 2 cores, and
# what is tested here (what gets installed where, and what the package loads) does not depend on it.
QUICK = ['-Doptimization=0', '-Ddebug=false']
# Run by the installed package's interpreter: where it came from, and record 0 of the dataset.
READER = r'''
import hashlib, json, sys
import cirrdata
with cirrdata.Dataset(sys.argv[1]) as ds:
    r = ds[0]
    print(json.dumps({'file': cirrdata.__file__, 'library': cirrdata.library_path(), 'version': cirrdata.version(),
                      'package_version': cirrdata.__version__, 'records': len(ds), 'key': r['key'],
                      'tensors': {n: [list(r[n].shape), str(r[n].dtype), hashlib.sha256(r[n].tobytes()).hexdigest()]
                                  for n in ('image', 'mask')}}))
'''
TIMES = []


def step(what, cmd, env=None, cwd=None):
    """Runs cmd, records its time; True when it exits 0 (else one failure with the output's tail)."""
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, env=env, cwd=cwd,
                       stdin=subprocess.DEVNULL)
    TIMES.append((what, time.monotonic() - t))
    return check(r.returncode == 0, '%s: exit %d: %s\n%s' % (what, r.returncode, ' '.join(cmd),
                                                             (r.stdout + r.stderr)[-3000:])), r


def clean_env(home, **extra):
    env = {'PATH': '/usr/bin:/bin', 'HOME': home, 'LANG': 'C.UTF-8', 'PYTHONDONTWRITEBYTECODE': '1'}
    env.update(extra)
    return env


def expected_record(ds):
    import cdshard  # numpy, xxhash, zstandard
    manifest, recs = cdshard.read_dataset(ds)
    t = recs[0]['tensors']
    return len(recs), recs[0]['metadata']['key'], {
        n: [list(t[n].shape), str(t[n].dtype), hashlib.sha256(t[n].tobytes()).hexdigest()] for n in ('image', 'mask')}


def check_import(label, python, env, elsewhere, ds, root, version, expected):
    """The installed package imported from elsewhere: its library under root, record 0 as expected."""
    ok, r = step('%s: import cirrdata and read record 0' % label, [python, '-c', READER, ds], env=env, cwd=elsewhere)
    if not ok:
        return
    got = json.loads(r.stdout)
    root = os.path.realpath(root) + os.sep
    check(os.path.realpath(got['file']).startswith(root), '%s: cirrdata is imported from %s, not %s'
          % (label, root, got['file']))
    check(os.path.realpath(got['library']).startswith(root), '%s: the library loaded is the installed one under %s, not %s'
          % (label, root, got['library']))
    check(got['version'] == version and got['package_version'] == version, '%s: library %s and package %s are version %s'
          % (label, got['version'], got['package_version'], version))
    n, key, tensors = expected
    check(got['records'] == n and got['key'] == key, '%s: %d records, record 0 %s (cdshard: %d, %s)'
          % (label, got['records'], got['key'], n, key))
    check(got['tensors'] == tensors, '%s: record 0\'s image and mask equal cdshard\'s: %s vs %s'
          % (label, got['tensors'], tensors))
    return got


def check_modules(label, src_pkg, installed_pkg, extra):
    want = {os.path.basename(p) for p in glob.glob(os.path.join(src_pkg, '*.py'))} | set(extra)
    have = set(os.listdir(installed_pkg)) if os.path.isdir(installed_pkg) else set()
    check(want <= have, '%s: every module of python/cirrdata is installed in %s; missing %s'
          % (label, installed_pkg, sorted(want - have)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--repo', default=harness.ROOT, help='the repository to clone (default: this checkout)')
    ap.add_argument('--workdir')
    ap.add_argument('--keep', action='store_true', help='keep the temporary folder')
    args = ap.parse_args()
    head = subprocess.run(['git', '-C', args.repo, 'rev-parse', 'HEAD'], capture_output=True, text=True)
    if head.returncode != 0:
        print('skipped: %s is not a git checkout (%s)' % (args.repo, head.stderr.strip()))
        return 77
    dirty = subprocess.run(['git', '-C', args.repo, 'status', '--porcelain', '--untracked-files=no'],
                           capture_output=True, text=True).stdout.strip()
    print('testing commit %s%s' % (head.stdout.strip(), ' (uncommitted changes are not tested)' if dirty else ''))
    version = None
    work = tempfile.mkdtemp(prefix='cd-pyinstall-', dir=args.workdir)
    try:
        src, venv, prefix = os.path.join(work, 'src'), os.path.join(work, 'venv'), os.path.join(work, 'prefix')
        elsewhere = os.path.join(work, 'elsewhere')
        os.makedirs(elsewhere)
        if not step('git clone', ['git', 'clone', '--quiet', args.repo, src])[0]:
            return harness.summary('python install')
        with open(os.path.join(src, 'python', 'cirrdata', '_version.py')) as f:
            version = f.read().split("__version__ = '")[1].split("'")[0]
        # (a) pip in a venv that sees Debian's packages (numpy, meson-python).
        vpy = os.path.join(venv, 'bin', 'python')
        step('venv', [sys.executable, '-m', 'venv', '--system-site-packages', venv])
        step('pip install', [vpy, '-m', 'pip', 'install', '--no-build-isolation', '--no-index', '--progress-bar', 'off',
                             '--config-settings=compile-args=-j2']
             + ['--config-settings=setup-args=' + a for a in QUICK] + [src], env=clean_env(work))
        site = subprocess.run([vpy, '-c', 'import sysconfig; print(sysconfig.get_path("platlib"))'],
                              capture_output=True, text=True, env=clean_env(work)).stdout.strip()
        vpkg = os.path.join(site, 'cirrdata')
        check_modules('pip', os.path.join(src, 'python', 'cirrdata'), vpkg, ['_installed.py', 'libcirrdata.so'])
        # The venv's CLI carries the library: it runs with no libcirrdata.so on the loader's path.
        cli = os.path.join(venv, 'bin', 'cirrdata')
        ldd = subprocess.run(['ldd', cli], capture_output=True, text=True).stdout
        check(os.access(cli, os.X_OK) and 'libcirrdata' not in ldd, 'pip installs the CLI as %s, without a libcirrdata.so '
              'dependency: %s' % (cli, ldd))
        data, ds = os.path.join(work, 'synth'), os.path.join(work, 'ds')
        ok, r = step('venv CLI: --version', [cli, '--version'], env=clean_env(work), cwd=elsewhere)
        check(r.stdout.strip() == 'cirrdata ' + version, 'the venv CLI is version %s: %s' % (version, r.stdout))
        step('venv CLI: synth', [cli, 'synth', '--layout', 'cirrmri600', data, '--cases', '2', '--seed', '5',
                                 '--no-healthy', '--quiet'], env=clean_env(work), cwd=elsewhere)
        step('venv CLI: convert', [cli, 'convert', '--layout', 'cirrmri600', data, '--out', ds, '--recipe', 'raw',
                                   '--quiet'], env=clean_env(work), cwd=elsewhere)
        expected = expected_record(ds)
        got = check_import('pip', vpy, clean_env(work), elsewhere, ds, venv, version, expected)
        if got:
            check(got['library'] == os.path.join(vpkg, 'libcirrdata.so'), 'pip: the library is the package\'s own '
                  'libcirrdata.so, not %s' % got['library'])
        # (b) meson install into a prefix, building only the library and the CLI.
        build = os.path.join(work, 'build')
        step('meson setup', ['meson', 'setup', build, src, '--prefix', prefix, '-Dtests=false', '-Dbenchmarks=false'] + QUICK)
        step('meson compile', ['ninja', '-C', build, '-j2'])
        step('meson install', ['meson', 'install', '-C', build, '--no-rebuild', '--quiet'])
        inits = glob.glob(os.path.join(prefix, '**', 'cirrdata', '__init__.py'), recursive=True)
        check(len(inits) == 1, 'meson install puts one cirrdata package under %s: %s' % (prefix, inits))
        if inits:
            ppkg = os.path.dirname(inits[0])
            check_modules('meson install', os.path.join(src, 'python', 'cirrdata'), ppkg, ['_installed.py'])
            got = check_import('meson install', '/usr/bin/python3', clean_env(work, PYTHONPATH=os.path.dirname(ppkg)),
                               elsewhere, ds, prefix, version, expected)
            libs = glob.glob(os.path.join(prefix, 'lib*', '**', 'libcirrdata.so.*'), recursive=True)
            if got:
                check(got['library'] in libs, 'meson install: the library is the one installed in libdir %s, not %s'
                      % (libs, got['library']))
        # Uninstalling (what a root install with --break-system-packages is undone by) leaves nothing.
        step('pip uninstall', [vpy, '-m', 'pip', 'uninstall', '-y', 'cirrdata'], env=clean_env(work))
        check(not os.path.exists(vpkg) and not os.path.exists(cli), 'pip uninstall removes %s and %s' % (vpkg, cli))
    except Exception as e:
        harness.CHECKS.crashed(e)
    finally:
        if args.keep:
            print('kept', work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print('times: ' + ', '.join('%s %.1f s' % t for t in TIMES) + '; total %.1f s' % sum(t for _, t in TIMES))
    return harness.summary('python install')


if __name__ == '__main__':
    sys.exit(main())
