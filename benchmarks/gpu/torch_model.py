#!/usr/bin/env python3
"""PyTorch side of the inference benchmark (run.sh): the same model file and the same input as
bench_model, in PyTorch eager float32, for parity and speed.

  torch_model.py run --model FILE --input X.bin --batch B --size S [--logits OURS.bin]
                     [--device cuda|cpu] [--iters N] [--warmup W]      -> one JSON object on stdout
  torch_model.py summary DIR                                           -> the table of DIR/model_*.json

run: builds the architecture named by the file's "cirrdata.arch" metadata (python/cirrdata/models.py,
torchvision), loads the file's tensors (strict, BatchNorm's num_batches_tracked aside), eval(). Parity:
logits in strict float32 (TF32 off for cuDNN and matmul) against OURS.bin, max|diff| / max|ref| (the
contract's 1e-4). Timing (CUDA events on the GPU, median over --iters calls of model(x) under
torch.inference_mode(), input already on the device):
  fp32     TF32 off: the same arithmetic as ours
  default  PyTorch's defaults (cuDNN convolutions may use TF32 tensor cores)
  e2e      fp32 with the host copies: pageable host input -> device, logits -> host (what
           cd_model_predict does)
"""
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
        if a.logits and os.path.exists(a.logits):
            ours = np.fromfile(a.logits, dtype=np.float32).reshape(ref.shape)
            res['parity_rel'] = float(np.abs(ours.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))
        times = {}
        times['fp32'] = time_calls(torch, lambda: model(x), dev, a.iters, a.warmup)
        if dev == 'cuda':
            torch.backends.cudnn.allow_tf32 = True  # PyTorch's defaults
            torch.backends.cuda.matmul.allow_tf32 = False
            times['default'] = time_calls(torch, lambda: model(x), dev, a.iters, a.warmup)
            set_tf32(torch, False)
            times['e2e'] = time_calls(torch, lambda: model(x_host.to(dev)).cpu(), dev, a.iters, a.warmup)
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
            rows.append((tag, load(os.path.join(d, name)), load(os.path.join(d, 'model_%s_torch_cuda.json' % tag)),
                         load(os.path.join(d, 'model_%s_torch_cpu.json' % tag))))
    if not rows:
        print('no model results in %s' % d)
        return 1
    head = ('model', 'batch', 'size', 'Vk first', 'Vk call', 'Vk kernel', 'torch fp32', 'torch dflt', 'torch e2e',
            'kern/fp32', 'call/e2e', 'parity torch', 'parity C')
    print('Vulkan: %s' % (rows[0][1] or {}).get('device', '?'))
    t = next((r[2] for r in rows if r[2]), None) or next((r[3] for r in rows if r[3]), None)
    if t:
        print('torch %s on %s' % (t.get('torch', '?'), t.get('gpu') or t.get('device')))
    print('times in ms per batch (median); kern/fp32 = torch fp32 / Vk kernel, call/e2e = torch e2e / Vk call (>1: we are faster)')
    print(' '.join('%12s' % h for h in head))
    bad = False
    for tag, vk, tc, tp in rows:
        vk = vk or {}
        t = tc or tp or {}
        par = t.get('parity_rel')
        bad |= par is None or par > 1e-4 or bool(vk.get('error'))
        ratio_k = t.get('fp32_ms') / vk['kernel_ms'] if t.get('fp32_ms') and vk.get('kernel_ms') else None
        ratio_c = t.get('e2e_ms') / vk['call_ms'] if t.get('e2e_ms') and vk.get('call_ms') else None
        cells = (vk.get('arch', tag), vk.get('batch', '-'), vk.get('size', '-'), fmt(vk.get('first_ms')), fmt(vk.get('call_ms')),
                 fmt(vk.get('kernel_ms')), fmt(t.get('fp32_ms')), fmt(t.get('default_ms')), fmt(t.get('e2e_ms')),
                 fmt(ratio_k, '{:.2f}x'), fmt(ratio_c, '{:.2f}x'), fmt(par, '{:.1e}'), fmt(vk.get('cpu_check_rel'), '{:.1e}'))
        print(' '.join('%12s' % c for c in cells))
        if vk.get('error'):
            print('   error: %s' % vk['error'])
    if bad:
        print('PARITY FAILED (or missing): max|diff|/max|ref| must be <= 1e-4')
    return 1 if bad else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('run')
    r.add_argument('--model', required=True)
    r.add_argument('--input', required=True)
    r.add_argument('--logits')
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
