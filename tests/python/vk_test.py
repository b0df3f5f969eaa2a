"""What the Python tests of the Vulkan path share: whether this machine must have a Vulkan device,
the validation environment for the processes they start, and the CLI's Vulkan totals.

A machine without any Vulkan device skips these tests (exit 77) unless it must have one: where
CIRRDATA_TEST_REQUIRE_VULKAN=1, or (unset) where lavapipe's driver manifest is installed (Debian:
mesa-vulkan-drivers), a device that does not open is a failure. tests/unit/gpu_test_util.h decides
the same way for the C tests. Standard library only.
"""
import glob
import os
import re

SKIP = 77  # meson counts this exit status as a skipped test

_ICD_DIRS = ('/usr/share/vulkan/icd.d', '/usr/local/share/vulkan/icd.d', '/etc/vulkan/icd.d')


def vulkan_required():
    v = os.environ.get('CIRRDATA_TEST_REQUIRE_VULKAN', '')
    if v:
        return v != '0'
    return any(glob.glob(os.path.join(d, 'lvp_icd*.json')) for d in _ICD_DIRS)


def validation_env(base=None, stats=True):
    """The environment of a CLI process that must run under the validation layer (with
    synchronization validation) and print its Vulkan totals at exit (CIRRDATA_VK_STATS=1, parsed by
    cli_stats); the CLI exits 1 on any validation message, teardown included."""
    env = dict(os.environ if base is None else base)
    env['CIRRDATA_VK_VALIDATION'] = '1'
    env['VK_INSTANCE_LAYERS'] = 'VK_LAYER_KHRONOS_validation'
    env['VK_KHRONOS_VALIDATION_ENABLES'] = 'VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT'
    if stats:
        env['CIRRDATA_VK_STATS'] = '1'
    return env


_STATS = re.compile(r'cirrdata: vulkan stats: contexts (\d+), submissions (\d+), cpu_fallback (\d+), validation_messages (\d+)')


def cli_stats(stderr):
    """The totals a CLI run printed with CIRRDATA_VK_STATS=1: a dict (contexts, submissions,
    cpu_fallback, validation_messages), or None when the line is missing."""
    m = _STATS.search(stderr)
    if not m:
        return None
    return dict(zip(('contexts', 'submissions', 'cpu_fallback', 'validation_messages'), map(int, m.groups())))


def predict_checked(model, x, check, what):
    """model.predict(x) and its seconds; for a Vulkan model (a cirrdata.Model) also check(ok, what, detail)
    that it ran on the device: this process's submissions grew and nothing fell back to the CPU."""
    import time
    from cirrdata.model import vulkan_stats
    before = vulkan_stats() if model.device_type == 'vulkan' else None
    t0 = time.time()
    out = model.predict(x)
    seconds = time.time() - t0
    if before:
        after = vulkan_stats()
        check(after['submissions'] > before['submissions'] and after['cpu_fallback'] == before['cpu_fallback'],
              '%s ran on the device' % what, '%s -> %s' % (before, after))
    return out, seconds
