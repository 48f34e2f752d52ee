#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Cuts the bundled Fashion-MNIST pieces out of Debian's dataset-fashion-mnist (MIT, Zalando SE):
tests/data/fashion-mnist/t1k-{images-idx3,labels-idx1}-ubyte.gz, the first 1,000 test images
(the shipped classifier's test), and examples/fashion-mnist/images/, the first test image of every
class as a grey PNG. Python's standard library only.

    python3 tests/tools/make_fashion_mnist_subset.py [/usr/share/datasets/fashion-mnist]
"""
import gzip, os, struct, sys, zlib

src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
img = gzip.open(os.path.join(src, "t10k-images-idx3-ubyte.gz")).read()
lab = gzip.open(os.path.join(src, "t10k-labels-idx1-ubyte.gz")).read()
magic, n, rows, cols = struct.unpack(">IIII", img[:16])
assert magic == 2051 and struct.unpack(">II", lab[:8]) == (2049, n)
k = 1000
out = os.path.join(root, "tests", "data", "fashion-mnist")
os.makedirs(out, exist_ok=True)
# mtime 0: the same bytes on every run
with open(os.path.join(out, "t1k-images-idx3-ubyte.gz"), "wb") as f:
    f.write(gzip.compress(struct.pack(">IIII", 2051, k, rows, cols) + img[16:16 + k * rows * cols], 9, mtime=0))
with open(os.path.join(out, "t1k-labels-idx1-ubyte.gz"), "wb") as f:
    f.write(gzip.compress(struct.pack(">II", 2049, k) + lab[8:8 + k], 9, mtime=0))


def png(path, w, h, pixels):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + pixels[r * w:(r + 1) * w] for r in range(h))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


images = os.path.join(root, "examples", "fashion-mnist", "images")
os.makedirs(images, exist_ok=True)
for c, name in enumerate(classes):
    i = next(i for i in range(n) if lab[8 + i] == c)
    slug = name.lower().replace("/", "-").replace(" ", "-")
    png(os.path.join(images, f"{c}-{slug}.png"), cols, rows, img[16 + i * rows * cols:16 + (i + 1) * rows * cols])
    print(f"{c}-{slug}.png: test image {i}")
