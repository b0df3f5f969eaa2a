#!/usr/bin/env python3
"""PyTorch side of the inference benchmark (run.sh): the same model file and the same input as
bench_model, in PyTorch eager float32, for parity and speed.

  torch_model.py run --model FILE --input X.bin --batch B --size S [--logits OURS.bin]
                     [--logits-fp16 OURS16.bin] [--device cuda|cpu] [--iters N] [--warmup W]
                                                                       -> one JSON object on stdout
  torch_model.py summary DIR                                           -> the table of DIR/model_*.json

run: builds the architecture named by the file's "cirrdata.arch" metadata (python/cirrdata/models.py,
torchvision), loads the file's tensors (strict, BatchNorm's num_batches_tracked aside), eval(). Parity:
logits in strict float32 (TF32 off for cuDNN and matmul) against OURS.bin, max|diff| / max|ref| (the
contract's 1e-4); --logits-fp16 (our float16-storage run) the same way, parity_rel_fp16, whose bound
is 1e-2 (FP16_TOL of tests/python/test_model_torch.py). Timing (CUDA events on the GPU, median over
--iters calls of model(x) under torch.inference_mode(), input already on the device):
  fp32     TF32 off: the same arithmetic as ours
  default  PyTorch's defaults (cuDNN convolutions may use TF32 tensor cores)
  e2e      fp32 with the host copies: pageable host input -> device, logits -> host (what
           cd_model_predict does)
  amp      torch.autocast(float16): half-precision convolutions on tensor cores (the usual way to
           run fp16 in PyTorch; the peer of our fp16 row, which stores float16 but computes float32)

summary: one row per bench_model JSON (model_<arch>_vk.json, model_<arch>_fp16_vk.json); an fp16 row
is compared with the same architecture's PyTorch run (model_<arch>_torch_*.json).
"""
FP16_TOL = 1e-2
import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), 'python', 'cirrdata')


def load_module(name):
    """cirrdata.<name> without importing the package (which loads libcirrdata through ctypes)."""
    spec = importlib.util.spec_from_file_location('cirrdata_' + name, os.path.join(PKG, name + '.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_model(path, torch):
    st = load_module('safetensors_io')
    tensors, meta = st.read(path)
    arch = meta.get('cirrdata.arch', '')
    classes = int(meta.get('cirrdata.classes', '3'))
    models = load_module('models')
    model = models.build(arch, classes)
    sd = {k: torch.from_numpy(v.copy()) for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith('num_batches_tracked')]
    if missing or unexpected:
        raise SystemExit('torch_model.py: %s: state_dict mismatch: missing %s, unexpected %s' % (path, missing[:5], unexpected[:5]))
    return model.eval(), arch, classes


def set_tf32(torch, on):
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


def time_calls(torch, fn, device, iters, warmup):
    for _ in range(warmup):
        fn()
    if device == 'cuda':
        torch.cuda.synchronize()
        out = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b))
        return out
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def cmd_run(a):
    import numpy as np
    import torch
    dev = a.device
    if dev == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('torch_model.py: CUDA is not available')
    model, arch, classes = build_model(a.model, torch)
    model = model.to(dev)
    x_host = torch.from_numpy(np.fromfile(a.input, dtype=np.float32).reshape(a.batch, -1, a.size, a.size).copy())
    x = x_host.to(dev)
    res = {'model': a.model, 'arch': arch, 'device': dev, 'batch': a.batch, 'size': a.size, 'torch': torch.__version__,
           'gpu': torch.cuda.get_device_name(0) if dev == 'cuda' else ''}
    with torch.inference_mode():
        set_tf32(torch, False)
        ref = model(x).float().cpu().numpy()
        for key, path in (('parity_rel', a.logits), ('parity_rel_fp16', a.logits_fp16)):
            if path and os.path.exists(path):
                ours = np.fromfile(path, dtype=np.float32).reshape(ref.shape)
                res[key] = float(np.abs(ours.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))
        times = {}
        times['fp32'] = time_calls(torch, lambda: model(x), dev, a.iters, a.warmup)
        if dev == 'cuda':
            torch.backends.cudnn.allow_tf32 = True  # PyTorch's defaults
            torch.backends.cuda.matmul.allow_tf32 = False
            times['default'] = time_calls(torch, lambda: model(x), dev, a.iters, a.warmup)
            set_tf32(torch, False)
            times['e2e'] = time_calls(torch, lambda: model(x_host.to(dev)).cpu(), dev, a.iters, a.warmup)

            def amp():
                with torch.autocast('cuda', dtype=torch.float16):
                    return model(x)
            times['amp'] = time_calls(torch, amp, dev, a.iters, a.warmup)
        for k, v in times.items():
            res[k + '_ms'] = statistics.median(v)
            res[k + '_ms_min'] = min(v)
    print(json.dumps(res))


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v, spec='{:.1f}'):
    return spec.format(v) if isinstance(v, (int, float)) and v else '-'


def cmd_summary(a):
    d = a.dir
    rows = []
    for name in sorted(os.listdir(d)):
        if name.startswith('model_') and name.endswith('_vk.json'):
            tag = name[len('model_'):-len('_vk.json')]
            arch = tag[:-len('_fp16')] if tag.endswith('_fp16') else tag
            rows.append((tag, load(os.path.join(d, name)), load(os.path.join(d, 'model_%s_torch_cuda.json' % arch)),
                         load(os.path.join(d, 'model_%s_torch_cpu.json' % arch))))
    if not rows:
        print('no model results in %s' % d)
        return 1
    rows.sort(key=lambda r: (r[0][:-len('_fp16')] if r[0].endswith('_fp16') else r[0], r[0].endswith('_fp16')))
    head = ('model', 'storage', 'batch', 'size', 'Vk first', 'Vk call', 'Vk kernel', 'torch fp32', 'torch dflt', 'torch amp',
            'torch e2e', 'kern/fp32', 'kern/amp', 'call/e2e', 'parity torch', 'parity C')
    dev = (rows[0][1] or {}).get('device', '?')
    print('Vulkan: %s' % (dev[:-len(' (fp32)')] if dev.endswith((' (fp32)', ' (fp16)')) else dev))
    t = next((r[2] for r in rows if r[2]), None) or next((r[3] for r in rows if r[3]), None)
    if t:
        print('torch %s on %s' % (t.get('torch', '?'), t.get('gpu') or t.get('device')))
    print('times in ms per batch (median); kern/fp32 = torch fp32 / Vk kernel, kern/amp = torch autocast fp16 / Vk kernel, '
          'call/e2e = torch e2e / Vk call (>1: we are faster)')
    print(' '.join('%12s' % h for h in head))
    bad = False
    for tag, vk, tc, tp in rows:
        vk = vk or {}
        t = tc or tp or {}
        f16 = bool(vk.get('fp16'))
        par = t.get('parity_rel_fp16' if f16 else 'parity_rel')
        bad |= par is None or par > (FP16_TOL if f16 else 1e-4) or bool(vk.get('error'))
        if tag.endswith('_fp16') and vk and not f16:
            print('   %s: the device does not offer 16-bit storage: this row ran in float32' % tag)
        ratio_k = t.get('fp32_ms') / vk['kernel_ms'] if t.get('fp32_ms') and vk.get('kernel_ms') else None
        ratio_a = t.get('amp_ms') / vk['kernel_ms'] if t.get('amp_ms') and vk.get('kernel_ms') else None
        ratio_c = t.get('e2e_ms') / vk['call_ms'] if t.get('e2e_ms') and vk.get('call_ms') else None
        cells = (vk.get('arch', tag), 'fp16' if f16 else 'fp32', vk.get('batch', '-'), vk.get('size', '-'), fmt(vk.get('first_ms')),
                 fmt(vk.get('call_ms')), fmt(vk.get('kernel_ms')), fmt(t.get('fp32_ms')), fmt(t.get('default_ms')),
                 fmt(t.get('amp_ms')), fmt(t.get('e2e_ms')), fmt(ratio_k, '{:.2f}x'), fmt(ratio_a, '{:.2f}x'),
                 fmt(ratio_c, '{:.2f}x'), fmt(par, '{:.1e}'), fmt(vk.get('cpu_check_rel'), '{:.1e}'))
        print(' '.join('%12s' % c for c in cells))
        if vk.get('error'):
            print('   error: %s' % vk['error'])
    if bad:
        print('PARITY FAILED (or missing): max|diff|/max|ref| must be <= 1e-4 (fp32), %g (fp16)' % FP16_TOL)
    return 1 if bad else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('run')
    r.add_argument('--model', required=True)
    r.add_argument('--input', required=True)
    r.add_argument('--logits')
    r.add_argument('--logits-fp16')
    r.add_argument('--batch', type=int, required=True)
    r.add_argument('--size', type=int, required=True)
    r.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    r.add_argument('--iters', type=int, default=10)
    r.add_argument('--warmup', type=int, default=3)
    s = sub.add_parser('summary')
    s.add_argument('dir')
    a = p.parse_args()
    if a.cmd == 'run':
        cmd_run(a)
        return 0
    return cmd_summary(a)


if __name__ == '__main__':
    sys.exit(main())
