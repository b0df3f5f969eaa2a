"""cirrdata.distributed: one conversion's parts on a Dask cluster, then merged (needs dask.distributed;
importing cirrdata alone does not import Dask).

    from dask.distributed import Client
    import cirrdata.distributed
    client = Client('tcp://scheduler:8786')
    summary = cirrdata.distributed.convert(client, '/shared/CirrMRI600+', '/shared/out/liver-raw',
                                           layout='cirrmri600', recipe='raw', parts=16, threads_per_part=8)

Each of the N parts is one Dask task that runs cirrdata.convert(..., part=(I, N)) in the worker process
(the library in-process, no subprocess) into parts_dir/part-III-of-NNN; when all are done the client
merges them into out (cirrdata.merge: hard links where possible; out must not hold a dataset yet) and
removes the part folders. source,
out and parts_dir must be paths every worker and the client see alike (a shared filesystem).

Failures:
  - a part that fails in the library (a bad case with strict, a source that cannot be read, an output
    folder of another conversion, one another live process writes into) fails the whole call at once:
    CirrdataError 'part I/N: <the library's message>'; the other parts are cancelled (a part already
    running finishes in its worker). Nothing is retried, nothing is merged.
  - a worker that dies while it runs a part (killed, out of memory, its machine lost): Dask's scheduler
    runs the task again elsewhere (up to distributed.scheduler.allowed-failures times, default 3) and
    then reports KilledWorker; this function then submits the part again, up to `retries` times, and
    after that raises PartLost (a CirrdataError) naming the part and its last worker. A rerun resumes
    the dead worker's half-written part folder (the resume journal of cirrdata/convert.h: finished
    shards are kept, a torn one is written again; the result is byte-identical); the dead process's
    folder lock is dropped by the kernel with the process, so it never blocks the rerun, while a lock
    that a live process holds is still refused.
Part folders are kept whenever the call fails: calling it again with the same arguments resumes them.

Progress: the dashboard shows the tasks (named cirrdata-convert-part) and their states; the logger
'cirrdata.distributed' writes an INFO line when a part finishes (part I/N done, records, MB, MB/s, the
worker) and, every progress_interval seconds, per-case progress that the workers send as Dask events
(topic 'cirrdata-progress-<id>', also visible in the dashboard's event log).
"""
import logging
import os
import shutil
import threading
import time
import uuid

from distributed import as_completed, get_worker
from distributed.scheduler import KilledWorker

from . import CirrdataError, convert as _convert, merge as _merge
from .convert import _arg_error

log = logging.getLogger('cirrdata.distributed')

__all__ = ['convert', 'PartLost']


class PartLost(CirrdataError):
    """A part whose worker died more often than `retries` allows."""


def _part_name(i, n):
    return 'part-%03d-of-%03d' % (i, n)


def _run_part(source, part_dir, i, n, layout, recipe, threads, options, topic, interval):
    """The task: part i of n in this worker process. Sends per-case progress events to topic."""
    try:
        worker = get_worker()
    except ValueError:  # run outside a worker (e.g. a synchronous scheduler): no events
        worker = None
    last = [time.monotonic()]

    def progress(done, total, nbytes):
        now = time.monotonic()
        if worker is not None and topic and (now - last[0] >= interval or done == total):
            last[0] = now
            worker.log_event(topic, {'part': i, 'parts': n, 'done': done, 'total': total, 'bytes': nbytes})

    summary = _convert(source, part_dir, layout=layout, recipe=recipe, part=(i, n), threads=threads,
                       progress=progress, **options)
    summary['pid'] = os.getpid()
    summary['worker'] = worker.address if worker is not None else None
    return summary


def _check_parts_dir(parts_dir, out):
    if os.path.abspath(parts_dir) == os.path.abspath(out):
        raise ValueError('parts_dir must not be the output folder %s' % out)


def _remove_parts(parts_dir, n, created):
    """Removes this conversion's part folders (their shards are linked or copied into out by now), and
    parts_dir itself when this call created it and it is empty."""
    for i in range(1, n + 1):
        shutil.rmtree(os.path.join(parts_dir, _part_name(i, n)), ignore_errors=True)
    if created:
        try:
            os.rmdir(parts_dir)
        except OSError:
            pass


def convert(client, source, out, *, layout, recipe='raw', parts=None, threads_per_part=1, retries=2, parts_dir=None,
            keep_parts=False, progress_interval=10.0, **options):
    """Converts source into the dataset folder out in `parts` parts on client's cluster (see the module
    docstring) and returns the merged dataset's summary (cirrdata.merge's: out, parts, records, skipped,
    shards, bytes, counts) with 'part_summaries' (each part's cirrdata.convert summary plus its worker
    and pid, in part order), 'retried' (part index: reruns after KilledWorker) and 'seconds'.

    layout, recipe and options are cirrdata.convert's. parts: N, default the cluster's worker count
    (at the time of the call). threads_per_part: the library's threads in each part (0: one per online
    CPU of the worker's machine); a worker runs as many parts at once as it has Dask threads.
    retries: how many times a part is submitted again after Dask gave it up (KilledWorker).
    parts_dir: where the part folders go (default out + '.parts'); keep_parts keeps them after the merge.
    progress_interval: seconds between a part's progress events (and log lines)."""
    t0 = time.monotonic()
    source, out = os.fspath(source), os.fspath(out)
    if parts is None:
        parts = len(client.scheduler_info().get('workers', {})) or 1
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError('parts must be an integer >= 1, not %r' % (parts,))
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError('retries must be an integer >= 0, not %r' % (retries,))
    if isinstance(threads_per_part, bool) or not isinstance(threads_per_part, int) or not 0 <= threads_per_part <= 1024:
        raise ValueError('threads_per_part must be an integer in 0..1024, not %r' % (threads_per_part,))
    if os.path.lexists(os.path.join(out, 'manifest.json')):  # merge would refuse it: say so before any work
        raise _arg_error('%s: already exists; convert into a new directory' % os.path.join(out, 'manifest.json'))
    parts_dir = os.fspath(parts_dir) if parts_dir is not None else out.rstrip('/') + '.parts'
    _check_parts_dir(parts_dir, out)
    created = not os.path.isdir(parts_dir)
    os.makedirs(parts_dir, exist_ok=True)
    n = parts
    dirs = [os.path.join(parts_dir, _part_name(i, n)) for i in range(1, n + 1)]
    token = uuid.uuid4().hex
    topic = 'cirrdata-progress-' + token
    lock = threading.Lock()
    shown = {}

    def on_event(event):
        msg = event[1]
        try:
            i = int(msg['part'])
            with lock:
                if shown.get(i) == msg['done']:
                    return
                shown[i] = msg['done']
            log.info('part %d/%d: %d/%d cases, %.1f MB read', i, n, msg['done'], msg['total'], msg['bytes'] / 1e6)
        except (KeyError, TypeError, ValueError):
            pass

    client.subscribe_topic(topic, on_event)
    tries = {i: 0 for i in range(1, n + 1)}

    def submit(i):
        key = 'cirrdata-convert-part-%d-of-%d-try%d-%s' % (i, n, tries[i], token)
        fut = client.submit(_run_part, source, dirs[i - 1], i, n, layout, recipe, threads_per_part, options,
                            topic, float(progress_interval), key=key, pure=False)
        part_of[fut.key] = i
        submitted.append(fut)
        return fut

    part_of, submitted = {}, []
    futures = [submit(i) for i in range(1, n + 1)]
    results = {}
    pending = as_completed(futures)
    try:
        for fut in pending:
            i = part_of[fut.key]
            if fut.status == 'finished':
                s = fut.result()
                results[i] = s
                mb = s['bytes_read'] / 1e6
                log.info('part %d/%d done on %s (pid %s): %d records, %d skipped, %.1f MB in %.1f s (%.1f MB/s)%s',
                         i, n, s['worker'], s['pid'], s['records'], s['skipped'], mb, s['seconds'],
                         mb / s['seconds'] if s['seconds'] > 0 else 0.0,
                         ', %d records resumed from an interrupted try' % s['resumed_records']
                         if s['resumed_records'] else '')
                continue
            exc = fut.exception()
            if isinstance(exc, KilledWorker):
                if tries[i] >= retries:
                    raise PartLost('part %d/%d: its worker died while converting it (%s), and it was submitted '
                                   'again %d time%s (retries=%d); the parts done so far are kept in %s: calling '
                                   'again resumes them' % (i, n, exc, tries[i], '' if tries[i] == 1 else 's',
                                                           retries, parts_dir)) from exc
                tries[i] += 1
                log.warning('part %d/%d: its worker died (%s); submitting it again (retry %d of %d)', i, n, exc,
                            tries[i], retries)
                pending.add(submit(i))
                continue
            if isinstance(exc, CirrdataError):
                raise type(exc)('part %d/%d: %s' % (i, n, exc), exc.status) from exc
            raise exc
    except BaseException:
        client.cancel(submitted)
        raise
    finally:
        try:
            client.unsubscribe_topic(topic)
        except Exception:  # a client already closing: nothing to unsubscribe from
            pass
    log.info('all %d parts converted; merging into %s', n, out)
    summary = _merge(dirs, out)
    if not keep_parts:
        _remove_parts(parts_dir, n, created)
    summary['part_summaries'] = [results[i] for i in range(1, n + 1)]
    summary['retried'] = {i: t for i, t in tries.items() if t}
    summary['seconds'] = time.monotonic() - t0
    mb = sum(s['bytes_read'] for s in summary['part_summaries']) / 1e6
    log.info('converted %s into %s: %d records in %d shards, %.1f MB read in %.1f s (%.1f MB/s) on %d parts',
             source, out, summary['records'], summary['shards'], mb, summary['seconds'],
             mb / summary['seconds'] if summary['seconds'] > 0 else 0.0, n)
    return summary

