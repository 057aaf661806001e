#!/usr/bin/env python3
"""The first bytes of every function a shared library exports: a corpus for diff_prologues.

  prologues.py [-n BYTES] [-o FILE] [--system] [--run PROGRAM [ARG...]] [LIBRARY...]

For each function symbol of each LIBRARY (nm -D --defined-only: types T, t, W, w and i),
the first BYTES (default 16) bytes of its code, read from the file at the symbol's offset
(the executable PT_LOAD segment that holds it). One line per distinct window:

  HEX-BYTES ADDRESS LIBRARY:SYMBOL

Windows are deduplicated here; diff_prologues decodes them and deduplicates instructions.
With no LIBRARY, the C library this interpreter runs on; --system adds libm, libstdc++,
libz, libssl and libcrypto from the same directory, where they exist. --run pipes the
corpus to PROGRAM (and any ARGs after it) and exits with its status.
"""
import glob
import os
import struct
import subprocess
import sys

FUNC_TYPES = set("TtWwi")
SYSTEM_LIBS = ["libm.so.6", "libstdc++.so.6", "libz.so.1", "libssl.so.*", "libcrypto.so.*"]


def running_libc():
    """The path of the libc.so.6 mapped into this process."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if os.path.basename(path).startswith("libc.so"):
                return os.path.realpath(path)
    sys.exit("prologues.py: no libc.so in /proc/self/maps")


def exec_segments(data):
    """(vaddr, offset, filesz) of the executable PT_LOAD segments of a 64-bit ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    segs = []
    for i in range(phnum):
        p_type, p_flags, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1 and p_flags & 1:  # PT_LOAD, PF_X
            segs.append((p_vaddr, p_offset, p_filesz))
    return segs


def windows(lib, nbytes):
    """(bytes, vaddr, name) for every function symbol of lib."""
    with open(lib, "rb") as f:
        data = f.read()
    segs = exec_segments(data)
    try:
        out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                             capture_output=True, text=True).stdout
    except FileNotFoundError:
        print("prologues.py: no nm (binutils), skipped")
        sys.exit(77)  # meson's "skipped"
    base = os.path.basename(lib)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[1] not in FUNC_TYPES:
            continue
        vaddr = int(parts[0], 16)
        for s_vaddr, s_off, s_size in segs:
            if s_vaddr <= vaddr < s_vaddr + s_size:
                off = vaddr - s_vaddr + s_off
                end = min(off + nbytes, s_off + s_size)
                yield data[off:end], vaddr, "%s:%s" % (base, parts[2])
                break


def main():
    args = sys.argv[1:]
    nbytes, out, run, libs, system = 16, None, None, [], False
    while args:
        a = args.pop(0)
        if a == "-n":
            nbytes = int(args.pop(0))
        elif a == "-o":
            out = args.pop(0)
        elif a == "--system":
            system = True
        elif a == "--run":
            run, args = args, []
        elif a.startswith("-"):
            sys.exit(__doc__)
        else:
            libs.append(a)
    if not libs or system:
        libc = running_libc()
        libs = libs or [libc]
        if system:
            d = os.path.dirname(libc)
            for pattern in SYSTEM_LIBS:
                found = sorted(glob.glob(os.path.join(d, pattern)))
                if found:
                    libs.append(os.path.realpath(found[0]))

    lines, seen, functions = [], set(), 0
    for lib in libs:
        for code, vaddr, name in windows(lib, nbytes):
            functions += 1
            if code and code not in seen:
                seen.add(code)
                lines.append("%s %x %s\n" % (code.hex(), vaddr, name))
    sys.stderr.write("prologues.py: %d functions in %s, %d distinct windows\n" %
                     (functions, ", ".join(os.path.basename(l) for l in libs), len(lines)))
    text = "".join(lines)
    if run:
        sys.stdout.flush()
        sys.exit(subprocess.run(run, input=text, text=True).returncode)
    if out:
        with open(out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
