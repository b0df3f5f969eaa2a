#!/usr/bin/python3
"""cirrdata.Model (libcirrdata/nn) against PyTorch eval() on the same weights.

  /usr/bin/python3 tests/python/test_model_torch.py --lib build/libcirrdata/libcirrdata.so
  CIRRDATA_SLOW_TESTS=1 ... (adds ResNet-50 and VGG-19)

Each network is exported by tools/export_weights.py with random weights AND random batch-norm
statistics (--random --random-bn), so batch-norm folding is exercised with non-trivial gamma, beta,
mean and variance. The PyTorch reference is cirrdata.models.build(arch) (torchvision for the
ResNets and VGG) with the file's tensors loaded strictly and put in eval(); it shares nothing with
the C code. Inputs are random normal images: a batch of 2 at 3x256x256 (the staging size) and odd
sizes (3x97x131, ...) whose convolutions, pools and adaptive-pool bins hit the padding, ceil and
uneven-bin paths. The check is max|ours - torch| / max|torch| <= 1e-4: both accumulate in float32 in
different orders, which gives ~1e-6 here; a wrong op, fold or plan gives O(1).

Also: thread counts give bitwise-equal results (the GEMM's summation order does not depend on the
split), re-planning for alternating input shapes, and errors naming the file. With a Vulkan device
(lavapipe in CI) device='vulkan' is checked the same way; without one that part is skipped with the
reason printed, as is a network whose weights do not fit the device's memory (CD_ERR_NOMEM). A layer
larger than one storage-buffer binding (VGG-19's 392 MiB fc weight on lavapipe's 128 MiB
maxStorageBufferRange) is split by the executor, so a 'limit' error is a failure. The slow part runs
VGG-19 on Vulkan at 1x3x224x224 (its fc1 in 4 output-channel blocks; ~20 s on lavapipe).
Under the ASan build (re-executed with the ASan runtime) ResNet-18 runs at 2x3x128x128 instead of
256x256: instrumented -O0 code is about 10x slower, and the paths exercised are the same. Ends with one line `model_torch: N passed, M failed`.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from asan_reexec import reexec_under_asan  # noqa: E402

PASSED = 0
FAILED = 0
TOL = 1e-4


def check(ok, name, detail=''):
    global PASSED, FAILED
    if ok:
        PASSED += 1
        print('ok   %s%s' % (name, (': ' + str(detail)) if detail != '' else ''))
    else:
        FAILED += 1
        print('FAIL %s%s' % (name, (': ' + str(detail)[:600]) if detail != '' else ''))
    return ok


def export(arch, path, seed):
    cmd = [sys.executable, os.path.join(REPO, 'tools', 'export_weights.py'), '--arch', arch, '--random', '--random-bn',
           '--seed', str(seed), '-o', path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError('export failed: %s\n%s%s' % (' '.join(cmd), r.stdout, r.stderr))


def torch_model(arch, path):
    import torch
    from cirrdata import models, safetensors_io
    tensors, meta = safetensors_io.read(path)
    net = models.build(arch, int(meta['cirrdata.classes']))
    missing, unexpected = net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, strict=False)
    missing = [k for k in missing if not k.endswith('num_batches_tracked')]
    if missing or unexpected:
        raise RuntimeError('state_dict mismatch: missing %s, unexpected %s' % (missing, unexpected))
    return net.eval()


def rel_err(ours, ref):
    import numpy as np
    return float(np.max(np.abs(ours - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def compare(cd, net, arch, sizes, rng, label):
    import numpy as np
    import torch
    for n, h, w in sizes:
        x = rng.standard_normal((n, 3, h, w), dtype=np.float32)
        t0 = time.time()
        ours = cd.predict(x)
        t1 = time.time()
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        e = rel_err(ours, ref)
        check(ours.shape == ref.shape and e <= TOL, '%s %s %dx3x%dx%d vs torch' % (label, arch, n, h, w),
              'rel %.2e, ours %.2fs torch %.2fs' % (e, t1 - t0, time.time() - t1))


def test_network(arch, seed, sizes, tmp, rng, vulkan, vk_sizes=None):
    import cirrdata
    import numpy as np
    path = os.path.join(tmp, '%s.safetensors' % arch)
    export(arch, path, seed)
    net = torch_model(arch, path)
    with cirrdata.Model(path, device='cpu', threads=2) as cd:
        check(cd.arch == arch and cd.classes == 3 and cd.in_channels == 3 and cd.device.startswith('cpu'),
              '%s metadata' % arch, '%s %d %d %s' % (cd.arch, cd.classes, cd.in_channels, cd.device))
        compare(cd, net, arch, sizes, rng, 'cpu')
        # Thread count changes the work split, not the summation order: bitwise equal.
        n, h, w = sizes[-1]
        x = rng.standard_normal((n, 3, h, w), dtype=np.float32)
        a = cd.predict(x)
        with cirrdata.Model(path, device='cpu', threads=1) as one:
            b = one.predict(x)
        check(np.array_equal(a, b), '%s threads=2 equals threads=1 bitwise' % arch, float(np.max(np.abs(a - b))))
        # Alternating shapes re-plan the arena; the first result must come back unchanged.
        n0, h0, w0 = sizes[0]
        x0 = rng.standard_normal((n0, 3, h0, w0), dtype=np.float32)
        r0 = cd.predict(x0)
        cd.predict(x)
        check(np.array_equal(cd.predict(x0), r0), '%s re-planning for another shape and back' % arch)
    if vulkan is not None:
        try:
            vk = cirrdata.Model(path, device='vulkan')
        except cirrdata.CirrdataError as e:
            if e.status == 'nomem':  # the device's memory cannot hold the weights: not a bug
                print('skip %s vulkan: %s' % (arch, e))
            else:
                check(False, '%s vulkan open' % arch, str(e))
            return
        with vk:
            check(vk.device.startswith('vulkan'), '%s vulkan device' % arch, vk.device)
            compare(vk, net, arch, vk_sizes or sizes, rng, 'vulkan')


def test_api(tmp, rng):
    import cirrdata
    import numpy as np
    path = os.path.join(tmp, 'cirrnet-small.safetensors')
    try:
        cirrdata.Model(os.path.join(tmp, 'missing.safetensors'))
        check(False, 'missing file raises')
    except cirrdata.CirrdataError as e:
        check('missing.safetensors' in str(e), 'missing file raises naming it', str(e))
    bad = os.path.join(tmp, 'not-a-model.safetensors')
    with open(bad, 'wb') as f:
        f.write(b'\x02\x00\x00\x00\x00\x00\x00\x00{}')
    try:
        cirrdata.Model(bad)
        check(False, 'a safetensors file without a graph raises')
    except cirrdata.CirrdataError as e:
        check('not-a-model.safetensors' in str(e), 'a safetensors file without a graph raises naming it', str(e))
    m = cirrdata.Model(path, device='auto', threads=1)
    check(m.device_type in ('cpu', 'vulkan') and m.device, 'device=auto picks an executor', m.device)
    try:
        m.predict(np.zeros((1, 4, 8, 8), np.float32))
        check(False, 'wrong channel count raises')
    except ValueError:
        check(True, 'wrong channel count raises ValueError')
    y = m.predict(rng.standard_normal((3, 40, 40)).astype(np.float64))  # one image, float64: converted
    check(y.shape == (1, 3) and y.dtype == np.float32, 'a 3-D float64 image is one float32 image', y.shape)
    m.close()
    m.close()
    try:
        m.predict(np.zeros((1, 3, 8, 8), np.float32))
        check(False, 'closed model raises')
    except ValueError:
        check(True, 'closed model raises ValueError')


def vulkan_available(lib):
    """None (with the reason printed) unless this build has the Vulkan executor and a device."""
    if not os.path.exists(os.path.join(REPO, 'libcirrdata', 'nn', 'vk_exec.c')):
        print('skip vulkan: libcirrdata/nn/vk_exec.c is not in this tree')
        return None
    import cirrdata
    try:
        m = cirrdata.Model(os.path.join(TMP, 'cirrnet-small.safetensors'), device='vulkan')
    except cirrdata.CirrdataError as e:
        if e.status == 'unsupported':
            print('skip vulkan: %s' % e)
            return None
        raise
    dev = m.device
    m.close()
    return dev


TMP = None


def main():
    global TMP
    ap = argparse.ArgumentParser()
    ap.add_argument('--lib', required=True)
    args = ap.parse_args()
    reexec_under_asan(args.lib)
    os.environ['CIRRDATA_LIB'] = os.path.abspath(args.lib)
    sys.path.insert(0, os.path.join(REPO, 'python'))
    import numpy as np
    import torch
    torch.set_num_threads(2)
    slow = os.environ.get('CIRRDATA_SLOW_TESTS') == '1'
    asan = bool(os.environ.get('CIRRDATA_ASAN_REEXEC'))
    rng = np.random.default_rng(20261127)
    with tempfile.TemporaryDirectory(prefix='cd-model-') as tmp:
        TMP = tmp
        groups = []
        try:
            export('cirrnet-small', os.path.join(tmp, 'cirrnet-small.safetensors'), 11)
            vk = vulkan_available(args.lib)
            if vk:
                print('vulkan: %s' % vk)
        except Exception as e:
            import traceback
            traceback.print_exc()
            check(False, 'setup', repr(e))
            vk = None
        # The sanitizer build runs the same checks on smaller images (instrumented code is ~10x slower).
        big = [(2, 128, 128), (1, 97, 131)] if asan else [(2, 256, 256), (1, 97, 131)]
        groups.append(lambda: test_api(tmp, rng))
        groups.append(lambda: test_network('cirrnet-small', 11, [(2, 256, 256), (3, 97, 131), (1, 5, 7)], tmp, rng, vk))
        groups.append(lambda: test_network('resnet18', 5, big, tmp, rng, vk))
        if slow:
            groups.append(lambda: test_network('resnet50', 6, [(1, 256, 256), (1, 97, 131)], tmp, rng, vk))
            groups.append(lambda: test_network('vgg19', 7, [(1, 256, 256)], tmp, rng, vk, vk_sizes=[(1, 224, 224)]))
        else:
            print('skip resnet50, vgg19: set CIRRDATA_SLOW_TESTS=1')
        for g in groups:
            try:
                g()
            except Exception as e:  # a crash in one group is one failure, not the end of the run
                import traceback
                traceback.print_exc()
                check(False, 'group', repr(e))
    print('model_torch: %d passed, %d failed' % (PASSED, FAILED))
    return 1 if FAILED else 0


if __name__ == '__main__':
    sys.exit(main())
