#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the small IDX fixtures of tests/data/idx with Python's own gzip and struct (independent
# of vitmae's reader): 5 images of 3 rows x 4 columns, pixel (i, r, c) = (17*i + 5*r + c) % 256,
# labels 2 0 1 2 1; plus a gzip file with a wrong magic number and one with a truncated body.
import gzip, os, struct

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "idx")
os.makedirs(out, exist_ok=True)
n, rows, cols = 5, 3, 4
pixels = bytes((17 * i + 5 * r + c) % 256 for i in range(n) for r in range(rows) for c in range(cols))
images = struct.pack(">IIII", 0x803, n, rows, cols) + pixels
labels = struct.pack(">II", 0x801, n) + bytes([2, 0, 1, 2, 1])
def gz(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(gzip.compress(data, mtime=0))
gz("images-idx3-ubyte.gz", images)
gz("labels-idx1-ubyte.gz", labels)
with open(os.path.join(out, "labels-idx1-ubyte"), "wb") as f:  # the same labels, not compressed
    f.write(labels)
gz("bad-magic-idx3-ubyte.gz", struct.pack(">IIII", 0x801, n, rows, cols) + pixels)
gz("truncated-idx3-ubyte.gz", images[:-7])
full = gzip.compress(images, mtime=0)
with open(os.path.join(out, "cut-gzip-idx3-ubyte.gz"), "wb") as f:  # the gzip stream itself cut short
    f.write(full[: len(full) // 2])
