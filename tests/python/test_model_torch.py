#!/usr/bin/python3
"""cirrdata.Model (libcirrdata/nn) against PyTorch eval() on the same weights.

  /usr/bin/python3 tests/python/test_model_torch.py --lib build/libcirrdata/libcirrdata.so
  CIRRDATA_SLOW_TESTS=1 ... (ResNet-50 and VGG-19 at full size too)

Each network is exported by tools/scripts/export_weights.py with random weights AND random batch-norm
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
float16 storage (device='vulkan', fp16=True; lavapipe offers storageBuffer16BitAccess, so the fp16
kernels really run): cirrnet-small and ResNet-18 are checked against PyTorch with FP16_TOL = 1e-2.
Why: every stored weight and activation is rounded to binary16, a relative error of at most 2^-11
(4.9e-4) per value; ResNet-18 stores ~25 tensors between input and logits (plus its weights), and
independent roundings add up roughly like sqrt(count) x 2^-11 ~ 2.5e-3 of the logits' scale (measured
here: 0.8e-3 to 1.7e-3, against ~1e-6 in float32). 1e-2 (~20 roundings) leaves margin for unlucky
draws while a wrong op, stride or offset gives O(1). Also checked: the fp16 result differs from the
float32 one by more than 10x float32's own error (the fp16 path really ran; for ResNet-18, to save a
run, from PyTorch's by more than 1e-5), the argmax equals PyTorch's
for every image whose top-two margin exceeds the allowed error (2 x FP16_TOL x max|ref|), the device
name says (fp16), and no validation message is printed (CIRRDATA_VK_VALIDATION_PRINT, stderr read
back). With CIRRDATA_NN_NO_FP16=1 (a device without 16-bit storage, pretended) fp16=True gives
'(fp32)' and float32's 1e-4.
Under the ASan build (re-executed with the ASan runtime) ResNet-18 runs at 2x3x128x128 instead of
256x256: instrumented -O0 code is about 10x slower, and the paths exercised are the same.
The deep member of each family runs in the default suite too, at a small input (ResNet-50 at
1x3x64x64, VGG-19 at 1x3x32x32: its adaptive pool then repeats one pixel into 7x7, and its 392 MiB
fc1 is still split on Vulkan), on the C executor and on Vulkan in float32; CIRRDATA_SLOW_TESTS=1 adds
the full-size runs.
Vulkan runs have the Khronos validation layer on (this test sets CIRRDATA_VK_VALIDATION=1): after each
model is closed the process's count of validation messages (cd_gpu_process_stats, which includes what
the layer reports while a context is destroyed) must still be 0, and each comparison must have run on
the device (command buffers submitted, nothing computed by the C reference). Where no Vulkan device
opens although one is required (lavapipe installed, or CIRRDATA_TEST_REQUIRE_VULKAN=1; vk_test.py)
that is a failure, not a skip.
A forward pass past CIRRDATA_VK_TIMEOUT_S (forced: 1 microsecond) is a lost device to the device
policy: after one re-created context the device is given up and the C executor answers, and the model
then closes through its finaliser without a crash or a validation message (it used to crash the
interpreter).
Ends with one line `model_torch: N passed, M failed`.
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
from asan_reexec import env_without_asan, reexec_under_asan  # noqa: E402
import vk_test  # noqa: E402

PASSED = 0
FAILED = 0
TOL = 1e-4
FP16_TOL = 1e-2  # see the module docstring


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
    cmd = [sys.executable, os.path.join(REPO, 'tools', 'scripts', 'export_weights.py'), '--arch', arch, '--random', '--random-bn',
           '--seed', str(seed), '-o', path]
    # Pure Python and torch, no libcirrdata: without the ASan runtime the sanitizer build preloads
    # (asan_reexec.py), which makes torch's start and a 560 MB export several times slower.
    r = subprocess.run(cmd, capture_output=True, text=True, env=env_without_asan())
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


def vk_stats():
    from cirrdata.model import vulkan_stats
    return vulkan_stats()


def check_vk_clean(label):
    """After a Vulkan model is closed: no validation message in this process so far, those reported
    while its context was destroyed included."""
    s = vk_stats()
    check(s['validation_messages'] == 0, '%s: no Vulkan validation message (teardown included)' % label,
          '%d, first: %s' % (s['validation_messages'], s['validation_first']))


def compare(cd, net, arch, sizes, rng, label):
    import numpy as np
    import torch
    for n, h, w in sizes:
        x = rng.standard_normal((n, 3, h, w), dtype=np.float32)
        ours, seconds = vk_test.predict_checked(cd, x, check, '%s %s %dx3x%dx%d' % (label, arch, n, h, w))
        t1 = time.time()
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        e = rel_err(ours, ref)
        check(ours.shape == ref.shape and e <= TOL, '%s %s %dx3x%dx%d vs torch' % (label, arch, n, h, w),
              'rel %.2e, ours %.2fs torch %.2fs' % (e, seconds, time.time() - t1))


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
            check(vk.device.startswith('vulkan') and vk.device.endswith('(fp32)'), '%s vulkan device' % arch, vk.device)
            compare(vk, net, arch, vk_sizes or sizes, rng, 'vulkan')
        check_vk_clean('%s vulkan' % arch)


def test_deep(arch, seed, size, tmp, rng, vulkan):
    """The deep member of a family at a small input: the C executor and Vulkan (float32) against
    PyTorch, one image each (the weights are what is large: ~100 MB for ResNet-50, ~560 MB for VGG-19;
    each is exported, loaded and, for the device, uploaded once)."""
    import cirrdata
    path = os.path.join(tmp, '%s.safetensors' % arch)
    t0 = time.time()
    export(arch, path, seed)
    net = torch_model(arch, path)
    print('%s: exported and loaded in torch in %.1fs' % (arch, time.time() - t0))
    with cirrdata.Model(path, device='cpu', threads=2) as cd:
        check(cd.arch == arch and cd.classes == 3, '%s metadata' % arch, '%s %d' % (cd.arch, cd.classes))
        compare(cd, net, arch, [size], rng, 'cpu')
    if vulkan is not None:
        with cirrdata.Model(path, device='vulkan') as vk:
            check(vk.device.startswith('vulkan') and vk.device.endswith('(fp32)'), '%s vulkan device' % arch, vk.device)
            compare(vk, net, arch, [size], rng, 'vulkan')
        check_vk_clean('%s vulkan' % arch)
    os.unlink(path)


TIMEOUT_CHILD = r"""
import gc, os, sys
sys.path.insert(0, sys.argv[2])
import numpy as np
import cirrdata
from cirrdata.model import vulkan_stats
x = np.random.default_rng(0).standard_normal((4, 3, 192, 192), dtype=np.float32)
with cirrdata.Model(sys.argv[1], device='cpu') as c:
    want = c.predict(x)
m = cirrdata.Model(sys.argv[1], device='vulkan')
os.environ['CIRRDATA_VK_TIMEOUT_S'] = '0.000001'  # read at each wait: the weights are on the device already
for i in (1, 2):
    try:
        got = m.predict(x)
        err = float(np.abs(got - want).max() / np.abs(want).max())
        print('predict %d: ok, max rel diff %.3g, on %s' % (i, err, m.device))
    except cirrdata.CirrdataError as e:
        print('predict %d: %s: %s' % (i, e.status, e))
del m  # the finaliser closes it, as in the report
gc.collect()
s = vulkan_stats()
print('validation messages: %d %s' % (s['validation_messages'], s['validation_first'][:300]))
print('contexts: %d' % s['contexts'])
print('closed')
"""


def test_vulkan_timeout(tmp):
    """A pass past CIRRDATA_VK_TIMEOUT_S is a lost device to the device policy (cirrdata/device.h): the
    context is created again and the pass retried; if that times out too the device is given up and the
    C executor answers, the model's name saying why (lavapipe may finish the retry within the timeout).
    Either way both calls return the CPU's logits (to the Vulkan tolerance), and the model closes (from
    its finaliser) without crashing the interpreter and without a validation message: in a child
    process, so that a crash is one failure here."""
    path = os.path.join(tmp, 'cirrnet-small.safetensors')
    r = subprocess.run([sys.executable, '-c', TIMEOUT_CHILD, path, os.path.join(REPO, 'python')], capture_output=True,
                       text=True, timeout=600)
    out = r.stdout
    check(r.returncode == 0 and 'closed' in out, 'vulkan timeout: the process survives close()',
          'exit %d\n%s%s' % (r.returncode, out[-600:], r.stderr[-1500:]))
    lines = {l.split(':')[0]: l for l in out.splitlines() if l.startswith('predict')}
    for i in (1, 2):
        line = lines.get('predict %d' % i, '')
        given_up = 'vulkan given up' in line
        ok = line.startswith('predict %d: ok' % i) and (not given_up or 'timeout' in line)
        check(ok and float(line.split('max rel diff ')[1].split(',')[0]) <= 1e-4,
              'vulkan timeout: predict %d answers with the CPU\'s logits (on the device again, or on the CPU naming '
              'the timeout)' % i, out[-800:])
    check('contexts: 2' in out, 'vulkan timeout: the context was created again once', out[-600:])
    check('validation messages: 0' in out, 'vulkan timeout: no validation message (nothing freed while in use)', out[-600:])


class StderrCapture:
    """Reads back what C code writes to fd 2 inside the block (the validation callback's prints)."""

    def __enter__(self):
        sys.stderr.flush()
        self.f = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.f.fileno(), 2)
        return self

    def __exit__(self, *a):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.f.seek(0)
        self.text = self.f.read().decode('utf-8', 'replace')
        self.f.close()
        sys.stderr.write(self.text)
        return False


def test_fp16(arch, seed, sizes, tmp, rng, vs_fp32):
    """device='vulkan', fp16=True against PyTorch (FP16_TOL). That float16 storage really ran: the
    result differs from our float32 Vulkan path's by more than 10x float32's own error (vs_fp32), or
    (to save a second large run) from PyTorch's by more than 1e-5, 10x what float32 gives here."""
    import cirrdata
    import numpy as np
    import torch
    path = os.path.join(tmp, '%s.safetensors' % arch)
    if not os.path.exists(path):
        export(arch, path, seed)
    net = torch_model(arch, path)
    os.environ['CIRRDATA_VK_VALIDATION_PRINT'] = '1'
    try:
        with StderrCapture() as cap:
            m32 = cirrdata.Model(path, device='vulkan') if vs_fp32 else None
            with cirrdata.Model(path, device='vulkan', fp16=True) as m16:
                check(m16.device.endswith('(fp16)') and (not m32 or m32.device.endswith('(fp32)')), '%s fp16 device' % arch,
                      '%s / %s' % (m16.device, m32.device if m32 else '-'))
                for n, h, w in sizes:
                    x = rng.standard_normal((n, 3, h, w), dtype=np.float32)
                    t0 = time.time()
                    a = m16.predict(x)
                    t1 = time.time()
                    with torch.no_grad():
                        ref = net(torch.from_numpy(x)).numpy()
                    e16 = rel_err(a, ref)
                    label = '%s fp16 %dx3x%dx%d' % (arch, n, h, w)
                    check(a.shape == ref.shape and e16 <= FP16_TOL, label + ' vs torch', 'rel %.2e, fp16 %.2fs' % (e16, t1 - t0))
                    if m32:
                        b = m32.predict(x)
                        e32, e1632 = rel_err(b, ref), rel_err(a, b)
                        check(e1632 > 10 * max(e32, 1e-7), label + ' differs from fp32 (fp16 storage ran)',
                              'rel %.2e, fp32 vs torch %.2e' % (e1632, e32))
                    else:
                        check(e16 > 1e-5, label + ' differs from torch more than fp32 does (fp16 storage ran)', 'rel %.2e' % e16)
                    top2 = np.sort(ref, axis=1)[:, -2:]
                    clear = (top2[:, 1] - top2[:, 0]) > 2 * FP16_TOL * np.max(np.abs(ref))
                    agree = a.argmax(1) == ref.argmax(1)
                    check(bool(np.all(agree[clear])), label + ' argmax equals torch where the margin is clear',
                          '%d/%d agree, %d clear' % (int(agree.sum()), n, int(clear.sum())))
            if m32:
                m32.close()
    finally:
        del os.environ['CIRRDATA_VK_VALIDATION_PRINT']
    check('Vulkan validation' not in cap.text, '%s fp16: no validation message' % arch,
          cap.text[cap.text.find('Vulkan validation'):][:300])
    check_vk_clean('%s fp16' % arch)


def test_fp16_fallback(tmp, rng):
    """fp16=True on a device without 16-bit storage (pretended: CIRRDATA_NN_NO_FP16): float32, and its 1e-4."""
    import cirrdata
    path = os.path.join(tmp, 'cirrnet-small.safetensors')
    net = torch_model('cirrnet-small', path)
    os.environ['CIRRDATA_NN_NO_FP16'] = '1'
    try:
        m = cirrdata.Model(path, device='vulkan', fp16=True)
    finally:
        del os.environ['CIRRDATA_NN_NO_FP16']
    with m:
        check(m.device.endswith('(fp32)'), 'fp16 asked without 16-bit storage: fp32', m.device)
        compare(m, net, 'cirrnet-small', [(2, 97, 131)], rng, 'vulkan fp16->fp32')
    check_vk_clean('fp16 fallback')


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
            if check(not vk_test.vulkan_required(), 'a Vulkan device opens (required: lavapipe is installed or '
                     'CIRRDATA_TEST_REQUIRE_VULKAN=1)', str(e)):
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
    os.environ['CIRRDATA_VK_VALIDATION'] = '1'  # every Vulkan model here runs under the validation layer
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
        if vk:
            groups.append(lambda: test_fp16('cirrnet-small', 11, [(8, 256, 256), (3, 97, 131)], tmp, rng, True))
            groups.append(lambda: test_fp16('resnet18', 5, big[:1], tmp, rng, False))
            groups.append(lambda: test_fp16_fallback(tmp, rng))
            groups.append(lambda: test_vulkan_timeout(tmp))
        if slow:
            groups.append(lambda: test_network('resnet50', 6, [(1, 256, 256), (1, 97, 131)], tmp, rng, vk))
            groups.append(lambda: test_network('vgg19', 7, [(1, 256, 256)], tmp, rng, vk, vk_sizes=[(1, 224, 224)]))
        else:
            # the deep member of each family, at a small input (full size: CIRRDATA_SLOW_TESTS=1)
            groups.append(lambda: test_deep('resnet50', 6, (1, 64, 64), tmp, rng, vk))
            groups.append(lambda: test_deep('vgg19', 7, (1, 32, 32), tmp, rng, vk))
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
