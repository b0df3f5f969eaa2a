#!/usr/bin/python3
"""Which error exits of a parser a corpus reaches, from libFuzzer's -print_coverage=1 output.

  CC=clang meson setup build-fuzz-cov -Dfuzz=true -Db_sanitize=none -Dtests=false -Dbenchmarks=false \\
      --buildtype=debug -Dc_args=-fsanitize-coverage=no-prune
  ninja -C build-fuzz-cov tests/fuzz/fuzz_shard
  build-fuzz-cov/tests/fuzz/fuzz_shard -runs=0 -print_coverage=1 CORPUS_DIR > cov.log 2>&1
  tests/fuzz/exits.py cov.log libcirrdata/shard/reader.c [MORE.c ...]

An error exit is a statement of a listed source file that calls cd_fail( or the BAD( macro (the macro's
own definition excluded). It counts as reached when its function was entered and none of its lines has
an uncovered PC: the statement's first line, and the plain statements between the block's `{` and it
(`free(s);` before `return cd_fail(...)`), where the block's PC may sit. Later lines of the statement
are not looked at (they may hold branches of their own arguments). When the first line also holds its
`if (...)`, an uncovered PC there may be the condition's other path: such an exit is "unclear" unless
reached, and not counted. The build above gives every basic block its own PC at -O0; in the default
fuzz build (pruned, -O2) a failure block often has no PC of its own, and with pruning this clang 14
records little of a -runs=0 replay. Prints one line per exit and "FILE: R of N error exits reached
(U unclear)" per file. Exit status 0: this reports, it does not judge.
"""
import os
import re
import sys

EXIT = re.compile(r'\b(cd_fail|BAD)\(')
CONTROL = re.compile(r'\b(if|for|while|switch|case|else)\b')


def exits_of(path):
    """(first line looked at, statement line, message, the statement shares its line with an if)."""
    lines = open(path).read().split('\n')
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        macro = line.rstrip().endswith('\\') or (i > 0 and lines[i - 1].rstrip().endswith('\\'))
        if EXIT.search(line) and not macro and not re.match(r'\s*(#|/?\*)', line):
            j = i
            while j < len(lines) - 1 and not lines[j].rstrip().endswith((';', '{')):
                j += 1
            m = re.search(r'"([^"]*)"', ' '.join(lines[i:j + 1]))
            k = i  # back over plain statements to the block's '{' (not for `if (...) BAD(...)` on one line)
            while not re.search(r'\bif \(', line) and k > 0 and i - k < 3:
                prev = lines[k - 1].strip()
                if prev.endswith('{'):
                    break
                if not prev.endswith(';') or CONTROL.search(prev) or EXIT.search(prev):
                    k = i
                    break
                k -= 1
            else:
                if k < i and not lines[k - 1].strip().endswith('{'):
                    k = i
            out.append((k + 1, i + 1, m.group(1) if m else line.strip(), bool(re.search(r'\bif \(', line))))
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
    funcs = {}      # file -> [(start line, covered)]
    uncovered = {}  # file -> {line}
    for m in re.finditer(r'^(COVERED|UNCOVERED)_FUNC: .* (\S+):(\d+)$', text, re.M):
        funcs.setdefault(os.path.realpath(m.group(2)), []).append((int(m.group(3)), m.group(1) == 'COVERED'))
    for m in re.finditer(r'^\s+UNCOVERED_PC: (\S+):(\d+)$', text, re.M):
        uncovered.setdefault(os.path.realpath(m.group(1)), set()).add(int(m.group(2)))
    for src in sys.argv[2:]:
        real = os.path.realpath(src)
        fl = sorted(funcs.get(real, []))
        unc = uncovered.get(real, set())
        reached = unclear = 0
        ex = exits_of(src)
        for first, line, msg, same_line_if in ex:
            owner = [c for start, c in fl if start <= line]
            entered = bool(owner) and owner[-1]
            ok = entered and not any(n in unc for n in range(first, line + 1))
            reached += ok
            unclear += entered and not ok and same_line_if
            word = 'reached' if ok else 'unclear' if entered and same_line_if else 'UNREACHED'
            print('  %-9s %s:%d  %s' % (word, os.path.basename(src), line, msg[:70]))
        print('%s: %d of %d error exits reached (%d unclear)' % (src, reached, len(ex), unclear))
    return 0


if __name__ == '__main__':
    sys.exit(main())
