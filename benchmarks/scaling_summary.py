#!/usr/bin/env python3
"""Summary of benchmarks/run_scaling.sh: the parts table (one machine, 2 and 4 parts, merge), wall and CPU
seconds, and the size sweep with least-squares lines (CPU and wall), their R^2 and a PNG plot.

    scaling_summary.py RESULTS.jsonl --png OUT.png [--threads T] [--recipe R]
"""
import argparse
import json
import statistics

import numpy as np


def fit(x, y):
    b, c = np.polyfit(x, y, 1)
    pred = b * x + c
    return b, c, 1 - float(((y - pred) ** 2).sum()) / float(((y - y.mean()) ** 2).sum())


def rng(v, fmt="{:.2f}"):
    return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}-{fmt.format(max(v))})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--png", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipe", default="raw")
    a = ap.parse_args()
    rows = [json.loads(line) for line in open(a.results)]
    rounds = sorted({r["round"] for r in rows if r["kind"] == "convert"})
    loads = [r["load"] for r in rows if "load" in r]
    print(f"\nscaling benchmark: recipe {a.recipe}, --threads {a.threads}, {len(rounds)} rounds; load average "
          f"{min(loads):.1f}-{max(loads):.1f} at the starts of the runs")
    one = {r["round"]: r["time"] for r in rows if r["kind"] == "convert"}
    cases = next(r["cases"] for r in rows if r["kind"] == "convert")
    print(f"parts ({cases} patients; the parts of one N run one after the other, each with all threads); "
          "median (min-max) over rounds:")
    print(f"  one machine: wall {rng([one[i]['seconds'] for i in rounds])} s, "
          f"CPU {rng([one[i]['cpu_seconds'] for i in rounds])} s")
    out = {}
    for n in (2, 4):
        v = {k: [] for k in ("slow", "slow_frac", "sum_cpu", "bal_cpu", "merge", "merge_frac", "merge_cpu_frac",
                             "speed", "sum_wall")}
        for i in rounds:
            p = [r["time"] for r in rows if r["kind"] == "part" and r["n"] == n and r["round"] == i]
            m = next(r["time"] for r in rows if r["kind"] == "merge" and r["n"] == n and r["round"] == i)
            wall, cpu = [x["seconds"] for x in p], [x["cpu_seconds"] for x in p]
            v["slow"].append(max(wall))
            v["slow_frac"].append(max(wall) / one[i]["seconds"])
            v["sum_wall"].append(sum(wall) / one[i]["seconds"])
            v["sum_cpu"].append(sum(cpu) / one[i]["cpu_seconds"])
            v["bal_cpu"].append(max(cpu) / (sum(cpu) / len(cpu)))
            v["merge"].append(m["seconds"])
            v["merge_frac"].append(m["seconds"] / one[i]["seconds"])
            v["merge_cpu_frac"].append(m["cpu_seconds"] / one[i]["cpu_seconds"])
            v["speed"].append(one[i]["seconds"] / (max(wall) + m["seconds"]))
        pb = next(r["bytes"] for r in rows if r["kind"] == "parts" and r["n"] == n)
        print(f"  {n} parts: slowest part wall {rng(v['slow'])} s = {rng(v['slow_frac'])} of one machine; "
              f"CPU: sum of parts / one machine {rng(v['sum_cpu'])}, slowest / mean part {rng(v['bal_cpu'])}; "
              f"input bytes per part {pb} (max/mean {max(pb) / (sum(pb) / len(pb)):.3f})")
        print(f"           merge wall {rng(v['merge'])} s = {rng(v['merge_frac'], '{:.3f}')} of the one-machine "
              f"conversion (CPU {rng(v['merge_cpu_frac'], '{:.3f}')}); one machine / (slowest part + merge), wall: "
              f"{rng(v['speed'])}x")
        out[f"n{n}"] = {k: statistics.median(x) for k, x in v.items()}
    size = [r for r in rows if r["kind"] == "size"]
    sb = {r["cases"]: r for r in rows if r["kind"] == "size_bytes"}
    if len({r["cases"] for r in size}) < 2:
        print("size sweep: fewer than 2 sizes, no line to fit (SIZES)")
        return
    x = np.array([r["cases"] for r in size], dtype=float)
    yc = np.array([r["time"]["cpu_seconds"] for r in size])
    yw = np.array([r["time"]["seconds"] for r in size])
    bc, cc, r2c = fit(x, yc)
    bw, cw, r2w = fit(x, yw)
    print("size sweep:")
    for r in sorted(size, key=lambda r: (r["cases"], r["round"])):
        n, t = r["cases"], r["time"]
        print(f"  {n:4d} patients (round {r['round']}): wall {t['seconds']:7.2f} s, CPU {t['cpu_seconds']:7.2f} s "
              f"({sb[n]['input_bytes'] / 1e9:.2f} GB in, {sb[n]['output_bytes'] / 1e9:.2f} GB out; CPU "
              f"{t['cpu_seconds'] / n:.3f} s per patient; load {r['load']:.1f})")
    print(f"  least squares, CPU:  {bc:.4f} s per patient, intercept {cc:.2f} s, R^2 = {r2c:.4f}")
    print(f"  least squares, wall: {bw:.4f} s per patient, intercept {cw:.2f} s, R^2 = {r2w:.4f}")
    out["size_fit"] = {"cpu_s_per_patient": bc, "cpu_intercept_s": cc, "cpu_r2": r2c, "wall_s_per_patient": bw,
                       "wall_intercept_s": cw, "wall_r2": r2w}

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    xs = np.linspace(0, x.max() * 1.05, 50)
    ax.plot(x, yc, "o", color="C0", label="CPU seconds (user + system)")
    ax.plot(xs, bc * xs + cc, "-", color="C0", label=f"fit: {bc:.3f} s/patient + {cc:.2f} s, R$^2$ = {r2c:.4f}")
    ax.plot(x, yw, "s", color="C1", label="wall seconds (shared machine)")
    ax.plot(xs, bw * xs + cw, "--", color="C1", label=f"fit: {bw:.3f} s/patient + {cw:.2f} s, R$^2$ = {r2w:.4f}")
    ax.set_xlabel("synthetic CirrMRI600+ patients")
    ax.set_ylabel("conversion time (s)")
    ax.set_title(f"cirrdata convert, recipe {a.recipe}, --threads {a.threads}")
    ax.set_xlim(0, x.max() * 1.05)
    ax.set_ylim(0, max(yc.max(), yw.max()) * 1.15)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(a.png)
    print(f"plot: {a.png}")
    print("json:", json.dumps(out))


if __name__ == "__main__":
    main()
