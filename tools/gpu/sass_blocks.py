#!/usr/bin/env python3
"""Loops of each kernel in a cuobjdump -sass listing: for every backward branch (a loop from its
target to the branch), the instruction count and the MUFU, HGMMA, LDS, STL/LDL (spill) counts in
that range, plus the whole function's totals. Spills inside the softmax loops are the costly ones.
   cuobjdump -sass x.o | python3 tools/gpu/sass_blocks.py [function-substring]"""
import re, sys
want = sys.argv[1] if len(sys.argv) > 1 else ''
funcs, fn = {}, None
for line in sys.stdin:
    m = re.search(r'Function : (\S+)', line)
    if m:
        fn = m.group(1); funcs[fn] = []
        continue
    m = re.search(r'/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*)', line)
    if m and fn:
        funcs[fn].append((int(m.group(1), 16), m.group(3), m.group(4)))
KEYS = ('MUFU', 'HGMMA', 'LDS', 'STL', 'LDL', 'BAR', 'WARPGROUP')
def count(ins):
    c = dict.fromkeys(KEYS, 0)
    for _, op, _ in ins:
        for k in KEYS:
            if op.startswith(k): c[k] += 1
    return c
for fn, ins in funcs.items():
    if want not in fn: continue
    print('==', fn[-80:], 'total', len(ins), count(ins))
    for i, (addr, op, rest) in enumerate(ins):
        if op.startswith('BRA'):
            m = re.search(r'0x([0-9a-f]+)', rest)
            if m and int(m.group(1), 16) < addr:
                t = int(m.group(1), 16)
                body = [x for x in ins if t <= x[0] <= addr]
                c = count(body)
                if c['MUFU'] or c['HGMMA'] or c['STL'] or c['LDL']:
                    print('  loop %#x-%#x n=%d %s' % (t, addr, len(body), c))
