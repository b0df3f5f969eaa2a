"""Running Python tests against an ASan-instrumented libcirrdata (the sanitizer build of the suite).

An uninstrumented interpreter can only dlopen an ASan library if the ASan runtime is loaded first, so a
test that loads the library re-executes itself once with the runtime in LD_PRELOAD and detect_leaks=0
for that process only (CPython itself is not leak-clean; the C unit tests keep leak checking). UBSan's
halt_on_error still applies. Child processes the test starts inherit the environment, so they work too;
child_env() gives a child that is an instrumented executable (the CLI) its leak checking back.
"""
import os
import re
import subprocess
import sys

_FLAG = 'CIRRDATA_ASAN_REEXEC'
_CHILD_OPTIONS = 'CIRRDATA_ASAN_CHILD_OPTIONS'  # the ASAN_OPTIONS before detect_leaks=0 was added


def child_env(cmd, env=None):
    """The environment for running cmd from a re-executed test: an instrumented executable (the CLI)
    gets the original ASAN_OPTIONS back, so its leaks are checked; a Python interpreter keeps
    detect_leaks=0 (CPython is not leak-clean). None when nothing changes."""
    base = dict(os.environ if env is None else env)
    if not base.get(_FLAG) or _CHILD_OPTIONS not in base or not cmd:
        return env
    if 'python' in os.path.basename(str(cmd[0])):
        return env
    base['ASAN_OPTIONS'] = base[_CHILD_OPTIONS]
    return base


def env_without_asan(env=None):
    """A copy of the environment (default os.environ) without the ASan runtime in LD_PRELOAD: for a
    pure-Python child (torch, the exporter) that loads no libcirrdata, whose start the runtime slows
    several times."""
    out = dict(os.environ if env is None else env)
    out['LD_PRELOAD'] = ' '.join(p for p in out.get('LD_PRELOAD', '').replace(':', ' ').split() if 'libasan' not in p)
    return out


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
    env[_CHILD_OPTIONS] = env.get('ASAN_OPTIONS', '')
    env['ASAN_OPTIONS'] = (env.get('ASAN_OPTIONS', '') + ':detect_leaks=0').strip(':')
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
