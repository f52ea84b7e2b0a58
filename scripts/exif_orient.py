#!/usr/bin/env python3
"""Write (or read back) the EXIF Orientation tag (0x0112) of a JPEG or PNG, with the Python standard library only.

    exif_orient.py write IN OUT N [--big-endian|--little-endian]
        Copies IN (a JPEG or PNG, told by its first bytes) to OUT with a minimal EXIF block that holds only
        Orientation = N (1..8): a JPEG gets an APP1 "Exif" segment (after the JFIF APP0 segment when there is
        one, else right after SOI), a PNG an eXIf chunk before its first IDAT. Any EXIF already there is dropped.
        The EXIF is one TIFF header and IFD0 with Orientation (tag 0x0112, SHORT) and the few tags the EXIF
        spec requires there (resolution; YCbCrPositioning for a JPEG); big-endian ("MM", the default) or
        little-endian ("II").
    exif_orient.py read FILE
        Prints the Orientation tag of FILE (a JPEG or PNG), or "none" when it has no EXIF orientation.

What orientation N means (the EXIF/TIFF spec): the stored pixels are displayed after this transform.
    1 none                     5 transpose (mirror along the top-left to bottom-right diagonal)
    2 mirror horizontally      6 rotate 90 degrees clockwise
    3 rotate 180               7 transverse (mirror along the top-right to bottom-left diagonal)
    4 mirror vertically        8 rotate 270 degrees clockwise (90 counter-clockwise)
A camera stores the pixels transformed by the inverse, so that a viewer that applies the tag shows the upright
scene: 1-5 and 7 are their own inverses; 6 stores the scene rotated 90 degrees counter-clockwise, 8 stores it
rotated 90 degrees clockwise.
"""
import struct
import sys
import zlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiff_with_orientation(n: int, big_endian: bool, jpeg: bool) -> bytes:
    """A TIFF header and IFD0: Orientation plus the tags EXIF requires in IFD0 (72 dpi; for a JPEG also
    YCbCrPositioning = centred), so that exiftool -validate finds nothing to warn about."""
    e = ">" if big_endian else "<"
    header = (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8)
    entries = [(0x0112, 3, n), (0x011A, 5, None), (0x011B, 5, None), (0x0128, 3, 2)]
    if jpeg:
        entries.append((0x0213, 3, 1))
    ifd_size = 2 + 12 * len(entries) + 4
    data_at = 8 + ifd_size  # the two RATIONALs (72/1) follow the IFD
    ifd = struct.pack(e + "H", len(entries))
    data = b""
    for tag, typ, value in entries:
        if typ == 3:  # SHORT, count 1: left-justified in the 4-byte value field
            ifd += struct.pack(e + "HHIHH", tag, typ, 1, value, 0)
        else:  # RATIONAL: 8 bytes, stored after the IFD
            ifd += struct.pack(e + "HHII", tag, typ, 1, data_at + len(data))
            data += struct.pack(e + "II", 72, 1)
    return header + ifd + struct.pack(e + "I", 0) + data


def parse_orientation(tiff: bytes):
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    e = ">" if tiff[:2] == b"MM" else "<"
    magic, ifd = struct.unpack(e + "HI", tiff[2:8])
    if magic != 42 or ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack(e + "H", tiff[ifd : ifd + 2])
    for i in range(count):
        at = ifd + 2 + 12 * i
        if at + 12 > len(tiff):
            return None
        tag, typ, cnt = struct.unpack(e + "HHI", tiff[at : at + 8])
        if tag == 0x0112 and typ == 3 and cnt >= 1:
            return struct.unpack(e + "H", tiff[at + 8 : at + 10])[0]
    return None


def jpeg_segments(data: bytes):
    """(marker, start, end) of each segment before the entropy-coded data (up to and including SOS)."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no SOI)")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        yield marker, pos, pos + 2 + length
        if marker == 0xDA:  # SOS: the image data follows
            return
        pos += 2 + length


def png_chunks(data: bytes):
    """(type, start, end) of each chunk."""
    if data[:8] != PNG_MAGIC:
        raise ValueError("not a PNG")
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        yield kind, pos, pos + 12 + length
        if kind == b"IEND":
            return
        pos += 12 + length


def write(src: str, dst: str, n: int, big_endian: bool) -> None:
    if not 1 <= n <= 8:
        raise SystemExit(f"exif_orient: orientation must be 1..8, not {n}")
    data = open(src, "rb").read()
    if data[:2] == b"\xff\xd8":
        tiff = tiff_with_orientation(n, big_endian, jpeg=True)
        segments = list(jpeg_segments(data))
        # Drop any APP1 Exif already there; insert ours after a leading JFIF APP0 (where exiftool puts it).
        keep = [s for s in segments if not (s[0] == 0xE1 and data[s[1] + 4 : s[1] + 10] == b"Exif\0\0")]
        payload = b"Exif\0\0" + tiff
        app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
        out = bytearray(b"\xff\xd8")
        inserted = False
        for i, (marker, start, end) in enumerate(keep):
            if not inserted and not (i == 0 and marker == 0xE0):
                out += app1
                inserted = True
            out += data[start:end]
        out += data[segments[-1][2] :]  # the entropy-coded data and EOI
    elif data[:8] == PNG_MAGIC:
        tiff = tiff_with_orientation(n, big_endian, jpeg=False)
        out = bytearray(PNG_MAGIC)
        chunk = b"eXIf" + tiff
        exif = struct.pack(">I", len(tiff)) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
        inserted = False
        for kind, start, end in png_chunks(data):
            if kind == b"eXIf":
                continue
            if kind == b"IDAT" and not inserted:
                out += exif
                inserted = True
            out += data[start:end]
        if not inserted:
            raise SystemExit(f"exif_orient: {src} has no IDAT chunk")
    else:
        raise SystemExit(f"exif_orient: {src} is neither a JPEG nor a PNG")
    with open(dst, "wb") as f:
        f.write(out)


def read(path: str):
    data = open(path, "rb").read()
    if data[:2] == b"\xff\xd8":
        for marker, start, end in jpeg_segments(data):
            if marker == 0xE1 and data[start + 4 : start + 10] == b"Exif\0\0":
                return parse_orientation(data[start + 10 : end])
    elif data[:8] == PNG_MAGIC:
        for kind, start, end in png_chunks(data):
            if kind == b"eXIf":
                return parse_orientation(data[start + 8 : end - 4])
    else:
        raise SystemExit(f"exif_orient: {path} is neither a JPEG nor a PNG")
    return None


def main(argv):
    if len(argv) >= 5 and argv[1] == "write":
        big = "--little-endian" not in argv[5:]
        write(argv[2], argv[3], int(argv[4]), big)
    elif len(argv) == 3 and argv[1] == "read":
        n = read(argv[2])
        print("none" if n is None else n)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
