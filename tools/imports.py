#!/usr/bin/env python3
"""Module import graph of a Rust crate's src/, with its cycles.

Usage: python3 tools/imports.py [SRC_DIR] [--dot]

Reads every .rs file under SRC_DIR (default `src`), takes the `crate::`,
`super::` and `self::` paths outside `#[cfg(test)]` blocks and comments as
edges between modules, and prints the strongly connected groups of two or
more modules (each is an import cycle). With `--dot` it also prints every
edge as a Graphviz digraph. The parse is textual, not rustc's: a path in a
string literal counts, a `use` through a re-export counts as the module that
re-exports it. docs/design.md records its output.
"""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(dp, f)
            rel = os.path.relpath(p, root)[:-3]
            parts = rel.split('/')
            if parts[-1] in ('mod', 'lib', 'main'):
                parts = parts[:-1]
            mods['::'.join(parts)] = p
def resolve(cur, path):
    segs = path.split('::')
    if segs[0] == 'crate':
        segs = segs[1:]
    elif segs[0] in ('super', 'self'):
        base = cur.split('::') if cur else []
        is_dir = mods.get(cur, '').endswith('mod.rs')
        if segs[0] == 'self':
            segs = segs[1:]
            if not is_dir: base = base[:-1] + [base[-1]] if base else base
        while segs and segs[0] == 'super':
            segs = segs[1:]
            base = base[:-1] if is_dir else base[:-1]
            is_dir = True
        segs = base + segs
    else:
        return None
    # longest prefix that is a module
    for n in range(len(segs), 0, -1):
        m = '::'.join(segs[:n])
        if m in mods: return m
    return None
edges = {m: set() for m in mods}
use_re = re.compile(r'\b(crate|super|self)((?:::\w+)+)')
for m, p in mods.items():
    src = open(p).read()
    src = re.sub(r'//[^\n]*', '', src)
    # cut tests modules
    src = src.split('#[cfg(test)]')[0]
    for mt in use_re.finditer(src):
        full = mt.group(1) + mt.group(2)
        # expand braces crudely: take the prefix before '{'
        t = resolve(m, full)
        if t and t != m and not (m.startswith(t + '::') or t == ''):
            edges[m].add(t)
    # brace groups: crate::a::{b, c::d}
    for mt in re.finditer(r'\b(crate|super)((?:::\w+)*)::\{([^}]*)\}', src):
        pre = mt.group(1) + mt.group(2)
        for item in mt.group(3).split(','):
            item = item.strip().split(' as ')[0]
            if not item or item == 'self': continue
            t = resolve(m, pre + '::' + item)
            if t and t != m and not m.startswith(t + '::'):
                edges[m].add(t)
# Tarjan
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
for v in mods:
    if v not in idx: sc(v)
cyc = [s for s in sccs if len(s) > 1]
print(f"modules {len(mods)}, edges {sum(len(e) for e in edges.values())}, cycles (strongly connected groups) {len(cyc)}")
for s in sorted(cyc, key=len, reverse=True):
    print(f"  {len(s)}: " + ', '.join(sorted(s)))
if '--dot' in sys.argv:
    print('digraph imports {')
    for m in sorted(edges):
        for t in sorted(edges[m]): print(f'  "{m}" -> "{t}";')
    print('}')
