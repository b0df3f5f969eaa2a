"""cirrdata.Model: image-classifier inference from a cirrdata model file (ctypes over libcirrdata).

    with cirrdata.Model('resnet18.safetensors', device='cpu', threads=2) as m:
        logits = m.predict(x)          # x: float32 (N, 3, H, W); logits: float32 (N, m.classes)
        print(m.arch, m.classes, m.device)

Model files are written by tools/scripts/export_weights.py (schemas/model-graph.md). Batch norm is folded
into the convolutions when the file is opened; outputs equal PyTorch eval() to about 1e-6 relative
(tests/python/test_model_torch.py), about 1e-3 with fp16=True (float16 storage on Vulkan).
device: 'cpu' (the C executor), 'vulkan' (an error when there is no usable Vulkan device) or 'auto'
(Vulkan on a hardware device, else the CPU; .device says which and why). threads: CPU executor
threads, 0 for all online CPUs. Calls on one Model are serialised by a lock inside the library;
ctypes releases the GIL while the network runs.

After a device error (a pass past CIRRDATA_VK_TIMEOUT_S, a lost device, memory) predict raises
CirrdataError and every later predict does too; close() (or the finaliser) waits for the device to
finish what it was running and frees the model. vulkan_stats() gives the process's Vulkan totals,
validation messages reported while contexts were destroyed included.
"""
import ctypes
import os

import numpy as np

from . import _lib as _l

_DEVICES = _l.DEVICES


class _Options(ctypes.Structure):
    """struct cd_model_options (cirrdata/model.h)."""
    _fields_ = [('device', ctypes.c_int),
                ('threads', ctypes.c_int),
                ('fp16', ctypes.c_bool),
                ('gpu', ctypes.c_void_p),
                ('max_arena_bytes', ctypes.c_uint64)]


class _GpuStats(ctypes.Structure):
    """struct cd_gpu_stats (cirrdata/gpu.h)."""
    _fields_ = [('contexts', ctypes.c_uint64),
                ('submissions', ctypes.c_uint64),
                ('cpu_fallback', ctypes.c_uint64),
                ('validation_messages', ctypes.c_uint64),
                ('validation_first', ctypes.c_char * 512)]


def vulkan_stats():
    """Totals over every Vulkan context this process created, closed ones included
    (cd_gpu_process_stats): a dict of contexts, submissions (command buffers the device completed),
    cpu_fallback (items of GPU calls the C reference computed instead), validation_messages (of the
    validation layer when it is on, those reported while a context was destroyed included) and
    validation_first (the first such message, '' if none). The counters only grow."""
    from . import _LIB
    _declare(_LIB)
    s = _GpuStats()
    _LIB.cd_gpu_process_stats(ctypes.byref(s))
    out = {k: int(getattr(s, k)) for k in ('contexts', 'submissions', 'cpu_fallback', 'validation_messages')}
    out['validation_first'] = s.validation_first.decode('utf-8', 'replace')
    return out


def _declare(lib):
    if getattr(lib, '_cirrdata_model_declared', False):
        return
    P, PP, E = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(_l.CdError)
    sigs = {
        'cd_model_open': ([ctypes.c_char_p, ctypes.POINTER(_Options), PP, E], ctypes.c_int),
        'cd_model_close': ([P], None),
        'cd_model_arch': ([P], ctypes.c_char_p),
        'cd_model_classes': ([P], ctypes.c_int),
        'cd_model_in_channels': ([P], ctypes.c_int),
        'cd_model_device_used': ([P], ctypes.c_int),
        'cd_model_device_name': ([P], ctypes.c_char_p),
        'cd_model_predict': ([P, P, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, P, E], ctypes.c_int),
        'cd_gpu_process_stats': ([ctypes.POINTER(_GpuStats)], None),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    lib._cirrdata_model_declared = True


class Model(_l.Closeable):
    """A network loaded from a cirrdata model file. See the module docstring.

    .arch ('resnet18', ...), .classes, .in_channels, .device ('cpu (2 threads)', 'vulkan: ...'),
    .device_type ('cpu' or 'vulkan'). fp16: on Vulkan, store weights and activations as float16
    where the device has 16-bit storage buffers (arithmetic, biases, input and logits stay float32):
    half the memory, logits within ~1e-3 of float32's largest (tests allow 1e-2 against PyTorch);
    .device ends in '(fp16)' when used, '(fp32)' when the device lacks it. max_arena_bytes: cap on
    activation memory per call (0: the library's default, 4 GiB)."""

    def __init__(self, path, device='cpu', threads=0, fp16=False, max_arena_bytes=0):
        from . import _LIB, _raise
        if device not in _DEVICES:
            raise ValueError('device must be one of %s, not %r' % (sorted(_DEVICES), device))
        self._lib, self._raise = _LIB, _raise
        _declare(_LIB)
        self.path = os.fspath(path)
        o = _Options()
        o.device = _DEVICES[device]
        o.threads = int(threads)
        o.fp16 = bool(fp16)
        o.gpu = None
        o.max_arena_bytes = int(max_arena_bytes)
        self._h = ctypes.c_void_p()
        err = _l.CdError()
        if _LIB.cd_model_open(os.fsencode(self.path), ctypes.byref(o), ctypes.byref(self._h), ctypes.byref(err)):
            self._h = ctypes.c_void_p()
            _raise(err)
        self.arch = _LIB.cd_model_arch(self._h).decode('utf-8', 'replace')
        self.classes = int(_LIB.cd_model_classes(self._h))
        self.in_channels = int(_LIB.cd_model_in_channels(self._h))
        self.device = _LIB.cd_model_device_name(self._h).decode('utf-8', 'replace')
        self.device_type = 'vulkan' if _LIB.cd_model_device_used(self._h) == 1 else 'cpu'

    def _handle(self):
        if not self._h:
            raise ValueError('model %s is closed' % self.path)
        return self._h

    def predict(self, x):
        """Logits (N, classes) float32 for x (N, in_channels, H, W); x is converted to C-contiguous
        float32 if needed (a 3-D x is taken as one image)."""
        h = self._handle()
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError('x must be (N, %d, H, W), got shape %s' % (self.in_channels, tuple(x.shape)))
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, _, hh, ww = x.shape
        out = np.empty((n, self.classes), np.float32)
        if n == 0:
            return out
        err = _l.CdError()
        if self._lib.cd_model_predict(h, x.ctypes.data, n, hh, ww, out.ctypes.data, ctypes.byref(err)):
            self._raise(err)
        return out

    __call__ = predict

    def close(self):
        """Frees the model (idempotent)."""
        if self._h:
            self._lib.cd_model_close(self._h)
            self._h = ctypes.c_void_p()

    def __repr__(self):
        return 'cirrdata.Model(%r, arch=%r, classes=%d, device=%r%s)' % (
            self.path, self.arch, self.classes, self.device, '' if self._h else ', closed')
