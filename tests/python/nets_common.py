"""Helpers shared by the whole-network parity tests (test_nets_cnn.py, test_nets_transformers.py): the
pass/fail counter, the relative error, finding the Vulkan device, and cirrdata.Model against a torch
module on random images (float32 within TOL = 1e-4 of max|torch|, float16 storage within FP16_TOL =
1e-2: see test_nets_cnn.py's docstring for why)."""
import os
import time

import harness
import vk_test

TOL = 1e-4
FP16_TOL = 1e-2
CHECKS = harness.Checks()
check = CHECKS.check


def rel_err(ours, ref):
    import numpy as np
    return float(np.max(np.abs(ours - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def vulkan_device(path):
    """The device name, or None (printed) when this machine has no Vulkan device and needs none."""
    import cirrdata
    try:
        with cirrdata.Model(path, device='vulkan') as m:
            return m.device
    except cirrdata.CirrdataError as e:
        if e.status == 'unsupported':
            if check(not vk_test.vulkan_required(), 'a Vulkan device opens (required here)', str(e)):
                print('skip vulkan: %s' % e)
            return None
        raise


def compare_net(path, net, label, sizes, rng, device, fp16=False, refs=None):
    """cirrdata.Model(path, device) against net on random images of each size. refs: a dict keeping each
    size's image and torch's logits for the next call on the same net (torch's pass is the slow part)."""
    import cirrdata
    import numpy as np
    import torch
    from cirrdata.model import vulkan_stats
    t0 = time.time()
    with cirrdata.Model(path, device=device, threads=2, fp16=fp16) as m:
        opened = time.time() - t0
        if device == 'vulkan':
            check(m.device.endswith('(fp16)' if fp16 else '(fp32)'), '%s device' % label, m.device)
        for n, h, w in sizes:
            if refs is not None and (n, h, w) in refs:
                x, ref = refs[(n, h, w)]
            else:
                x = rng.standard_normal((n, 3, h, w), dtype=np.float32)
                with torch.no_grad():
                    ref = net(torch.from_numpy(x)).numpy()
                if refs is not None:
                    refs[(n, h, w)] = x, ref
            ours, seconds = vk_test.predict_checked(m, x, check, '%s %dx3x%dx%d' % (label, n, h, w))
            e = rel_err(ours, ref)
            tol = FP16_TOL if fp16 else TOL
            what = '%s %dx3x%dx%d vs torch' % (label, n, h, w)
            detail = 'rel %.2e (allowed %.0e), open %.1fs, ours %.2fs' % (e, tol, opened, seconds)
            print('%s: %s' % (what, detail))
            check(ours.shape == ref.shape and e <= tol, what, detail)
    if device == 'vulkan':
        s = vulkan_stats()
        check(s['validation_messages'] == 0, '%s: no Vulkan validation message' % label, s['validation_first'])


def start():
    """The tests' common start: --lib parsed, validation on, the binding loaded (re-run under ASan where
    the library is instrumented), torch on 2 threads. Returns the seeded numpy generator and whether
    CIRRDATA_SLOW_TESTS=1 asks for the slow cases."""
    args = harness.parser(cli=False).parse_args()
    os.environ['CIRRDATA_VK_VALIDATION'] = '1'
    harness.load_binding(args.lib)
    import numpy as np
    import torch
    torch.set_num_threads(2)
    return np.random.default_rng(20261207), os.environ.get('CIRRDATA_SLOW_TESTS') == '1'
