#!/usr/bin/python3
"""Trains a cirrhosis staging classifier (3 classes: mild, moderate, severe) on 2D axial slices,
fed only by cirrdata.Loader, and saves a checkpoint that tools/scripts/export_weights.py turns into a model
file for `cirrdata stage`.

  tools/scripts/train_staging.py DATASET -o staging.pt [--arch cirrnet-small] [--steps 800 | --epochs N]
                         [--time-budget 600]

DATASET is a dataset converted with the `cirrhosisstage-2d` recipe (cirrdata convert ... --recipe
cirrhosisstage-2d): axial slices already resized to 256x256, mapped to [0, 1] by the volume's 0.5/99.5
percentiles, three channels, (x - 0.5) / 0.5. That is the preprocessing `cirrdata stage` applies in C
(libcirrdata/nn/staging.c calls the same recipe code), so training and inference see the same numbers
by construction; no preprocessing is repeated here. The loader gives (B, 3, X, Y, 1) slices of the
'train' split (only slices containing liver), augmented with the staging paper's 2D set
(`cirrhosisstage`: horizontal and vertical flips p=0.3, rotation U(-10, 10) degrees).

Recipe: AdamW (weight decay 1e-5 as in the staging code), cross-entropy with label smoothing 0.1
(the slices of one scan are near copies, so confident fits to them generalise worse), batch 16,
lr 2e-3 with a linear warm-up and a cosine decay over the planned steps (the paper's batch 32 and lr
1e-4 for 100 epochs are far beyond a few CPU minutes: smaller batches give more updates per second).
The run is a fixed number of optimizer steps (--steps, default 800: about 3 CPU minutes of
cirrnet-small with its loader, ~2.5 epochs of the demo's 120 patients), so its result does not depend
on how busy the machine is; --epochs N asks for N whole epochs instead. The checkpoint is the last step's (the
validation split of a small dataset holds a dozen scans: too few to pick a "best" epoch by). --augment
takes another pipeline; note that the loader's rotation interpolates linearly (torchvision's
RandomRotation uses nearest), which smooths the fine texture a little on every training slice; on the
synthetic data, training without rotation (flips only) overfit the training scans more. Validation on the 'valid' split each epoch: slice accuracy and scan accuracy (mean of a
scan's slice probabilities, the aggregation `cirrdata stage` does).

Stopping: after the planned steps, or earlier when --time-budget seconds of wall time have passed
(a safety cap, checked after every step; the run then validates and saves what it has, and says so).
The cosine follows the step progress, or the time progress where that leads by more than 5 % of the
run (a run heading past the budget), so a cut run still ends annealed. A run whose steps fit the
budget follows the step count alone and is reproducible
on the same machine: seeded loader order and augmentation, seeded initialisation, fixed thread
count; the log says when the clock led instead. The summary line gives the steps, epochs, slices per
second and the process's CPU seconds (user + system), which, unlike wall time, do not grow when other
programs share the cores.

Needs /usr/bin/python3 with torch and torchvision; libcirrdata.so via $CIRRDATA_LIB or the build tree.
"""
import argparse
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), 'python'))  # HERE: tools/scripts

CLASS_NAMES = ('mild', 'moderate', 'severe')


def parse_args(argv):
    p = argparse.ArgumentParser(description='Train a cirrhosis staging classifier from a cirrhosisstage-2d dataset.')
    p.add_argument('dataset', help='dataset directory converted with --recipe cirrhosisstage-2d')
    p.add_argument('-o', '--out', required=True, help='checkpoint to write (.pt)')
    p.add_argument('--arch', default='cirrnet-small', help='python/cirrdata/models.py architecture (default cirrnet-small)')
    p.add_argument('--steps', type=int, default=800, help='optimizer steps (default 800)')
    p.add_argument('--epochs', type=int, default=0, help='train whole epochs instead of --steps')
    p.add_argument('--time-budget', type=float, default=600.0,
                   help='wall seconds of training at most, a safety cap (default 600)')
    p.add_argument('--label-smoothing', type=float, default=0.1, help='cross-entropy label smoothing (default 0.1)')
    p.add_argument('--batch', type=int, default=16, help='slices per batch (default 16)')
    p.add_argument('--lr', type=float, default=2e-3, help='peak learning rate (default 2e-3)')
    p.add_argument('--weight-decay', type=float, default=1e-5)
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--threads', type=int, default=0,
                   help='torch threads (default: online CPUs less the loader threads, at least 1)')
    p.add_argument('--loader-threads', type=int, default=1, help='cirrdata.Loader worker threads (default 1)')
    p.add_argument('--augment', default='cirrhosisstage',
                   help="loader augmentation: a built-in name or a pipeline JSON file (default cirrhosisstage)")
    p.add_argument('--train-split', default='train')
    p.add_argument('--val-split', default='valid')
    a = p.parse_args(argv)
    if a.steps < 1 or a.epochs < 0 or a.batch < 1 or a.time_budget <= 0 or a.lr <= 0:
        p.error('--steps, --batch, --time-budget and --lr must be positive, --epochs not negative')
    if not 0 <= a.label_smoothing < 1:
        p.error('--label-smoothing must be in [0, 1)')
    return a


class Progress:
    """A one-line progress bar on a terminal (stderr); silent otherwise."""

    def __init__(self, total, label):
        self.total, self.label = max(total, 1), label
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def update(self, done, text):
        if not self.tty:
            return
        now = time.monotonic()
        if now - self.last < 0.2 and done < self.total:
            return
        self.last = now
        width = 28
        fill = int(width * min(done, self.total) / self.total)
        sys.stderr.write('\r  %s [%s%s] %d/%d %s\033[K' % (self.label, '#' * fill, '.' * (width - fill), done,
                                                            self.total, text))
        sys.stderr.flush()

    def close(self):
        if self.tty:
            sys.stderr.write('\r\033[K')
            sys.stderr.flush()


def evaluate(model, torch, loader, classes):
    """Slice loss/accuracy and scan accuracy (mean slice probabilities per record) on a loader's epoch."""
    import numpy as np
    model.eval()
    n, loss_sum, correct = 0, 0.0, 0
    scan_prob, scan_label = {}, {}
    with torch.no_grad():
        for b in loader:
            x = b['image'][..., 0]
            y = b['label'].long()
            logits = model(x)
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction='sum'))
            prob = torch.softmax(logits.double(), dim=1).numpy()
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
            for i, rec in enumerate(b['index'].tolist()):
                s = scan_prob.setdefault(rec, [np.zeros(classes), 0])
                s[0] += prob[i]
                s[1] += 1
                scan_label[rec] = int(y[i])
    model.train()
    scans = len(scan_prob)
    scan_correct = sum(int(np.argmax(s[0] / s[1]) == scan_label[r]) for r, s in scan_prob.items())
    return {'loss': loss_sum / max(n, 1), 'slice_acc': correct / max(n, 1), 'slices': n,
            'scan_acc': scan_correct / max(scans, 1), 'scans': scans}


def main(argv):
    a = parse_args(argv)
    import numpy as np
    import torch
    import cirrdata
    from cirrdata.models import build
    from cirrdata.torch import BatchDataset

    # One core per thread: torch's OpenMP threads spin while they wait, so oversubscribing the cores
    # with the loader's workers burns CPU time for nothing (on 2 cores: 1 torch + 1 loader thread).
    torch.set_num_threads(a.threads if a.threads > 0 else max(1, (os.cpu_count() or 1) - a.loader_threads))
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)

    with cirrdata.Dataset(a.dataset) as ds:
        recipe = ds.manifest.get('recipe', {}).get('name')
        classes = len(ds.manifest.get('classes') or CLASS_NAMES)
    if recipe != 'cirrhosisstage-2d':
        print('train_staging: %s: recipe is %r; convert with --recipe cirrhosisstage-2d (the preprocessing '
              '`cirrdata stage` applies)' % (a.dataset, recipe), file=sys.stderr)
        return 1
    classes = 3 if classes < 3 else classes

    common = dict(mode='slice', slices_with_mask_only=True, threads=a.loader_threads, seed=a.seed)
    train = BatchDataset(a.dataset, batch_size=a.batch, split=a.train_split, augment=a.augment, drop_last=True,
                         **common)
    val = BatchDataset(a.dataset, batch_size=64, split=a.val_split, augment='none', **common)
    steps_per_epoch = len(train)
    if steps_per_epoch < 1:
        print('train_staging: %s: the %r split has fewer than --batch %d liver slices' % (a.dataset, a.train_split,
              a.batch), file=sys.stderr)
        return 1
    planned = steps_per_epoch * a.epochs if a.epochs > 0 else a.steps
    epochs = -(-planned // steps_per_epoch)  # the last one may be partial
    model = build(a.arch, classes)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    # Linear warm-up over the first 5 % of steps, then cosine to 0 over the run's progress: steps done /
    # planned, or seconds spent / budget when that leads clearly, so a run cut by the budget still ends
    # with the learning rate annealed (an unannealed snapshot is much worse). When the clock leads, the
    # schedule depends on the machine's speed; the log says so.
    warm = max(1, planned // 20)
    clock_led = [False]

    def lr_factor(s, elapsed):
        if s < warm:
            return (s + 1) / warm
        by_steps = (s - warm) / max(1, planned - warm)
        by_clock = elapsed / a.time_budget
        # The clock steers only when it leads by more than start-up noise: a run whose steps fit the
        # budget then follows the step count alone and is reproducible (same seed, same weights).
        progress = by_steps
        if by_clock > by_steps + 0.05:
            clock_led[0] = True
            progress = by_clock
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    print('training %s (%d parameters) on %s: %d train slices (%d steps/epoch of %d), %d val slices; '
          '%d steps (%.1f epochs), at most %.0f s; %d torch threads, %d loader threads' %
          (a.arch, sum(p.numel() for p in model.parameters()), a.dataset, train.samples_per_epoch,
           steps_per_epoch, a.batch, val.samples_per_epoch, planned, planned / steps_per_epoch,
           a.time_budget, torch.get_num_threads(), a.loader_threads), flush=True)

    t0, cpu0 = time.monotonic(), os.times()
    step, cut, history = 0, False, []
    for epoch in range(epochs):
        bar = Progress(min(steps_per_epoch, planned - step), 'epoch %d' % (epoch + 1))
        n, loss_sum, correct, te = 0, 0.0, 0, time.monotonic()
        for i, b in enumerate(train):
            x = b['image'][..., 0]          # (B, 3, X, Y): a view of the loader's ring, used before the next batch
            y = b['label'].long()
            for g in opt.param_groups:
                g['lr'] = a.lr * lr_factor(step, time.monotonic() - t0)
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=a.label_smoothing)
            loss.backward()
            opt.step()
            step += 1
            n += len(y)
            loss_sum += float(loss) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            bar.update(i + 1, 'loss %.3f acc %.2f %.0f slices/s' % (loss_sum / n, correct / n, n / (time.monotonic() - te)))
            if time.monotonic() - t0 > a.time_budget:
                cut = True
                break
            if step >= planned:
                break
        bar.close()
        v = evaluate(model, torch, val, classes)
        history.append({'epoch': epoch + 1, 'train_loss': loss_sum / max(n, 1), 'train_acc': correct / max(n, 1), **v})
        print('epoch %d/%d  train loss %.3f acc %.3f (%d slices, %.0f s)  |  val loss %.3f  slice acc %.3f (%d)  '
              'scan acc %.3f (%d scans)' % (epoch + 1, epochs, loss_sum / max(n, 1), correct / max(n, 1), n,
                                            time.monotonic() - te, v['loss'], v['slice_acc'], v['slices'],
                                            v['scan_acc'], v['scans']), flush=True)
        if cut:
            print('stopped by the time budget (%.0f s) at step %d of %d planned (learning rate annealed over the '
                  'budget); a rerun on a slower or busier machine may stop elsewhere' % (a.time_budget, step, planned),
                  flush=True)
            break
    wall = time.monotonic() - t0
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    print('trained %d steps (%.2f epochs, %d slices) in %.0f s wall, %.0f CPU s (user+sys): %.1f slices/s wall, '
          '%.1f slices per CPU second' % (step, step / steps_per_epoch, step * a.batch, wall, cpu,
                                          step * a.batch / max(wall, 1e-9), step * a.batch / max(cpu, 1e-9)),
          flush=True)
    if clock_led[0] and not cut:
        print('note: the learning-rate schedule followed the clock (the machine was slower than the plan), so a '
              'rerun may differ slightly', flush=True)
    train.close()
    val.close()
    out_dir = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = a.out + '.tmp'
    torch.save({'state_dict': model.state_dict(), 'arch': a.arch, 'classes': classes,
                'class_names': list(CLASS_NAMES[:classes]), 'steps': step, 'planned_steps': planned,
                'cut_by_time_budget': cut, 'train_wall_s': wall, 'train_cpu_s': cpu, 'args': vars(a),
                'history': history}, tmp)
    os.replace(tmp, a.out)
    print('saved %s (%d steps in %.0f s)' % (a.out, step, time.monotonic() - t0), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
