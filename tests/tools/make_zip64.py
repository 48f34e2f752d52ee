#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Rewrites a stored zip (a torch.save checkpoint) with every size and offset in zip64 records,
as torch.save does for files over 4 GiB, so the zip64 path is tested on a small file.

usage: make_zip64.py IN.bin OUT.bin   (standard library only)
"""
import struct
import sys
import zipfile
import zlib

src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as z:
    entries = [(i.filename, z.read(i.filename)) for i in z.infolist()]

out = bytearray()
central = bytearray()
M = 0xFFFFFFFF
for name, data in entries:
    n = name.encode()
    crc = zlib.crc32(data)
    offset = len(out)
    extra = struct.pack("<HHQQ", 0x0001, 16, len(data), len(data))
    out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, M, M, len(n), len(extra)) + n + extra + data
    cextra = struct.pack("<HHQQQ", 0x0001, 24, len(data), len(data), offset)
    central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, M, M, len(n), len(cextra),
                           0, 0, 0, 0, M) + n + cextra
cd_offset = len(out)
out += central
z64 = len(out)
out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries), len(central), cd_offset)
out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, M, M, 0)
open(dst, "wb").write(out)
