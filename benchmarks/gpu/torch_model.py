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
is 1e-2 (FP16_TOL of tests/python/test_model_torch.py). Timing, median over --iters calls under
torch.inference_mode(), each on the clock of the bench_model number it is compared with:
  fp32     TF32 off: the same arithmetic as ours      } device clock (CUDA), input already on the
  default  PyTorch's defaults (cuDNN convolutions     } device: model(x) captured in a CUDA graph,
           may use TF32 tensor cores)                 } CUDA events around each replay (against our
  amp      torch.autocast(float16, no weight cache):  } Vulkan timestamps, 'Vk kernel'); eager calls
           half-precision convolutions on tensor      } between the events when capture fails
           cores (the peer of our fp16 row, which     } (mode recorded)
           stores float16 but computes float32)
  e2e      fp32 with the host copies: pageable host input -> device, logits -> host (what
           cd_model_predict does); host clock, time.perf_counter (against 'Vk call', CLOCK_MONOTONIC)
On the CPU (no CUDA): fp32 by wall clock only, and no ratio to the Vulkan timestamps.

summary: one row per bench_model JSON (model_<arch>_vk.json, model_<arch>_fp16_vk.json); an fp16 row
is compared with the same architecture's PyTorch run (model_<arch>_torch_*.json).
"""
FP16_TOL = 1e-2
import argparse
import importlib
import json
import os
import statistics
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.join(os.path.dirname(os.path.dirname(HERE)), 'python', 'cirrdata')


def load_module(name):
    """cirrdata.<name> without running the package's __init__ (which loads libcirrdata through ctypes):
    an empty `cirrdata` package over python/cirrdata, so that the modules' relative imports (models.py
    -> pvt_v2.py -> graph_emit.py) resolve."""
    if 'cirrdata' not in sys.modules:
        pkg = types.ModuleType('cirrdata')
        pkg.__path__ = [PKG]
        sys.modules['cirrdata'] = pkg
    return importlib.import_module('cirrdata.' + name)


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
    """Host clock: ms of each of `iters` calls, time.perf_counter around fn() and, on CUDA, the
    wait for its device work."""
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def time_device(torch, fn, iters, warmup):
    """Device clock (CUDA): (ms of each of `iters` replays, mode). fn is captured in a CUDA graph
    after a warm-up on a side stream; CUDA events bracket each replay, so no host launch time falls
    between them (as none falls between our Vulkan timestamps). Eager calls when capture fails."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(max(warmup, 2)):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    mode = 'graph'
    try:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        torch.cuda.synchronize()
        run = g.replay
    except Exception as e:  # noqa: BLE001  (any capture failure: measure eagerly, and say so)
        torch.cuda.synchronize()
        mode = 'eager (graph capture failed: %s)' % str(e).splitlines()[0][:120]
        run = fn
    run()
    torch.cuda.synchronize()
    out = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return out, mode


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
        if dev == 'cuda':
            res['device_clock'] = 'device: CUDA events around CUDA-graph replays (fp32, default, amp)'
            res['e2e_clock'] = 'host: time.perf_counter, host tensor to host tensor (e2e)'
            modes = {}
            times['fp32'], modes['fp32'] = time_device(torch, lambda: model(x), a.iters, a.warmup)
            torch.backends.cudnn.allow_tf32 = True  # PyTorch's defaults
            torch.backends.cuda.matmul.allow_tf32 = False
            times['default'], modes['default'] = time_device(torch, lambda: model(x), a.iters, a.warmup)
            set_tf32(torch, False)
            times['e2e'] = time_calls(torch, lambda: model(x_host.to(dev)).cpu(), dev, a.iters, a.warmup)

            def amp():  # no autocast weight cache: cached casts do not survive graph capture
                with torch.autocast('cuda', dtype=torch.float16, cache_enabled=False):
                    return model(x)
            times['amp'], modes['amp'] = time_device(torch, amp, a.iters, a.warmup)
            res['device_modes'] = modes
        else:
            res['e2e_clock'] = 'host: time.perf_counter (fp32)'
            times['fp32'] = time_calls(torch, lambda: model(x), dev, a.iters, a.warmup)
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
    print('times in ms per batch (median). Ratios only within one clock (>1: we are faster): kern/fp32 = torch fp32 / Vk '
          'kernel and kern/amp = torch autocast fp16 / Vk kernel on the device clock (CUDA events around CUDA-graph '
          'replays / Vulkan timestamps; CUDA only), call/e2e = torch e2e / Vk call on the host clock (perf_counter / '
          'CLOCK_MONOTONIC, host memory to host memory; CUDA only)')
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
        on_cuda = t.get('device') == 'cuda'  # a CPU torch run has no device clock: no ratio to the Vulkan timestamps
        ratio_k = t.get('fp32_ms') / vk['kernel_ms'] if on_cuda and t.get('fp32_ms') and vk.get('kernel_ms') else None
        ratio_a = t.get('amp_ms') / vk['kernel_ms'] if on_cuda and t.get('amp_ms') and vk.get('kernel_ms') else None
        ratio_c = t.get('e2e_ms') / vk['call_ms'] if on_cuda and t.get('e2e_ms') and vk.get('call_ms') else None
        cells = (vk.get('arch', tag), 'fp16' if f16 else 'fp32', vk.get('batch', '-'), vk.get('size', '-'), fmt(vk.get('first_ms')),
                 fmt(vk.get('call_ms')), fmt(vk.get('kernel_ms')), fmt(t.get('fp32_ms')), fmt(t.get('default_ms')),
                 fmt(t.get('amp_ms')), fmt(t.get('e2e_ms')), fmt(ratio_k, '{:.2f}x'), fmt(ratio_a, '{:.2f}x'),
                 fmt(ratio_c, '{:.2f}x'), fmt(par, '{:.1e}'), fmt(vk.get('cpu_check_rel'), '{:.1e}'))
        print(' '.join('%12s' % c for c in cells))
        odd = {k: m for k, m in (t.get('device_modes') or {}).items() if m != 'graph'}
        if odd:
            print('   torch device times not from a CUDA graph: %s' % odd)
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
