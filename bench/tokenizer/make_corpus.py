#!/usr/bin/env python3
"""bench/tokenizer/make_corpus.py OUT [MIB] — writes a deterministic mixed prose + code text
(~10 MiB by default) from files every Debian machine here has: half prose (common licenses,
package copyright files and docs), half C headers (/usr/include), plus the multilingual texts
of the tokenizer test vectors. Files are taken in sorted path order and cut at whole files;
only valid UTF-8 files are used (both tokenizers then see identical text)."""
import json
import os
import sys

out, mib = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
half = int(mib * (1 << 20) / 2)


def files(roots, keep):
    for root in roots:
        for d, dirs, names in os.walk(root):
            dirs.sort()
            for n in sorted(names):
                p = os.path.join(d, n)
                if keep(n) and os.path.isfile(p) and not os.path.islink(p):
                    yield p


def take(paths, budget):
    parts, used = [], 0
    for p in paths:
        try:
            b = open(p, 'rb').read()
            b.decode('utf-8')
        except (OSError, UnicodeDecodeError):
            continue
        if not b or used + len(b) > budget:
            continue
        parts.append(b)
        used += len(b)
        if used > budget * 0.995:
            break
    return parts


prose = take(files(['/usr/share/common-licenses', '/usr/share/doc'],
                   lambda n: n in ('copyright', 'README', 'NEWS', 'AUTHORS') or n.endswith(('.txt', '.md'))
                   or '.' not in n), half)
code = take(files(['/usr/include'], lambda n: n.endswith('.h')), half)
vec = os.path.join(os.path.dirname(os.path.abspath(__file__)), '../../../shared/testdata/tokenizer/tokenizer_vectors.jsonl')
multi = b''
if os.path.exists(vec):
    multi = '\n'.join(json.loads(l)['text'] for l in open(vec, encoding='utf-8')).encode('utf-8')
# Interleave so neither kind of text sits only at one end.
body = []
for i in range(max(len(prose), len(code))):
    if i < len(prose):
        body.append(prose[i])
    if i < len(code):
        body.append(code[i])
    if i % 50 == 0 and multi:
        body.append(multi)
data = b'\n'.join(body)
open(out, 'wb').write(data)
print(f'{out}: {len(data)} bytes ({len(prose)} prose files, {len(code)} headers)')
