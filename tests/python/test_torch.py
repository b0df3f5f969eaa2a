#!/usr/bin/env python3
"""cirrdata.Loader's owned batches and held views, batch_stride/batch_offset, and cirrdata.torch inside
real torch.utils.data.DataLoaders:

  - Loader: owned batches (the default) stay intact after 50 more batches; views (views=True) keep their
    values while held, and holding views of every ring slot raises instead of hanging; batch_stride /
    batch_offset loaders together give exactly the stride-1 batches.
  - BatchDataset in DataLoader with num_workers 0, 1, 2 (fork), 2 and 3 (spawn), persistent workers and
    pin_memory: the same batches in the same order for every worker count, two epochs, equal to
    cirrdata.Loader's; kept batches intact after 50 more; resume through a DataLoader (another worker
    count) continues with the identical next batch and the next epoch; states from another seed,
    world size or dataset refused; unequal per-rank batch counts refused (drop_last evens them);
  - a two-rank run (torch.multiprocessing.spawn, gloo on 127.0.0.1) covers every train sample exactly
    once per epoch with equal batch counts per rank;
  - RecordDataset with collate_records (pad and list);
  - device='cuda' (only where torch has CUDA; else that one case is skipped, said in a note).
The torch parts do not run under AddressSanitizer (libtorch, see test_loader.py); the Loader parts do.
Ends with `torch: N passed, M failed`.
"""
import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from harness import check  # noqa: E402

OPTS = dict(batch_size=2, patch=(32, 32, 16), augment='nnunet', seed=5, split='train')
LOPTS = dict(OPTS, augment='none')  # the Loader parts, which also run under ASan: random crops, no warps


def loader_epochs(ds, opts, epochs=2):
    from cirrdata.loader import Loader
    with Loader(ds, threads=2, **opts) as l:
        return [list(l) for _ in range(epochs)]


def lending_parts(cirrdata, ds, ref, Loader):
    """cd_loader_lend, as DataLoader workers use it: a lent batch stays intact and out of the ring until its
    flag in the shared file goes back to 0 (written here through a mapping of its own, as the main process
    writes it), then the loader fills the slot again; set_state leaves lent slots lent."""
    import mmap
    with Loader(ds, threads=1, views=True, ring_shared=True, ring=4, **LOPTS) as l:
        fd, base, size = l.ring_memory()
        other = mmap.mmap(fd, size)  # the "main process" side
        flags = np.frombuffer(other, dtype=np.int32, count=4)
        it = l._epoch(None, raw=True)
        lent = [next(it), next(it)]
        slots = [l._lend(bp) for bp in lent]
        check(sorted(flags[slots].tolist()) == [1, 1] and l._lent == 2 and len(set(slots)) == 2,
              f'two lent batches: slots {slots}, flags {flags.tolist()}')
        try:
            l._lend(lent[0])
            check(False, 'lending a batch twice must raise')
        except cirrdata.CirrdataError as e:
            check('not borrowed' in str(e), f'lend twice: {e}')
        images = [np.frombuffer(other, np.float32, count=ref[0][k]['image'].size,
                                offset=ctypes.cast(bp.contents.image, ctypes.c_void_p).value - base)
                  for k, bp in enumerate(lent)]
        for k in range(2, 8):  # the other two slots go round while the lent ones stay out
            bp = next(it)
            got = np.ctypeslib.as_array(bp.contents.image, shape=ref[0][k]['image'].shape).copy()
            check(bp.contents.number == k and np.array_equal(got, ref[0][k]['image']), f'batch {k} beside two lent')
            l._returned.append(bp)
        check(all(np.array_equal(im.reshape(ref[0][k]['image'].shape), ref[0][k]['image'])
                  for k, im in enumerate(images)), 'lent batches stay intact while later ones are made')
        held = [next(it), next(it)]
        try:
            next(it)
            check(False, 'two lent and two borrowed of 4 slots must raise')
        except cirrdata.CirrdataError as e:
            check('all 4 ring slots' in str(e) and '2 lent' in str(e), f'all slots lent or borrowed: {e}')
        l._returned.extend(held)
        del held, images
        it = l._epoch(None, raw=True)  # the error ended the last one
        flags[slots[0]] = 0
        check(l._lent == 1, f'one flag back to 0: {l._lent} lent')
        # a new position while one batch is still lent: it stays lent, the rest starts over
        l.load_state_dict({'seed': LOPTS['seed'], 'epoch': 1, 'position': 0})
        check(l._lent == 1 and flags[slots[1]] == 1, 'set_state leaves a lent slot lent')
        got = [(b.contents.number, np.ctypeslib.as_array(b.contents.image, shape=ref[1][0]['image'].shape).copy())
               for b in (next(it), next(it))]
        check(all(k == j and np.array_equal(g, ref[1][j]['image']) for j, (k, g) in enumerate(got)),
              'after set_state: epoch 1 from its start')
        flags[slots[1]] = 0
        check(l._lent == 0, 'both lent slots back')
        del flags
        other.close()
    # The worker threads take a slot back by themselves (no call on the loader): once the flags are 0,
    # the lent slots fill with later batches.
    import time
    with Loader(ds, threads=1, views=True, ring_shared=True, ring=4, **LOPTS) as l:
        fd, base, size = l.ring_memory()
        other = mmap.mmap(fd, size)
        flags = np.frombuffer(other, dtype=np.int32, count=4)
        it = l._epoch(None, raw=True)
        lent = [next(it) for _ in range(3)]
        offsets = [ctypes.cast(bp.contents.image, ctypes.c_void_p).value - base for bp in lent]
        slots = [l._lend(bp) for bp in lent]
        shape = ref[0][0]['image'].shape
        views = [np.frombuffer(other, np.float32, count=ref[0][0]['image'].size, offset=o).reshape(shape)
                 for o in offsets]
        later = [b['image'] for e in ref for b in e[3:] if b['image'].shape == shape]
        flags[slots] = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(any(np.array_equal(v, x) for x in later) for v in views):
            time.sleep(0.01)
        check(all(any(np.array_equal(v, x) for x in later) for v in views),
              'slots whose flags went to 0 are filled again by the loader\'s threads, with no call on the loader')
        del views, flags, lent
        other.close()


def loader_parts(cirrdata, ds):
    from cirrdata.loader import Loader
    OPTS = LOPTS
    ref = loader_epochs(ds, OPTS)
    n = len(ref[0])
    check(n == 10 and [b['batch'] for b in ref[0]] == list(range(n)), f'10 batches per epoch, got {n}')
    # Owned batches: kept across 50 more (more than an epoch, the ring refilled many times).
    with Loader(ds, threads=2, **OPTS) as l:
        it = iter(l)
        kept = next(it)
        copy = kept['image'].copy()
        more = 0
        while more < 50:
            for _ in it:
                more += 1
            it = iter(l)
        check(np.array_equal(kept['image'], copy) and np.array_equal(kept['image'], ref[0][0]['image']),
              'an owned batch must stay intact after 50 more')
    # Views: held views keep their values (their slot is not refilled); holding all 4 slots is an error.
    with Loader(ds, threads=2, views=True, **OPTS) as l:
        it = iter(l)
        held = [next(it) for _ in range(3)]
        for _ in range(5):  # later batches go through the remaining slot
            next(it)
        check(all(np.array_equal(h['image'], r['image']) for h, r in zip(held, ref[0])),
              'held views must keep their batches while later batches are made')
        held.append(next(it))
        try:
            next(it)
            check(False, 'holding views of all 4 ring slots must raise')
        except cirrdata.CirrdataError as e:
            check('all 4 ring slots' in str(e) and 'views' in str(e), f'held-views message: {e}')
        del held
        with Loader(ds, threads=1, views=True, **OPTS) as l2:  # dropped views free their slots
            got = [b['image'].copy() for b in l2]
        check(all(np.array_equal(g, r['image']) for g, r in zip(got, ref[0])), 'views in a loop equal owned batches')
    # A shared ring (ring_shared): the same batches, the views inside the memfd the loader names.
    with Loader(ds, threads=2, views=True, ring_shared=True, **OPTS) as l:
        fd, base, size = l.ring_memory()
        st = os.fstat(fd)
        inside, got = True, []
        for b in l:
            a = b['image'].ctypes.data
            inside &= base + 4096 <= a and a + b['image'].nbytes <= base + size
            got.append(b['image'].copy())
        head = np.ctypeslib.as_array((ctypes.c_uint8 * 4096).from_address(base))
        check(st.st_size == size and inside and not head.any(), f'shared ring: fd {fd} of {size} bytes holds the batches')
        check(all(np.array_equal(g, r['image']) for g, r in zip(got, ref[0])), 'shared ring: the same batches')
    with Loader(ds, threads=1, **OPTS) as l:
        check(l.ring_memory() is None, 'no shared ring unless asked')
        try:
            l._lend(next(l._epoch(None, raw=True)))
            check(False, 'lending from a ring that is not shared must raise')
        except cirrdata.CirrdataError as e:
            check('not shared' in str(e), f'lend without ring_shared: {e}')
    lending_parts(cirrdata, ds, ref, Loader)
    # Stride: 3 loaders with offsets 0..2 make exactly the stride-1 batches, over 2 epochs.
    for W in (2, 3):
        got = {}
        for w in range(W):
            with Loader(ds, threads=1, batch_stride=W, batch_offset=w, **OPTS) as l:
                for e in range(2):
                    for b in l:
                        got[(b['epoch'], b['batch'])] = b
        ok = sorted(got) == [(e, k) for e in range(2) for k in range(n)]
        ok = ok and all(np.array_equal(got[(e, k)]['image'], ref[e][k]['image'])
                        and np.array_equal(got[(e, k)]['index'], ref[e][k]['index']) for e in range(2) for k in range(n))
        check(ok, f'batch_stride {W}: the loaders together give the stride-1 batches')
    for kw, text in ((dict(batch_stride=2, batch_offset=2), 'batch_offset must be in 0..1'),
                     (dict(batch_stride=100000), 'batch_stride must be in 0..65536'),
                     (dict(batch_stride=20, batch_offset=12), 'only 10 batch(es)')):
        try:
            Loader(ds, threads=1, **OPTS, **kw).close()
            check(False, f'{kw} must be refused')
        except cirrdata.CirrdataError as e:
            check(text in str(e), f'{kw}: {e}')
    # A Loader state from another world size is refused (its positions count another share).
    with Loader(ds, threads=1, rank=0, world_size=2, **OPTS) as l:
        state = l.state_dict()
    with Loader(ds, threads=1, rank=0, world_size=3, **OPTS) as l:
        try:
            l.load_state_dict(state)
            check(False, 'a Loader state from world size 2 must be refused by world size 3')
        except cirrdata.CirrdataError as e:
            check('world_size 2, this loader has world_size 3' in str(e), str(e))
    with Loader(ds, threads=1, batch_stride=2, batch_offset=1, **OPTS) as l:
        try:
            l.load_state_dict({'seed': 5, 'epoch': 0, 'position': 4})  # batch 2 is not this loader's
            check(False, 'a position outside the stride must be refused')
        except cirrdata.CirrdataError as e:
            check('does not start one of this loader' in str(e), str(e))


def same(a, b):
    """Equal batches (a list of batches, or a list of epochs of them)."""
    import torch
    if a and isinstance(a[0], list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x['epoch'] != y['epoch'] or x['batch'] != y['batch']:
            return False
        for k in ('image', 'mask', 'label', 'index', 'corner'):
            if not torch.equal(torch.as_tensor(x[k]).to(torch.as_tensor(y[k]).dtype), torch.as_tensor(y[k])):
                return False
    return True


def dl_epochs(ds, epochs=2, **kw):
    import torch
    dl = torch.utils.data.DataLoader(ds, batch_size=None, **kw)
    out = []
    for _ in range(epochs):
        out.append([{k: (v.clone() if torch.is_tensor(v) else v) for k, v in b.items()} for b in dl])
    return out


RANK_SCRIPT = r'''
import json, os, sys
import torch, torch.distributed as dist, torch.multiprocessing as mp
sys.path.insert(0, sys.argv[3])
def work(rank, path, out, port):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    import cirrdata.torch as ct
    ds = ct.BatchDataset(path, batch_size=2, patch=(32, 32, 16), seed=7, split="train", threads=1)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1)
    res = {"rank": ds.rank, "world": ds.world_size, "epochs": []}
    for e in range(2):
        res["epochs"].append([[int(i) for i in b["index"]] for b in dl])
    with open(f"{out}.{rank}", "w") as f:
        json.dump(res, f)
    dist.barrier()
    dist.destroy_process_group()
if __name__ == "__main__":
    mp.spawn(work, args=(sys.argv[1], sys.argv[2], int(sys.argv[4])), nprocs=2, join=True)
'''


def torch_parts(cirrdata, ds, other, work):
    import torch
    import cirrdata.torch as ct

    def make(path=ds, **kw):
        return ct.BatchDataset(path, **dict(OPTS, **dict(dict(threads=1), **kw)))

    base = dl_epochs(make(), num_workers=0)
    ref = loader_epochs(ds, OPTS)
    as_loader = [[dict(b, label=b['label'].astype(np.int64)) for b in e] for e in ref]
    check(same(base, as_loader), 'BatchDataset (num_workers=0) gives cirrdata.Loader\'s batches')
    check(len(make()) == 10 and isinstance(base[0][0]['image'], torch.Tensor) and base[0][0]['label'].dtype == torch.int64,
          'len() and tensor types')
    for kw in (dict(num_workers=1), dict(num_workers=2), dict(num_workers=2, persistent_workers=True, pin_memory=True),
               dict(num_workers=2, multiprocessing_context='spawn', persistent_workers=True),
               dict(num_workers=3)):
        got = dl_epochs(make(), **kw)
        check(same(got, base), f'DataLoader {kw}: the same batches in the same order as num_workers=0')
    check(len(ct._RINGS) > 0, 'worker batches travel through the workers\' shared rings')
    # A worker whose ring slots the trainer holds copies into one-off shared memory (here: always).
    spare = ct._SharedRing.SPARE
    ct._SharedRing.SPARE = 8
    try:
        got = dl_epochs(make(), num_workers=1, multiprocessing_context='fork')
    finally:
        ct._SharedRing.SPARE = spare
    check(same(got, base), 'batches copied out of a held ring are the same')
    # set_epoch chooses the epoch; without it, passes advance by themselves (checked above: 2 epochs).
    d = make()
    d.set_epoch(1)
    check(same(dl_epochs(d, epochs=1, num_workers=2), base[1:]), 'set_epoch(1) gives epoch 1')

    # Kept batches stay intact after 50 more (workers, shared memory).
    d = make()
    dl = torch.utils.data.DataLoader(d, batch_size=None, num_workers=2, persistent_workers=True)
    kept, n = None, 0
    while n < 51:
        for b in dl:
            if kept is None:
                kept = b
            n += 1
    check(torch.equal(kept['image'], base[0][0]['image']), 'a kept DataLoader batch is intact after 50 more')

    # Resume: 3 batches of epoch 0 with 2 workers, then a new dataset and DataLoader with 1 worker.
    d = make()
    it = iter(torch.utils.data.DataLoader(d, batch_size=None, num_workers=2))
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(d.state_dict(epoch=0, batches=3)))  # as a checkpoint would store it
    del it
    d2 = make()
    d2.load_state_dict(state)
    got = dl_epochs(d2, epochs=2, num_workers=1)
    check(same(got[0], base[0][3:]) and same(got[1], base[1]), 'resume through a DataLoader: the identical next batches')
    d3 = make()
    d3.load_state_dict(d.state_dict(epoch=0, batches=10))  # a finished epoch: the next one
    check(same(dl_epochs(d3, epochs=1, num_workers=2)[0], base[1]), 'a state at the end of an epoch starts the next')
    for what, ds_bad, text in (('seed', make(seed=6), 'seed 5, this dataset has 6'),
                               ('world size', make(rank=0, world_size=2), 'world_size 1, this dataset has 2'),
                               ('dataset', make(path=other), 'another dataset'),
                               ('sampling', make(augment='none'), 'other sampling options (augment')):
        try:
            ds_bad.load_state_dict(state)
            check(False, f'a state from another {what} must be refused')
        except ValueError as e:
            check(text in str(e), f'state from another {what}: {e}')
    try:
        make(batch_size=3, rank=0, world_size=3)
        check(False, 'unequal batch counts per rank must be refused')
    except ValueError as e:
        check('unequal counts stall DDP' in str(e) and 'drop_last=True' in str(e), str(e))
    ds3 = [make(batch_size=3, rank=r, world_size=3, drop_last=True) for r in range(3)]
    check([len(x) for x in ds3] == [2, 2, 2], f'drop_last evens ranks: {[len(x) for x in ds3]}')
    check(all(len(dl_epochs(x, epochs=1, num_workers=2)[0]) == 2 for x in ds3), 'each rank yields len() batches')
    # A trainer that stops iterating after an epoch's last batch (zip with range(len)) gets the next
    # epoch whole on the next pass.
    d = make()
    dl = torch.utils.data.DataLoader(d, batch_size=None, num_workers=0)
    first = [b['batch'] for _, b in zip(range(len(d)), dl)]
    second = [(b['epoch'], b['batch']) for b in dl]
    check(first == list(range(10)) and second == [(1, k) for k in range(10)], f'a pass stopped at its end: {second}')
    # A rank with a batch more than the others stops early each epoch (drop_last), also in one worker
    # whose previous batch the trainer still holds when the next epoch repositions its loader.
    d6 = make(rank=0, world_size=6, drop_last=True)
    eps = dl_epochs(d6, epochs=3, num_workers=1, persistent_workers=True)
    check([[(b['epoch'], b['batch']) for b in e] for e in eps] == [[(0, 0)], [(1, 0)], [(2, 0)]],
          f'drop_last across 6 ranks, 1 worker, 3 epochs: {[[(b["epoch"], b["batch"]) for b in e] for e in eps]}')
    for kw, exc in ((dict(batch_size='x'), (TypeError, ValueError)), (dict(batch_size=0), cirrdata.CirrdataError),
                    (dict(rank=2, world_size=2), ValueError), (dict(threads=0), ValueError),
                    (dict(device='tpu'), (ValueError, RuntimeError))):
        try:
            make(**kw)
            check(False, f'{kw} must raise')
        except exc:
            check(True, '')
    if torch.cuda.is_available():
        got = dl_epochs(make(device='cuda'), epochs=1, num_workers=0)
        check(got[0][0]['image'].is_cuda and torch.equal(got[0][0]['image'].cpu(), base[0][0]['image']), 'device=cuda')
    else:
        print('note: device="cuda" not checked: torch has no CUDA device here')

    # Two ranks with gloo: every train sample once per epoch, equal batch counts.
    script = os.path.join(work, 'ranks.py')
    with open(script, 'w') as f:
        f.write(RANK_SCRIPT)
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    out = os.path.join(work, 'ranks')
    env = dict(os.environ)
    for k in ('RANK', 'WORLD_SIZE', 'SLURM_PROCID', 'SLURM_NTASKS'):
        env.pop(k, None)
    r = subprocess.run([sys.executable, script, ds, out, harness.PYTHON_DIR, str(port)], capture_output=True, text=True,
                       timeout=600, env=env)
    check(r.returncode == 0, f'two-rank run: {r.stderr[-2000:]}')
    if r.returncode == 0:
        res = [json.load(open(f'{out}.{k}')) for k in range(2)]
        with open(os.path.join(ds, 'manifest.json')) as f:
            train = sorted(i for i, e in enumerate(json.load(f)['records']) if e['split'] == 'train')
        check([x['rank'] for x in res] == [0, 1] and all(x['world'] == 2 for x in res), 'ranks from torch.distributed')
        for e in range(2):
            counts = [len(x['epochs'][e]) for x in res]
            seen = sorted(i for x in res for b in x['epochs'][e] for i in b)
            check(seen == train and counts[0] == counts[1], f'epoch {e}: samples once each ({len(seen)}/{len(train)}), '
                                                            f'batches per rank {counts}')
        check(res[0]['epochs'][0] != res[0]['epochs'][1], 'epochs differ')

    # RecordDataset and collate_records.
    rd = ct.RecordDataset(ds, split='train')
    check(len(rd) == 20 and rd[0]['image'].dim() == 4 and rd[0]['affine'].shape == (4, 4), 'RecordDataset items')
    dl = torch.utils.data.DataLoader(rd, batch_size=3, num_workers=2, collate_fn=ct.collate_records)
    b = next(iter(dl))
    shapes = [tuple(rd[i]['image'].shape[1:]) for i in range(3)]
    full = tuple(max(s[a] for s in shapes) for a in range(3))
    ok = tuple(b['image'].shape) == (3, 1) + full and [tuple(x) for x in b['shape'].tolist()] == shapes
    ok = ok and all(torch.equal(b['image'][j][(slice(None),) + tuple(slice(0, n) for n in shapes[j])], rd[j]['image'])
                    for j in range(3))
    check(ok, f'collate_records pads to {full}: {tuple(b["image"].shape)}')
    b = ct.collate_records([rd[0], rd[1]], pad=False)
    check(isinstance(b['image'], list) and torch.equal(b['image'][1], rd[1]['image']) and b['label'].dtype == torch.int64,
          'collate_records(pad=False) keeps lists')


def main():
    args = harness.parser().parse_args()
    cirrdata = harness.load_binding(args.lib)
    work = tempfile.mkdtemp(prefix='cirrdata-torch-', dir=args.workdir)
    try:
        src, ds, other = (os.path.join(work, n) for n in ('src', 'ds', 'other'))
        r = harness.run([args.cirrdata, 'synth', '--layout', 'cirrmri600', src, '--cases', '12', '--seed', '3', '--quiet'])
        check(r.returncode == 0, f'synth: {r.stderr}')
        asan = bool(os.environ.get('CIRRDATA_ASAN_REEXEC'))
        for out, recipe in ((ds, 'nnunet-3d'),) + ((other, 'raw'),) * (not asan):
            r = harness.run([args.cirrdata, 'convert', '--layout', 'cirrmri600', src, '--out', out, '--recipe', recipe,
                             '--quiet'])
            check(r.returncode == 0, f'convert {recipe}: {r.stderr}')
        loader_parts(cirrdata, ds)
        if asan:
            print('note: the torch parts are skipped under AddressSanitizer (they run in the normal build)')
        else:
            torch_parts(cirrdata, ds, other, work)
    except Exception as e:  # noqa: BLE001
        harness.CHECKS.crashed(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary('torch')


if __name__ == '__main__':
    sys.exit(main())
