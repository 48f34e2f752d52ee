#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Independent PNG decoder (standard library only: zlib + the PNG filters) that prints, per file,
width, height, stored channels and an FNV-1a 64 digest of the pixels expanded to 8-bit RGB(A)
as stb_image returns them. The image tests compare stb's decode against these figures.

usage: png_digest.py FILE.png ...
"""
import struct
import sys
import zlib


def decode(path):
    b = open(path, "rb").read()
    assert b[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, plte, trns = 8, b"", None, None
    while pos < len(b):
        n, kind = struct.unpack(">I4s", b[pos:pos + 8])
        data = b[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data)
        elif kind == b"PLTE":
            plte = data
        elif kind == b"tRNS":
            trns = data
        elif kind == b"IDAT":
            idat += data
    assert depth == 8 and interlace == 0, "only 8-bit, non-interlaced"
    spp = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(idat)
    stride = w * spp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - spp] if i >= spp else 0
            up = prev[i]
            c = prev[i - spp] if i >= spp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + up) & 255
            elif f == 3: line[i] = (line[i] + (a + up) // 2) & 255
            elif f == 4:
                p = a + up - c
                pa, pb, pc = abs(p - a), abs(p - up), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (up if pb <= pc else c)
                line[i] = (line[i] + pr) & 255
        rows.append(bytes(line))
        prev = line
    pixels = b"".join(rows)
    if ctype == 3:  # palette -> RGB, or RGBA when tRNS is present (stb's expansion)
        out = bytearray()
        for idx in pixels:
            out += plte[3 * idx:3 * idx + 3]
            if trns is not None:
                out.append(trns[idx] if idx < len(trns) else 255)
        pixels, spp = bytes(out), (4 if trns is not None else 3)
    return w, h, spp, pixels


def fnv1a64(data):
    hsh = 0xcbf29ce484222325
    for x in data:
        hsh = ((hsh ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return hsh


for path in sys.argv[1:]:
    w, h, c, px = decode(path)
    print('{"%s", %d, %d, %d, 0x%016xULL},' % (path.split("/")[-1], w, h, c, fnv1a64(px)))
