#!/usr/bin/env python3
"""The C sources are formatted as .clang-format says (clang-format --dry-run --Werror over every .c and .h
of libcirrdata/, tools/, tests/ and benchmarks/), and no line is longer than the 120 columns it sets.
clang-format comes from Debian (tools/deps.sh test installs it); without it the test fails, naming the
package. Fails naming each file that differs and its first differing line."""
import argparse
import glob
import os
import shutil
import subprocess
import sys

FOLDERS = ("libcirrdata", "tools", "tests", "benchmarks")


def sources(root):
    out = []
    for folder in FOLDERS:
        for ext in ("c", "h"):
            out += glob.glob(os.path.join(root, folder, "**", "*." + ext), recursive=True)
    return sorted(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    a = ap.parse_args()
    root = os.path.abspath(a.root)
    exe = shutil.which("clang-format") or shutil.which("clang-format-14")
    if not exe:
        print("FAIL: clang-format is not installed (Debian package clang-format; tools/deps.sh test)")
        return 1
    files = sources(root)
    bad = []
    r = subprocess.run([exe, "--dry-run", "--Werror", "--style=file"] + files, capture_output=True, text=True, cwd=root)
    for line in r.stderr.splitlines():
        if ": error: code should be clang-formatted" in line:
            bad.append(line.split(": error:")[0])
    long_lines = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            long_lines += [f"{os.path.relpath(f, root)}:{i}" for i, l in enumerate(fh, 1) if len(l.rstrip("\n")) > 120]
    for b in bad[:40]:
        print(f"FAIL: not formatted: {os.path.relpath(b.rsplit(':', 2)[0], root)} (first at {b})")
    for l in long_lines[:40]:
        print(f"FAIL: over 120 columns: {l}")
    if r.returncode != 0 and not bad:
        print(f"FAIL: clang-format exited {r.returncode}: {r.stderr[-500:]}")
        return 1
    print(f"format: {len(files)} files, {len(set(x.rsplit(':', 2)[0] for x in bad))} not formatted, "
          f"{len(long_lines)} lines over 120 columns")
    return 1 if bad or long_lines else 0


if __name__ == "__main__":
    sys.exit(main())
