#!/usr/bin/env python3
"""The Python package against the library it loads (cirrdata/_abi.py, cirrdata/abi.h, cirrdata/_lib.py).

  /usr/bin/python3 tests/python/test_abi.py --lib build/libcirrdata/libcirrdata.so --build build

(a) cd_abi_struct_size knows every public struct with a body in libcirrdata/include/cirrdata/ and gives
    the size that a C program compiled against those headers gives; 0 for an unknown name and NULL;
(b) cirrdata._abi.MIRRORS lists every ctypes.Structure subclass in python/cirrdata/, and each has the
    library's size;
(c) importing the package with one mirror a field longer than the library's struct, or with another
    package version, raises ImportError naming the struct, both sizes (or both versions), the library's
    path and what to do; unchanged, the same import works;
(d) the library search order: CIRRDATA_LIB (alone) > the library an installed copy's _installed.py names
    > the build tree of a source checkout > find_library, with every place tried in the ImportError.
Ends with `abi: N passed, M failed`.
"""
import ast
import ctypes
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import harness  # noqa: E402
from harness import check  # noqa: E402

ROOT = harness.ROOT
PKG = os.path.join(harness.PYTHON_DIR, 'cirrdata')
HEADERS = os.path.join(ROOT, 'libcirrdata', 'include', 'cirrdata')
STRUCT = re.compile(r'\bstruct\s+(cd_\w+)\s*\{')

# Imports the package from argv[1] (a package directory) after changing one thing: 'field' gives the
# mirror of cd_batch one more field, 'version' another package version, 'none' nothing.
CHILD = r'''
import ctypes, importlib.util, os, sys
pkg_dir, what = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location('cirrdata', os.path.join(pkg_dir, '__init__.py'),
                                              submodule_search_locations=[pkg_dir])
pkg = importlib.util.module_from_spec(spec)
sys.modules['cirrdata'] = pkg  # submodules import without running __init__ yet
if what == 'field':
    import cirrdata.loader as L
    L._Batch = type('_Batch', (ctypes.Structure,), {'__module__': 'cirrdata.loader',
                    '_fields_': L._Batch._fields_ + [('extra', ctypes.c_uint64)]})
elif what == 'version':
    import cirrdata._version as V
    V.__version__ = '9.8.7'
try:
    spec.loader.exec_module(pkg)
except ImportError as e:
    print('ImportError: %s' % e)
    sys.exit(3)
print('imported %s' % pkg.library_path())
'''


def child_env(**extra):
    # meson test puts the build's library folder on LD_LIBRARY_PATH, where find_library would see it
    env = {k: v for k, v in os.environ.items() if k not in ('CIRRDATA_LIB', 'PYTHONPATH', 'LD_LIBRARY_PATH')}
    env['PYTHONDONTWRITEBYTECODE'] = '1'
    env.update(extra)
    return env


def run(cmd, env, cwd=None):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    check(not harness.sanitizer_report(r.stderr), 'sanitizer report from %s: %s' % (cmd, r.stderr[-800:]))
    return r


def public_structs():
    names = set()
    for h in glob.glob(os.path.join(HEADERS, '*.h')):
        with open(h, encoding='utf-8') as f:
            names.update(STRUCT.findall(f.read()))
    return sorted(names)


def compiler_sizes(names, build, work):
    """{name: sizeof(struct name)} from a program compiled against the public headers."""
    src = os.path.join(work, 'sizes.c')
    with open(src, 'w') as f:
        f.write('#define CIRRDATA_ADVANCED_API\n#include <stdio.h>\n#include "cirrdata/cirrdata.h"\n'
                'int main(void) {\n')
        for n in names:
            f.write('    printf("%%s %%zu\\n", "%s", sizeof(struct %s));\n' % (n, n))
        f.write('    return 0;\n}\n')
    exe = os.path.join(work, 'sizes')
    r = subprocess.run(['cc', '-std=c17', '-Wall', '-Werror', '-I', os.path.join(ROOT, 'libcirrdata', 'include'),
                        '-I', os.path.join(build, 'libcirrdata', 'include'), src, '-o', exe],
                       capture_output=True, text=True, timeout=120)
    if not check(r.returncode == 0, 'the sizes program compiles: %s' % r.stderr[-800:]):
        return {}
    env = {k: v for k, v in os.environ.items() if k != 'LD_PRELOAD'}  # a plain program: no ASan runtime
    out = subprocess.run([exe], capture_output=True, text=True, timeout=60, env=env).stdout
    return {n: int(s) for n, s in (line.split() for line in out.splitlines())}


def test_library_table(lib, build, work):
    names = public_structs()
    check(len(names) >= 30, 'found the public structs in %s (%d)' % (HEADERS, len(names)))
    size = lib.cd_abi_struct_size
    missing = [n for n in names if size(n.encode()) == 0]
    check(not missing, 'cd_abi_struct_size knows every public struct; unknown: %s' % missing)
    cc = compiler_sizes(names, build, work)
    check(sorted(cc) == names, 'the sizes program printed every struct: %s' % sorted(cc))
    wrong = ['%s: library %d, compiler %d' % (n, size(n.encode()), cc[n]) for n in cc if size(n.encode()) != cc[n]]
    check(not wrong, 'cd_abi_struct_size equals the compiler\'s sizeof: %s' % wrong)
    for bad in (b'', b'cd_nope', b'struct cd_error', b'CD_ERROR', b'cd_error '):
        check(size(bad) == 0, 'cd_abi_struct_size(%r) is 0, not %d' % (bad, size(bad)))
    check(size(None) == 0, 'cd_abi_struct_size(NULL) is 0')
    return names


def test_mirror_table(cirrdata, names):
    from cirrdata import _abi
    listed = {(cls.__module__, cls.__name__) for _, cls in _abi.MIRRORS}
    found = set()
    for path in glob.glob(os.path.join(PKG, '*.py')):
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), path)
        mod = 'cirrdata' if path.endswith('__init__.py') else 'cirrdata.' + os.path.basename(path)[:-3]
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b) in ('ctypes.Structure', 'Structure',
                                                                         'ctypes.Union', 'Union') for b in node.bases):
                found.add((mod, node.name))
    check(len(found) >= 9, 'found the package\'s ctypes mirrors (%d)' % len(found))
    check(found == listed, 'MIRRORS lists every ctypes mirror of the package: not listed %s; listed but not found %s'
          % (sorted(found - listed), sorted(listed - found)))
    for name, cls in _abi.MIRRORS:
        check(name in names, 'mirror %s names a public struct (%s)' % (cls.__name__, name))
        want = cirrdata._LIB.cd_abi_struct_size(name.encode())
        check(ctypes.sizeof(cls) == want, 'mirror %s.%s is %d bytes, struct %s %d' % (
            cls.__module__, cls.__name__, ctypes.sizeof(cls), name, want))
    check(_abi.mismatches(cirrdata._LIB) == [], 'no mismatch: %s' % _abi.mismatches(cirrdata._LIB))
    unknown = _abi.mismatches(cirrdata._LIB, [('cd_nope', _abi.MIRRORS[0][1])])
    check(len(unknown) == 1 and 'struct cd_nope is unknown to the library' in unknown[0], 'unknown struct: %s' % unknown)
    check(cirrdata.__version__ == cirrdata.version(), 'package %s, library %s' % (cirrdata.__version__, cirrdata.version()))


def test_import_fails(cirrdata, lib):
    libpath = os.path.abspath(lib)
    batch_size = cirrdata._LIB.cd_abi_struct_size(b'cd_batch')
    env = child_env(CIRRDATA_LIB=libpath)
    r = run([sys.executable, '-c', CHILD, PKG, 'none'], env)
    check(r.returncode == 0 and r.stdout.strip() == 'imported ' + libpath, 'unchanged: imports: %s %s' % (r.stdout, r.stderr[-600:]))
    r = run([sys.executable, '-c', CHILD, PKG, 'field'], env)
    text = r.stdout
    check(r.returncode == 3, 'a mirror one field longer: ImportError (exit %d: %s %s)' % (r.returncode, text, r.stderr[-600:]))
    for needle in ('struct cd_batch is %d bytes in the library but %d bytes in its mirror cirrdata.loader._Batch'
                   % (batch_size, batch_size + 8), 'the library %s does not match this package' % libpath,
                   'rebuild or reinstall', 'CIRRDATA_LIB'):
        check(needle in text, 'the ImportError says %r: %s' % (needle, text))
    check(text.count('bytes in the library') == 1, 'only cd_batch differs: %s' % text)
    r = run([sys.executable, '-c', CHILD, PKG, 'version'], env)
    text = r.stdout
    check(r.returncode == 3, 'another package version: ImportError (exit %d: %s %s)' % (r.returncode, text, r.stderr[-600:]))
    needle = 'the package is version 9.8.7 but the library is version %s' % cirrdata.version()
    check(needle in text and libpath in text, 'the ImportError says %r: %s' % (needle, text))


def copy_package(dst, installed=None):
    """A copy of the package's modules at dst/python/cirrdata, with an _installed.py naming installed."""
    pkg = os.path.join(dst, 'python', 'cirrdata')
    os.makedirs(pkg)
    for path in glob.glob(os.path.join(PKG, '*.py')):
        shutil.copy(path, pkg)
    if installed is not None:
        with open(os.path.join(pkg, '_installed.py'), 'w') as f:
            f.write('LIBRARY = %r\n' % installed)
    return os.path.join(dst, 'python')


def import_from(pythonpath, work, **env):
    r = run([sys.executable, '-c', 'import cirrdata; print("imported " + cirrdata.library_path())'],
            child_env(PYTHONPATH=pythonpath, **env), cwd=work)
    return r.returncode, (r.stdout + r.stderr).strip()


def test_search_order(lib, work):
    libpath = os.path.abspath(lib)
    system = run([sys.executable, '-c', 'import ctypes.util; print(ctypes.util.find_library("cirrdata") or "")'],
                 child_env()).stdout.strip() or None
    # A source checkout without a build: the build tree, then find_library.
    checkout = os.path.join(work, 'checkout')
    pp = copy_package(checkout)
    tree = os.path.join(checkout, 'build', 'libcirrdata', 'libcirrdata.so')
    rc, out = import_from(pp, work)
    if system is None:
        check(rc != 0 and 'ImportError' in out, 'no library anywhere: ImportError: %s' % out[-800:])
        check('build tree: %s does not exist' % tree in out, 'the ImportError names the build tree: %s' % out[-800:])
        check("find_library: ctypes.util.find_library('cirrdata') found nothing" in out,
              'the ImportError names find_library: %s' % out[-800:])
        check('installed with the package' not in out, 'a checkout has no installed library: %s' % out[-800:])
    else:
        print('note: find_library finds %s here; the no-library case is not checked' % system)
    os.makedirs(os.path.dirname(tree))
    os.symlink(libpath, tree)
    rc, out = import_from(pp, work)
    check(rc == 0 and out == 'imported ' + tree, 'a checkout loads its build tree: %s' % out[-800:])
    check(import_from(pp, work, CIRRDATA_LIB=libpath) == (0, 'imported ' + libpath), 'CIRRDATA_LIB before the build tree')
    # An installed copy: its own library first, and the build tree is not its business.
    inst = os.path.join(work, 'installed')
    pp = copy_package(inst, installed=libpath)
    os.makedirs(os.path.join(inst, 'build', 'libcirrdata'))
    os.symlink(libpath, os.path.join(inst, 'build', 'libcirrdata', 'libcirrdata.so'))
    check(import_from(pp, work) == (0, 'imported ' + libpath), 'an installed copy loads the library _installed.py names')
    rel = os.path.join(work, 'relative')
    pp = copy_package(rel, installed='libcirrdata.so')
    os.symlink(libpath, os.path.join(pp, 'cirrdata', 'libcirrdata.so'))
    rc, out = import_from(pp, work)
    check(rc == 0 and out == 'imported ' + os.path.join(pp, 'cirrdata', 'libcirrdata.so'),
          'a relative LIBRARY is inside the package directory: %s' % out[-800:])
    gone = os.path.join(work, 'gone')
    pp = copy_package(gone, installed='libgone.so')
    rc, out = import_from(pp, work)
    if system is None:
        check(rc != 0 and 'installed with the package: %s does not exist' % os.path.join(pp, 'cirrdata', 'libgone.so') in out,
              'a missing installed library: ImportError naming it: %s' % out[-800:])
        check('build tree' not in out and 'find_library' in out, 'then find_library only: %s' % out[-800:])
    check(import_from(pp, work, CIRRDATA_LIB=libpath) == (0, 'imported ' + libpath), 'CIRRDATA_LIB before the installed one')
    rc, out = import_from(os.path.join(inst, 'python'), work, CIRRDATA_LIB=os.path.join(work, 'nope.so'))
    check(rc != 0 and 'CIRRDATA_LIB: %s does not exist' % os.path.join(work, 'nope.so') in out
          and 'installed with the package' not in out and 'find_library' not in out,
          'CIRRDATA_LIB is the only place tried when set: %s' % out[-800:])


def main():
    ap = harness.parser(__doc__, cli=False)
    ap.add_argument('--build', required=True, help='the meson build folder (for the generated cirrdata/version.h)')
    args = ap.parse_args()
    harness.reexec_under_asan(args.lib)
    work = tempfile.mkdtemp(prefix='cd-abi-', dir=args.workdir)
    try:
        lib = ctypes.CDLL(os.path.abspath(args.lib))  # the table without the package: its import may fail
        lib.cd_abi_struct_size.argtypes, lib.cd_abi_struct_size.restype = [ctypes.c_char_p], ctypes.c_size_t
        names = test_library_table(lib, args.build, work)
        try:
            cirrdata = harness.load_binding(args.lib)
        except ImportError as e:
            check(False, 'the package imports against %s: %s' % (args.lib, e))
            return harness.summary('abi')
        test_mirror_table(cirrdata, names)
        test_import_fails(cirrdata, args.lib)
        test_search_order(args.lib, work)
    except Exception as e:
        harness.CHECKS.crashed(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary('abi')


if __name__ == '__main__':
    sys.exit(main())
