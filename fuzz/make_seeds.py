#!/usr/bin/env python3
"""Cuts the fuzz seed corpus out of the golden fixtures (tests/fixtures/pgoutput/*.bin).

fuzz/corpus/walsender/: single CopyData frames ('w' and 'k'), one of each
pgoutput tag per fixture (large frames skipped).
fuzz/corpus/pgoutput/: fuzz_pgoutput's input format -- Byte1 setup
(proto_version-1 in bits 0-1), then Int16 length + payload per message --
holding the first frames of each fixture, so seeds carry stream state.
Run from the repository root: python3 fuzz/make_seeds.py
"""
import os
import struct
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
fixtures = os.path.join(root, "tests", "fixtures", "pgoutput")
out_w = os.path.join(root, "fuzz", "corpus", "walsender")
out_p = os.path.join(root, "fuzz", "corpus", "pgoutput")
os.makedirs(out_w, exist_ok=True)
os.makedirs(out_p, exist_ok=True)

def frames(path):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        yield data[pos + 4:pos + 4 + n]
        pos += 4 + n

for name in sorted(os.listdir(fixtures)):
    if not name.endswith(".bin"):
        continue
    stem = name[:-4]
    version = int(stem[1]) if stem.startswith("v") else 1
    seen = set()
    seq = bytearray([version - 1])
    count = 0
    for f in frames(os.path.join(fixtures, name)):
        if len(f) > 4096:
            continue
        key = f[:1] if f[:1] == b"k" else f[25:26]
        if key not in seen:
            seen.add(key)
            tag = "k" if key == b"k" else "w_" + (hex(key[0]) if key else "empty")
            open(os.path.join(out_w, f"{stem}_{tag}"), "wb").write(f)
        if f[:1] == b"w" and count < 40:
            payload = f[25:]
            seq += struct.pack(">H", len(payload)) + payload
            count += 1
    open(os.path.join(out_p, stem), "wb").write(bytes(seq))
print("seeds:", len(os.listdir(out_w)), "walsender,", len(os.listdir(out_p)), "pgoutput", file=sys.stderr)
