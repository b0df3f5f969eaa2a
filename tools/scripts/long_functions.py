#!/usr/bin/env python3
"""Lists the C functions longer than a limit, longest first.

A function's length is its line count from the first line of its signature to its closing brace.
Usage: long_functions.py [--limit N] [--top K] [PATH ...]  (default paths: libcirrdata tools, from
the repository root). Comments, strings and preprocessor lines (macro bodies included) are skipped,
so braces inside them are not counted; a definition is a top-level '{' whose declaration ends with ')'.
"""
import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def blank_out(text):
    """The text with comments, string and character literals and preprocessor lines replaced by
    spaces (newlines kept, so line numbers stay)."""
    out = list(text)
    i, n = 0, len(text)
    line_start = True
    while i < n:
        c = text[i]
        if line_start and c == '#' or (line_start and c in ' \t' and text[i:].lstrip(' \t').startswith('#')):
            # a preprocessor line and its continuations
            j = i
            while j < n:
                if text[j] == '\n' and (j == 0 or text[j - 1] != '\\'):
                    break
                j += 1
            for k in range(i, j):
                if out[k] != '\n':
                    out[k] = ' '
            i = j
            continue
        if text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if out[k] != '\n':
                    out[k] = ' '
            i = j
            line_start = False
            continue
        if text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = ' '
            i = j
            continue
        if c in '"\'':
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == '\\' else 1
            for k in range(i + 1, min(j, n)):
                if out[k] != '\n':
                    out[k] = ' '
            i = j + 1
            line_start = False
            continue
        if c == '\n':
            line_start = True
        elif c not in ' \t':
            line_start = False
        i += 1
    return ''.join(out)


def functions(path):
    """(name, first line, last line) of every function defined in a C file."""
    with open(path, encoding='utf-8', errors='replace') as f:
        text = blank_out(f.read())
    found = []
    depth = 0
    decl_start = 0  # offset where the current top-level declaration begins
    start = None
    name = None
    for i, c in enumerate(text):
        if depth == 0 and c in ';}':
            decl_start = i + 1
        if c == '{':
            if depth == 0:
                decl = text[decl_start:i]
                m = re.search(r'([A-Za-z_]\w*)\s*\(', decl)
                if m and decl.rstrip().endswith(')') and '=' not in decl[:m.start()]:
                    name = m.group(1)
                    first = decl_start + len(decl) - len(decl.lstrip())
                    start = text.count('\n', 0, first) + 1
                else:
                    start = None
            depth += 1
        elif c == '}':
            depth -= 1
            if depth == 0:
                if start is not None:
                    found.append((name, start, text.count('\n', 0, i) + 1))
                start = None
                decl_start = i + 1
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('paths', nargs='*', default=['libcirrdata', 'tools'])
    ap.add_argument('--limit', type=int, default=80, help='list functions longer than this many lines')
    ap.add_argument('--top', type=int, default=0, help='list only the K longest')
    args = ap.parse_args()
    rows = []
    for p in args.paths:
        p = p if os.path.isabs(p) or os.path.exists(p) else os.path.join(ROOT, p)
        files = [p] if os.path.isfile(p) else sorted(
            os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs if f.endswith('.c'))
        for f in files:
            rel = os.path.relpath(f, ROOT)
            for name, a, b in functions(f):
                if b - a + 1 > args.limit:
                    rows.append((b - a + 1, rel, a, name))
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    if args.top:
        rows = rows[:args.top]
    for n, rel, a, name in rows:
        print(f'{n:5d}  {rel}:{a}  {name}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
