#!/usr/bin/python3
"""The staging paper's transformer networks (issue 17) end to end against their PyTorch definitions:
PVTv2-b2 (cirrdata/pvt_v2.py) and MambaVision-T (cirrdata/mambavision.py), each exported from a
checkpoint by tools/scripts/export_weights.py and run by cirrdata.Model on the C executor and on Vulkan.

  /usr/bin/python3 tests/python/test_nets_transformers.py --lib build/libcirrdata/libcirrdata.so
  CIRRDATA_SLOW_TESTS=1 ... (also 1x3x256x256 on the C executor: torch's own pass takes ~8 s each)

Weights: every matrix and kernel drawn with std 1/sqrt(fan-in), every vector (biases, LayerNorm and
BatchNorm affines, the scan's A_log, D and dt bias) and the batch-norm statistics at random too.
Upstream's own initialisation (std 0.02, zero biases, dt_proj.bias 0) would make the scan's C.h term
negligible beside D.u, so a wrong dt bias or state update would pass unseen. The checkpoint is saved
the way training scripts do ({'model': state_dict} with DataParallel's `module.` prefix) and goes
through the exporter's checkpoint path, not --random.

Checks (max|ours - torch| <= TOL * max|torch|, TOL = 1e-4 in float32: measured ~1e-6; float16
storage within FP16_TOL = 1e-2, measured ~2e-3; see nets_common.py and test_nets_cnn.py):
- C executor at 1x3x97x131 and 1x3x64x64: MambaVision's stage-3 maps (7x9 and 4x4) are padded to one
  14x14 window and stage 4's to 7x7, the padded tokens taking part in attention and the scan; PVTv2's
  spatial reductions 8/4/2/1 with remainders at the odd size. With CIRRDATA_SLOW_TESTS=1 also at
  1x3x256x256, the staging size (MambaVision: 16x16 padded to 28x28, four windows, and 8x8 to 14x14;
  measured 6e-7 relative on both networks, 2026-12-07).
- Vulkan (lavapipe here, validation on, every pass on the device) at 1x3x64x64 in float32 and float16,
  against the same torch logits as the C executor's 64x64 check (torch's pass is the test's slow part).
The sanitizer build does not register this test (torch's start dominates an instrumented run); the same
C ops run under the sanitizers in nn_graph, nn_vk_norm, nn_vk_attn and nn_vk_scan.
Ends with one line `nets_transformers: N passed, M failed`.
"""
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from asan_reexec import env_without_asan  # noqa: E402
import nets_common  # noqa: E402
from nets_common import check, compare_net, vulkan_device  # noqa: E402

ARCHS = ('pvt_v2_b2', 'mambavision_t')


def randomised(arch, seed):
    """cirrdata.models.build(arch, 3) with every parameter and normalisation statistic at random (see the
    module docstring)."""
    import torch
    from cirrdata import models
    gen = torch.Generator().manual_seed(seed)
    net = models.build(arch, 3)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / float(p[0].numel()) ** 0.5)
            else:
                centre = 1.0 if name.endswith('weight') else 0.0  # norm affines around 1, the rest around 0
                p.copy_(centre + 0.2 * torch.randn(p.shape, generator=gen))
        for name, b in net.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith('running_var'):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
    return net.eval()


def export(arch, net, tmp):
    """The file export_weights.py writes from net saved as {'model': {'module.' + name: tensor}}."""
    import torch
    ckpt = os.path.join(tmp, arch + '.pt')
    torch.save({'model': {'module.' + k: v for k, v in net.state_dict().items()}, 'epoch': 7}, ckpt)
    out = os.path.join(tmp, arch + '.safetensors')
    cmd = [sys.executable, os.path.join(REPO, 'tools', 'scripts', 'export_weights.py'), '--arch', arch, ckpt, '-o', out,
           '--quiet']
    # pure Python: without the ASan runtime (see test_model_torch.py)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env_without_asan())
    if not check(r.returncode == 0, '%s: export_weights.py from a wrapped checkpoint' % arch, r.stderr.strip()):
        raise RuntimeError('export failed')
    return out


def main():
    rng, slow = nets_common.start()
    with tempfile.TemporaryDirectory(prefix='cd-nets-tf-') as tmp:
        for k, arch in enumerate(ARCHS):
            try:
                net = randomised(arch, 31 + k)
                path = export(arch, net, tmp)
                refs = {}
                sizes = ([(1, 256, 256)] if slow else []) + [(1, 97, 131), (1, 64, 64)]
                compare_net(path, net, arch + ' cpu', sizes, rng, 'cpu', refs=refs)
                if vulkan_device(path):
                    compare_net(path, net, arch + ' vulkan', [(1, 64, 64)], rng, 'vulkan', refs=refs)
                    compare_net(path, net, arch + ' vulkan fp16', [(1, 64, 64)], rng, 'vulkan', fp16=True, refs=refs)
            except Exception as e:  # a crash in one network is one failure, not the end of the run
                import traceback
                traceback.print_exc()
                check(False, arch, repr(e))
    return nets_common.CHECKS.summary('nets_transformers')


if __name__ == '__main__':
    sys.exit(main())
