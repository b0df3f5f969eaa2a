"""Running Python tests against an ASan-instrumented libcirrdata (the sanitizer build of the suite).

An uninstrumented interpreter can only dlopen an ASan library if the ASan runtime is loaded first, so a
test that loads the library re-executes itself once with the runtime in LD_PRELOAD and detect_leaks=0
for that process only (CPython itself is not leak-clean; the C unit tests keep leak checking). UBSan's
halt_on_error still applies. Child processes the test starts inherit the environment, so they work too.
"""
import os
import re
import subprocess
import sys

_FLAG = 'CIRRDATA_ASAN_REEXEC'


def reexec_under_asan(lib):
    """Call first thing in main(): returns when no re-execution is needed (or it already happened)."""
    if os.environ.get(_FLAG):
        return
    try:
        out = subprocess.run(['ldd', lib], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return
    m = re.search(r'libasan\.so\S*\s+=>\s+(\S+)', out)
    if not m:
        return
    env = dict(os.environ)
    env[_FLAG] = '1'
    env['LD_PRELOAD'] = (m.group(1) + ' ' + env.get('LD_PRELOAD', '')).strip()
    env['ASAN_OPTIONS'] = (env.get('ASAN_OPTIONS', '') + ':detect_leaks=0').strip(':')
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
