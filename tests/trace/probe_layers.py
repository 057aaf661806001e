#!/usr/bin/env python3
"""The probe engine's shape (src/probe): no include cycle among its files, and no call back
up. engine.h lists the engine's files from the top of the call graph down and groups its
declarations under the name of the defining file; a function of file F may be called only
from F itself or from a file listed above F."""
import re
import sys
from pathlib import Path

root = Path(sys.argv[1])
files = sorted(p for p in root.rglob('*') if p.suffix in ('.c', '.h'))
errors = []

# Include graph (quoted includes, resolved relative to the including file).
graph = {}
for f in files:
    deps = []
    for inc in re.findall(r'^#include "([^"]+)"', f.read_text(), re.M):
        target = (f.parent / inc).resolve()
        if target.exists():
            deps.append(target)
    graph[f.resolve()] = deps
state = {}
def visit(node, stack):
    state[node] = 'open'
    for d in graph.get(node, []):
        if state.get(d) == 'open':
            errors.append('include cycle: ' + ' -> '.join(str(p.relative_to(root.resolve())) for p in stack + [node, d]))
        elif d not in state:
            visit(d, stack + [node])
    state[node] = 'done'
for node in graph:
    if node not in state:
        visit(node, [])

# Layers: the order of the file list at the top of engine.h.
engine = (root / 'engine.h').read_text()
order = re.findall(r'^ \*   (\w+\.c)\s', engine, re.M)
rank = {name: i for i, name in enumerate(order)}
owner = {}
section = None
for line in engine.splitlines():
    m = re.match(r'/\* (\w+\.c)\b', line)
    if m:
        section = m.group(1)
        continue
    m = re.match(r'^(?:[\w ]+?[\s*])(\w+)\(', line)
    if section and m and not line.startswith((' ', '\t', '#')):
        owner[m.group(1)] = section
for name in order:
    path = root / name
    if not path.exists():
        errors.append(f'engine.h lists {name}, which does not exist')
        continue
    text = re.sub(r'/\*.*?\*/', '', path.read_text(), flags=re.S)
    for fn, defining in owner.items():
        if defining != name and re.search(r'\b' + fn + r'\s*\(', text) and rank[defining] < rank[name]:
            errors.append(f'{name} calls {fn} of {defining}, a file above it')
for c in root.glob('*.c'):
    if c.name not in rank and c.name not in ('probe_spec.c', 'err.c'):
        errors.append(f'{c.name} is not placed in engine.h\'s list of files')

for e in errors:
    print(e)
print(f'{len(graph)} files, {len(owner)} engine functions in {len(order)} layers: '
      + ('ok' if not errors else f'{len(errors)} problems'))
sys.exit(1 if errors else 0)
