#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (called by seed.sh; nothing here is committed).

usage: make_seeds.py LIBRARY CORPUS_DIR

LIBRARY is a built plugin library (target/debug/libecho_runtime.so). Its embedded manifest is
read out and used in:

  corpus/manifest/         the real 8 KiB region and hand-made variants of it (cut, oversized,
                           bad magic or format, escapes, every capability spelling)
  corpus/library_scanner/  the real library (whole, and cut at several points) plus small
                           hand-built libraries that carry the same manifest, in each format the
                           loader reads: ELF (64-bit LE, 32-bit BE), PE (PE32+, PE32) and
                           Mach-O (64-bit LE, 32-bit BE), and variants of those without the
                           symbol, with a broken manifest, or cut short.

The small libraries matter: libFuzzer mutates inputs of at most -max_len bytes, and the real
library is tens of MiB, so without them the fuzzer would rarely get past the headers.
"""

import hashlib
import json
import os
import struct
import sys

MAGIC = b"agent-runtimes\x00\x01"
EMBED_SIZE = 8 * 1024
HEADER_LEN = 20
MAX_JSON_LEN = EMBED_SIZE - HEADER_LEN
SYMBOL = b"AGENT_RUNTIMES_MANIFEST"


def manifest_region(lib):
    at = 0
    while True:
        at = lib.find(MAGIC, at)
        if at < 0:
            sys.exit("no embedded manifest found in the library")
        if lib[at + HEADER_LEN : at + HEADER_LEN + 1] == b"{":
            return lib[at : at + EMBED_SIZE]
        at += 1


def embed(doc):
    body = doc if isinstance(doc, bytes) else json.dumps(doc, separators=(",", ":")).encode()
    out = MAGIC + struct.pack("<I", len(body)) + body
    return out + b"\x00" * (EMBED_SIZE - len(out))


def with_len(region, declared):
    return region[:16] + struct.pack("<I", declared) + region[20:]


def align(n, a):
    return (n + a - 1) // a * a


def pad_to(buf, n):
    assert len(buf) <= n, (len(buf), n)
    return buf + b"\x00" * (n - len(buf))


# ---------------------------------------------------------------------------------------------
# ELF: header, .dynsym, .dynstr, .rodata (the manifest), .shstrtab, section headers.


def elf(manifest, bits=64, big=False, symbol=SYMBOL):
    e = ">" if big else "<"
    w = "Q" if bits == 64 else "I"
    ehsize, shentsize, symsize = (64, 64, 24) if bits == 64 else (52, 40, 16)
    base = 0x10000
    dynsym_off = ehsize
    dynstr = b"\x00" + symbol + b"\x00"
    dynstr_off = dynsym_off + 2 * symsize
    rodata_off = align(dynstr_off + len(dynstr), 64)
    shstrtab = b"\x00.dynsym\x00.dynstr\x00.rodata\x00.shstrtab\x00"
    names = {n: shstrtab.index(n) for n in (b".dynsym", b".dynstr", b".rodata", b".shstrtab")}
    shstrtab_off = rodata_off + len(manifest)
    shoff = align(shstrtab_off + len(shstrtab), 8)

    if bits == 64:
        sym = lambda name, info, shndx, value, size: struct.pack(
            e + "IBBHQQ", name, info, 0, shndx, value, size
        )
    else:
        sym = lambda name, info, shndx, value, size: struct.pack(
            e + "IIIBBH", name, value, size, info, 0, shndx
        )
    dynsym = sym(0, 0, 0, 0, 0) + sym(1, 0x11, 3, base + rodata_off, len(manifest))

    def sh(name, kind, flags, addr, off, size, link=0, info=0, addralign=1, entsize=0):
        return struct.pack(
            e + "II" + w + w + w + w + "II" + w + w,
            name, kind, flags, addr, off, size, link, info, addralign, entsize,
        )

    sections = [
        sh(0, 0, 0, 0, 0, 0),
        sh(names[b".dynsym"], 11, 2, base + dynsym_off, dynsym_off, len(dynsym),
           link=2, info=1, addralign=8, entsize=symsize),
        sh(names[b".dynstr"], 3, 2, base + dynstr_off, dynstr_off, len(dynstr)),
        sh(names[b".rodata"], 1, 2, base + rodata_off, rodata_off, len(manifest), addralign=64),
        sh(names[b".shstrtab"], 3, 0, 0, shstrtab_off, len(shstrtab)),
    ]
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 2 if big else 1, 1, 0]) + b"\x00" * 8
    machine = 62 if bits == 64 else 20  # x86-64, PowerPC
    header = ident + struct.pack(
        e + "HHI" + w + w + w + "IHHHHHH",
        3, machine, 1, 0, 0, shoff, 0, ehsize, 0, 0, shentsize, len(sections), 4,
    )
    out = pad_to(header + dynsym + dynstr, rodata_off) + manifest + shstrtab
    return pad_to(out, shoff) + b"".join(sections)


# ---------------------------------------------------------------------------------------------
# PE: DOS stub, NT headers, one .rdata section holding the export directory and the manifest.


def pe(manifest, plus=True, symbol=SYMBOL):
    image_base = 0x180000000 if plus else 0x10000000
    file_align, sect_align = 0x200, 0x1000
    rva = 0x1000
    dll_name = b"echo_runtime.dll\x00"
    # Export directory (40) | address table (4) | name pointers (4) | ordinals (2) | names.
    eat = rva + 40
    npt = eat + 4
    ot = npt + 4
    sym_name = ot + 2
    dll = sym_name + len(symbol) + 1
    export_size = dll + len(dll_name) - rva
    manifest_rva = align(rva + export_size, 16)
    export = struct.pack("<IIHHIIIIIII", 0, 0, 0, 0, dll, 1, 1, 1, eat, npt, ot)
    export += struct.pack("<I", manifest_rva) + struct.pack("<I", sym_name) + struct.pack("<H", 0)
    export += symbol + b"\x00" + dll_name
    data = pad_to(export, manifest_rva - rva) + manifest
    raw_size = align(len(data), file_align)
    headers_size = file_align

    dirs = [(0, 0)] * 16
    dirs[0] = (rva, export_size)
    opt = struct.pack("<HBBIIIII", 0x20B if plus else 0x10B, 14, 0, 0, raw_size, 0, 0, 0)
    if plus:
        opt += struct.pack("<Q", image_base)
    else:
        opt += struct.pack("<II", rva, image_base)  # BaseOfData, ImageBase
    size_of_image = rva + align(len(data), sect_align)
    opt += struct.pack("<IIHHHHHHIIIIHH", sect_align, file_align, 6, 0, 0, 0, 6, 0, 0,
                       size_of_image, headers_size, 0, 2, 0x160)
    stack = "QQQQ" if plus else "IIII"
    opt += struct.pack("<" + stack + "II", 0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    opt += b"".join(struct.pack("<II", a, s) for a, s in dirs)

    machine = 0x8664 if plus else 0x14C
    characteristics = 0x2002 | (0x20 if plus else 0x100)  # DLL | EXECUTABLE_IMAGE | ...
    coff = struct.pack("<HHIIIHH", machine, 1, 0, 0, 0, len(opt), characteristics)
    section = struct.pack("<8sIIIIIIHHI", b".rdata", len(data), rva, raw_size, headers_size,
                          0, 0, 0, 0, 0x40000040)
    dos = pad_to(b"MZ", 0x3C) + struct.pack("<I", 0x40)
    headers = dos + b"PE\x00\x00" + coff + opt + section
    return pad_to(headers, headers_size) + pad_to(data, raw_size)


# ---------------------------------------------------------------------------------------------
# Mach-O: header, one segment with a __const section (the manifest), LC_SYMTAB, LC_DYSYMTAB.


def macho(manifest, bits=64, big=False, symbol=SYMBOL):
    e = ">" if big else "<"
    if bits == 64:
        magic, cpu, sub = 0xFEEDFACF, 0x01000007, 3
        hdr_size, seg_cmd, seg_size, sect_size, nlist_size = 32, 0x19, 72, 80, 16
    else:
        magic, cpu, sub = 0xFEEDFACE, 18, 0  # PowerPC
        hdr_size, seg_cmd, seg_size, sect_size, nlist_size = 28, 0x1, 56, 68, 12
    seg_cmdsize = seg_size + sect_size
    cmds_size = seg_cmdsize + 24 + 80
    data_off = align(hdr_size + cmds_size, 16)
    symoff = data_off + len(manifest)
    strtab = b"\x00_" + symbol + b"\x00"
    stroff = symoff + nlist_size
    end = stroff + len(strtab)
    w = "Q" if bits == 64 else "I"

    header = struct.pack(e + "IiiIIII", magic, cpu, sub, 6, 3, cmds_size, 0)
    if bits == 64:
        header += struct.pack(e + "I", 0)
    segment = struct.pack(e + "II16s" + w * 4 + "iiII", seg_cmd, seg_cmdsize, b"__TEXT",
                          0, align(end, 0x1000), 0, end, 5, 5, 1, 0)
    section = struct.pack(e + "16s16s" + w + w + "IIIIIII", b"__const", b"__TEXT",
                          data_off, len(manifest), data_off, 4, 0, 0, 0, 0, 0)
    if bits == 64:
        section += struct.pack(e + "I", 0)
    symtab = struct.pack(e + "IIIIII", 0x2, 24, symoff, 1, stroff, len(strtab))
    dysymtab = struct.pack(e + "II" + "I" * 18, 0xB, 80, 0, 0, 0, 1, 1, 0, *([0] * 12))
    nlist = struct.pack(e + "IBBH" + w, 1, 0x0F, 1, 0, data_off)
    out = pad_to(header + segment + section + symtab + dysymtab, data_off)
    return out + manifest + nlist + strtab


# ---------------------------------------------------------------------------------------------


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    lib = open(sys.argv[1], "rb").read()
    corpus = sys.argv[2]
    region = manifest_region(lib)
    declared = struct.unpack("<I", region[16:20])[0]
    doc = json.loads(region[20 : 20 + declared])

    written = {"manifest": 0, "library_scanner": 0}

    def write(target, name, data):
        folder = os.path.join(corpus, target)
        os.makedirs(folder, exist_ok=True)
        digest = hashlib.sha1(data).hexdigest()[:12]
        with open(os.path.join(folder, f"{name}-{digest}"), "wb") as f:
            f.write(data)
        written[target] += 1

    # --- manifest ------------------------------------------------------------------------
    variants = {
        "real": region,
        "real-json-only": region[: 20 + declared],
        "cut-header": region[:19],
        "cut-json": region[: 20 + declared // 2],
        "declared-max": with_len(region, MAX_JSON_LEN),
        "declared-max-plus-one": with_len(region, MAX_JSON_LEN + 1),
        "declared-u32-max": with_len(region, 0xFFFFFFFF),
        "bad-magic": b"X" + region[1:],
        "format-2": region[:15] + b"\x02" + region[16:],
        "empty-json": embed(b""),
        "not-json": embed(b"{not json"),
        "wrong-shape": embed({"api_version": 3}),
        "no-runtimes": embed({**doc, "runtimes": []}),
    }
    tricky = dict(doc)
    tricky["runtimes"] = [
        {
            "id": "a",
            "display_name": "quote \" backslash \\ control \u0001\u001f del \u007f",
            "description": "h\u00e9llo \u2014 \U0001F600 \u2028 \ufeff",
            "aliases": ["b", "c.d", "e_f-g"],
            "capabilities": ["streaming", "tools", "cancellation", "history", "thinking",
                             "config_validation", "bit6", "bit63"],
        },
        {"id": "h", "display_name": "", "description": "", "aliases": [],
         "capabilities": ["bit0", "bit05", "bit+5"]},
    ]
    variants["tricky"] = embed(tricky)
    escaped = json.dumps(tricky, ensure_ascii=True, indent=1).encode()
    variants["tricky-ascii-indented"] = embed(escaped)
    for name, data in variants.items():
        write("manifest", name, data)

    # --- library_scanner -----------------------------------------------------------------
    write("library_scanner", "real-library", lib)
    for cut in (0, 16, 64, 4096, 65536, len(lib) // 2, len(lib) - 1):
        write("library_scanner", f"real-library-cut-{cut}", lib[:cut])
    small = {
        "elf64le": lambda m, s=SYMBOL: elf(m, 64, False, s),
        "elf32be": lambda m, s=SYMBOL: elf(m, 32, True, s),
        "pe32plus": lambda m, s=SYMBOL: pe(m, True, s),
        "pe32": lambda m, s=SYMBOL: pe(m, False, s),
        "macho64le": lambda m, s=SYMBOL: macho(m, 64, False, s),
        "macho32be": lambda m, s=SYMBOL: macho(m, 32, True, s),
    }
    for fmt, build in small.items():
        good = build(region)
        write("library_scanner", f"{fmt}", good)
        write("library_scanner", f"{fmt}-tricky", build(variants["tricky"]))
        write("library_scanner", f"{fmt}-no-symbol", build(region, b"SOME_OTHER_SYMBOL_NAME_"))
        write("library_scanner", f"{fmt}-oversized", build(variants["declared-u32-max"]))
        write("library_scanner", f"{fmt}-not-json", build(variants["not-json"]))
        for cut in (len(good) // 4, len(good) // 2, len(good) - 1):
            write("library_scanner", f"{fmt}-cut-{cut}", good[:cut])

    for target, count in written.items():
        print(f"{target}: {count} seeds")


if __name__ == "__main__":
    main()
