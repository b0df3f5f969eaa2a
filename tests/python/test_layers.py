#!/usr/bin/env python3
"""The library's module layering, enforced: a module uses only modules to its left.

    core -> transform -> io, shard, gpu -> augment, synth -> dataset, preprocess -> convert, loader, nn -> abi

(modules in one group may not use each other). Two kinds of edges are checked:

- include edges: every `#include "M/..."` of an internal header and every `#include "cirrdata/H.h"` of a
  public header (mapped to the module that implements it) in libcirrdata/M/ and in the public headers;
  a header private to its module (PRIVATE) included from another module fails whatever the order;
- symbol edges: every undefined symbol of an object file of module A that an object file of module B
  defines (`nm` over the library's objects in the build folder).

Any edge against the order fails the test, naming the edge, the file and the header or symbol. With
--graph the module graph (edges and their counts) is printed, as the README's Layout section shows it.
"""
import argparse
import collections
import glob
import os
import re
import subprocess
import sys

LAYERS = [["core"], ["transform"], ["io", "shard", "gpu"], ["augment", "synth"], ["dataset", "preprocess"],
          ["convert", "loader", "nn"], ["abi"]]
RANK = {m: i for i, group in enumerate(LAYERS) for m in group}
# Public headers (libcirrdata/include/cirrdata/) by the module that implements them; cirrdata.h is the
# umbrella header for applications and may not be included inside the library.
PUBLIC = {
    "api": "core", "status": "core", "device": "core", "progress": "core", "dtype": "core", "volume": "core", "limits": "core", "version": "core", "rng": "core",
    "orient": "transform", "resample": "transform",
    "nifti": "io", "npy": "io", "folder": "io",
    "shard": "shard",
    "gpu": "gpu",
    "augment": "augment",
    "synth": "synth",
    "dataset": "dataset",
    "recipe": "preprocess", "preprocess": "preprocess",
    "convert": "convert", "nnunet": "convert",
    "loader": "loader",
    "model": "nn", "staging": "nn",
    "abi": "abi",
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
# Internal headers private to their module: no other module may include them, whatever the order
# (gpu/context_impl.h holds the Vulkan context's fields; the op families use gpu/gpu_impl.h's functions).
PRIVATE = {"gpu/context_impl.h"}


def allowed(a, b):
    return a == b or RANK[b] < RANK[a]


def include_edges(root, problems):
    lib = os.path.join(root, "libcirrdata")
    edges = collections.Counter()
    files = [(m, p) for m in RANK for p in glob.glob(os.path.join(lib, m, "*.[ch]"))]
    files += [(PUBLIC.get(os.path.splitext(os.path.basename(p))[0]), p) for p in glob.glob(os.path.join(lib, "include", "cirrdata", "*.h"))]
    for mod, path in files:
        if mod is None:
            if os.path.basename(path) != "cirrdata.h":
                problems.append(f"{os.path.relpath(path, root)}: a public header that no module owns (add it to PUBLIC)")
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for inc in INCLUDE.findall(text):
            head, _, rest = inc.partition("/")
            if head == "cirrdata":
                name = os.path.splitext(rest)[0]
                if name == "cirrdata":
                    problems.append(f"{os.path.relpath(path, root)} includes the umbrella header cirrdata/cirrdata.h")
                    continue
                target = PUBLIC.get(name)
                if target is None:
                    problems.append(f"{os.path.relpath(path, root)} includes {inc}, which no module owns")
                    continue
            elif head in RANK and rest:
                target = head
            else:
                continue  # generated headers (*_spv.h, version.h), volk
            if inc in PRIVATE and target != mod:
                problems.append(f"{os.path.relpath(path, root)} includes {inc}, which is private to module {target}")
            if target != mod:
                edges[(mod, target)] += 1
            if not allowed(mod, target):
                problems.append(f"include edge {mod} -> {target} against the layer order: {os.path.relpath(path, root)} includes {inc}")
    return edges


def symbol_edges(build, problems):
    objdirs = glob.glob(os.path.join(build, "libcirrdata", "libcirrdata.so*.p"))
    if not objdirs:
        problems.append(f"{build}: no object folder libcirrdata/libcirrdata.so*.p (build the library first)")
        return collections.Counter()
    objs = []
    for o in sorted(glob.glob(os.path.join(objdirs[0], "*.c.o"))):
        mod = os.path.basename(o).split("_", 1)[0]
        if mod in RANK:
            objs.append((mod, o))
    if len({m for m, _ in objs}) < len(RANK):
        problems.append(f"objects of modules {sorted(set(RANK) - {m for m, _ in objs})} not found in {objdirs[0]}")
    defined, undefined = {}, []
    for mod, o in objs:
        out = subprocess.run(["nm", "-g", "--defined-only", o], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3:
                defined[parts[2]] = mod
        out = subprocess.run(["nm", "-u", o], capture_output=True, text=True, check=True).stdout
        undefined += [(mod, o, line.split()[-1]) for line in out.splitlines() if line.strip()]
    edges = collections.Counter()
    seen = set()
    for mod, o, sym in undefined:
        target = defined.get(sym)
        if target is None or target == mod:
            continue
        edges[(mod, target)] += 1
        if not allowed(mod, target) and (mod, target, sym) not in seen:
            seen.add((mod, target, sym))
            problems.append(f"symbol edge {mod} -> {target} against the layer order: {os.path.basename(o)} uses {sym}")
    return edges


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    ap.add_argument("--build", required=True, help="the meson build folder (for the library's object files)")
    ap.add_argument("--graph", action="store_true", help="print the module graph")
    args = ap.parse_args()
    problems = []
    inc = include_edges(args.root, problems)
    sym = symbol_edges(args.build, problems)
    if args.graph or problems:
        print("module graph (A -> B: A uses B; include edges / symbol edges):")
        for a, b in sorted(set(inc) | set(sym), key=lambda e: (RANK[e[0]], e[0], RANK[e[1]], e[1])):
            print(f"  {a:10} -> {b:10} {inc.get((a, b), 0):4} / {sym.get((a, b), 0):4}{'' if allowed(a, b) else '   AGAINST THE ORDER'}")
    for p in problems:
        print("FAIL:", p)
    print(f"layers: {len(inc)} include and {len(sym)} symbol module edges, {len(problems)} against the order")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
