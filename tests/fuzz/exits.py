#!/usr/bin/python3
"""Which error exits of a parser a fuzzing run reached, from libFuzzer's -print_coverage=1 output.

  BUILD/tests/fuzz/fuzz_shard -max_total_time=30 -print_coverage=1 CORPUS_DIR 2> fuzz.log
  tests/fuzz/exits.py fuzz.log libcirrdata/shard/reader.c [MORE.c ...]

An error exit is a statement of a listed source file that calls cd_fail( or the BAD( macro. An exit
counts as reached when its function was entered and the statement's first line has no uncovered PC
(later lines of the statement may hold branches of their own arguments). Where that line also holds
its `if (...)`, an uncovered PC there may be the condition's other path: such an exit is "unclear"
unless reached. libFuzzer records the PCs of inputs that added coverage while fuzzing (the seed corpus itself is
not recorded in this clang 14 build: a valid seed shows only what the empty input covers), so run it
for some seconds, not -runs=0. Exact only in a build with --buildtype=debug and
-Dc_args=-fsanitize-coverage=no-prune (every basic block its own PC); the default fuzz build prunes
blocks and optimises, and then a failure block has no PC of its own. Prints one line per exit (reached or not, line number,
the message's start) and "FILE: R of N error exits reached" per file. Exit status 0: this reports.
"""
import os
import re
import sys


def exits_of(path):
    """(first line, last line, text) of every statement calling cd_fail( or BAD(, 1-based."""
    lines = open(path).read().split('\n')
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        code = line.split('//')[0]
        if re.search(r'\b(cd_fail|BAD)\(', code) and not re.match(r'\s*(#\s*define|/?\*)', line):
            j = i
            while j < len(lines) - 1 and not lines[j].rstrip().endswith((';', '{', ')')):
                j += 1
            m = re.search(r'"([^"]*)"', ' '.join(lines[i:j + 2]))
            out.append((i + 1, j + 1, m.group(1) if m else line.strip(), bool(re.search(r'\bif \(', code))))
            i = j + 1
        else:
            i += 1
    return out


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], errors='replace') as f:
        text = f.read()
    sources = sys.argv[2:]
    funcs = {}      # file -> [(start line, covered)]
    uncovered = {}  # file -> {line}
    for m in re.finditer(r'^(COVERED|UNCOVERED)_FUNC: .* (\S+):(\d+)$', text, re.M):
        funcs.setdefault(os.path.realpath(m.group(2)), []).append((int(m.group(3)), m.group(1) == 'COVERED'))
    for m in re.finditer(r'^\s+UNCOVERED_PC: (\S+):(\d+)$', text, re.M):
        uncovered.setdefault(os.path.realpath(m.group(1)), set()).add(int(m.group(2)))
    for src in sources:
        real = os.path.realpath(src)
        fl = sorted(funcs.get(real, []))
        unc = uncovered.get(real, set())
        ex = exits_of(src)
        reached = 0
        unclear = 0
        for a, b, msg, same_line_if in ex:
            owner = [c for start, c in fl if start <= a]
            entered = bool(owner) and owner[-1]
            ok = entered and a not in unc
            reached += ok
            unclear += entered and not ok and same_line_if
            word = 'reached' if ok else 'unclear' if entered and same_line_if else 'UNREACHED'
            print('  %-9s %s:%d  %s' % (word, os.path.basename(src), a, msg[:70]))
        print('%s: %d of %d error exits reached (%d unclear)' % (src, reached, len(ex), unclear))
    return 0


if __name__ == '__main__':
    sys.exit(main())
