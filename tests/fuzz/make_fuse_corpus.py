#!/usr/bin/env python3
"""Writes the seed corpus of fuse_codec_fuzz: one well-formed request per opcode, in both shapes
(/dev/fuse message and io_uring entry; see fuse_codec_fuzz.cc), plus a few broken ones.

Usage: make_fuse_corpus.py OUTPUT-DIR
"""
import os
import struct
import sys

# opcode -> (name, first argument bytes, payload bytes)
def seeds():
    z = lambda n: bytes(n)
    read_in = struct.pack("<QQIIQII", 0, 8192, 4096, 0, 0, 0, 0)
    write_in = struct.pack("<QQIIQII", 0, 4096, 5, 0, 0, 0, 0)
    setattr_in = struct.pack("<IIQQQQQQIIIIIIII", 8, 0, 0, 1 << 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    init_in = struct.pack("<IIII", 7, 44, 131072, 0x40000000 | 1) + struct.pack("<I", 1 << 9) + z(44)
    return [
        ("init", 26, init_in, b""),
        ("init-old", 26, init_in[:16], b""),
        ("destroy", 38, b"", b""),
        ("lookup", 1, b"", b"disk\0"),
        ("forget", 2, struct.pack("<Q", 1), b""),
        ("batch-forget", 42, struct.pack("<II", 2, 0), struct.pack("<QQQQ", 1, 1, 1, 2)),
        ("getattr", 3, struct.pack("<IIQ", 1, 0, 7), b""),
        ("setattr", 4, setattr_in, b""),
        ("access", 34, struct.pack("<II", 4, 0), b""),
        ("open", 14, struct.pack("<II", 0o40002, 0), b""),
        ("opendir", 27, struct.pack("<II", 0, 0), b""),
        ("read", 15, read_in, b""),
        ("readdir", 28, read_in, b""),
        ("write", 16, write_in, b"hello"),
        ("release", 18, struct.pack("<QIIQ", 0, 0, 0, 0), b""),
        ("flush", 25, struct.pack("<QIIQ", 0, 0, 0, 0), b""),
        ("fsync", 20, struct.pack("<QII", 0, 1, 0), b""),
        ("statfs", 17, b"", b""),
        ("syncfs", 50, z(8), b""),
        ("fallocate", 43, struct.pack("<QQQII", 0, 0, 4096, 3, 0), b""),
        ("lseek", 46, struct.pack("<QQII", 0, 0, 3, 0), b""),
        ("interrupt", 36, struct.pack("<Q", 5), b""),
        ("getxattr", 22, struct.pack("<II", 64, 0), b"user.x\0"),
        ("listxattr", 23, struct.pack("<II", 0, 0), b""),
        ("setxattr", 21, struct.pack("<II", 3, 0), b"user.x\0abc"),
        ("removexattr", 24, b"", b"user.x\0"),
        ("getlk", 31, z(48), b""),
        ("setlkw", 33, z(48), b""),
        ("bmap", 37, struct.pack("<QII", 1, 4096, 0), b""),
        ("ioctl", 39, struct.pack("<QIIQII", 0, 0, 0x1234, 0, 2, 0), b"ab"),
        ("poll", 40, z(24), b""),
        ("copy-file-range", 47, z(56), b""),
        ("copy-file-range-64", 53, z(56), b""),
        ("statx", 52, z(24), b""),
        ("mkdir", 9, struct.pack("<II", 0o755, 0), b"d\0"),
        ("notify-reply", 41, z(40), b"data"),
        ("unknown", 99, b"", b"x"),
        ("write-short", 16, write_in, b"hell"),
        ("lookup-unterminated", 1, b"", b"disk"),
    ]


def header(opcode, body_len, extlen=0):
    return struct.pack("<IIQQIIIHH", 40 + body_len, opcode, 42, 1, 1000, 1000, 77, extlen, 0)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, opcode, arg, payload in seeds():
        msg = header(opcode, len(arg) + len(payload)) + arg + payload
        with open(os.path.join(out, f"dev-{name}"), "wb") as f:
            f.write(bytes([0]) + msg)
        ring = header(opcode, len(arg) + len(payload)) + bytes([len(arg)]) + arg + payload
        with open(os.path.join(out, f"ring-{name}"), "wb") as f:
            f.write(bytes([1]) + ring)
    with open(os.path.join(out, "dev-short-header"), "wb") as f:
        f.write(bytes([0]) + header(15, 0)[:30])


if __name__ == "__main__":
    main()
