r"""One record format for every list and record file the tools write or read.

A record file is UTF-8 text, one record a line, lines ended by ``\n`` only. A name (a file
path, an error message) is one field, written by :func:`escape_field` so that it can never
break a line or a field, and read back exactly by :func:`unescape_field`:

- ``\`` is written ``\\``; tab, LF, CR, VT and FF as ``\t \n \r \v \f``;
- every other control character and every whitespace character but the plain space (among
  them the ones Python's ``str.splitlines`` splits at: ``\x1c \x1d \x1e``, U+0085, U+2028,
  U+2029) as ``\xNN`` (below U+0080) or ``\uNNNN``;
- a space at the start or end of a name as ``\x20`` (readers strip lines and split fields at
  whitespace);
- each byte of a name that is not valid UTF-8 (``os.fsdecode``'s surrogates) as ``\xNN``.

So ``\xNN`` is always one byte of the name's UTF-8 form and ``\uNNNN`` one character. A plain
name (LFW's, CASIA-WebFace's, any name without these characters) is written unchanged, so the
formats stay those of the datasets and of Caffe's ``path label`` lists.

Readers take lines with :func:`read_lines`, which splits at ``\n`` only (never
``str.splitlines``), drops a ``\r`` before it (files written on Windows) and keeps the bytes of a
hand-written list that are not UTF-8 (so such a name still opens its file). Writers use
:func:`write_lines`: atomic, fsync'ed (:func:`mtdnn.fileio.atomic_write`).

Lists that Caffe itself reads (its ``HDF5Data`` source files) follow Caffe's rules, not these:
:func:`caffe_list_problem` says why a path cannot be one of their lines.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

# What escape_field rewrites: the backslash, control characters, whitespace other than the
# plain space, and lone surrogates (os.fsdecode's stand-ins for bytes that are not UTF-8).
_SPECIAL = re.compile(r"[\\\x00-\x1f\x7f-\x9f\ud800-\udfff]|[^\S ]")
_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\v": "\\v", "\f": "\\f"}
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[\\trnvf])")
_UNESCAPE = {"\\": b"\\", "t": b"\t", "r": b"\r", "n": b"\n", "v": b"\v", "f": b"\f"}


def _escape_char(m: re.Match) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def escape_field(text) -> str:
    """``text`` (a str, possibly holding ``os.fsdecode`` surrogates, or bytes) as one field of a
    record line: no line break, tab, edge space or byte that is not UTF-8 is left in it (the
    module help gives the rule). Plain names come out unchanged."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "surrogateescape")
    text = str(text)
    out = _SPECIAL.sub(_escape_char, text)
    if out[:1] == " " or out[-1:] == " ":
        core = out.strip(" ")
        lead = len(out) - len(out.lstrip(" "))
        trail = len(out) - len(out.rstrip(" ")) if core else 0
        out = "\\x20" * lead + core + "\\x20" * trail
    return out


def unescape_field(field: str) -> str:
    """The inverse of :func:`escape_field`: the exact name (a name with bytes that are not UTF-8
    comes back as the ``os.fsdecode`` string that opens the same file). Also reads the older
    rule's files (``\\\\ \\t \\r \\n \\xNN``), which are a part of this one."""
    if "\\" not in field:
        return field
    parts = _ESCAPE_RE.split(field)  # text, escape, text, escape, ..., text
    raw = bytearray()
    for k, part in enumerate(parts):
        if k % 2 == 0:
            raw += part.encode("utf-8", "surrogateescape")
        elif part[0] == "x":
            raw.append(int(part[1:], 16))
        elif part[0] == "u":
            raw += chr(int(part[1:], 16)).encode("utf-8", "surrogatepass")
        else:
            raw += _UNESCAPE[part]
    return bytes(raw).decode("utf-8", "surrogateescape")


def read_lines(path, *, comments: bool = False) -> list[tuple[int, str]]:
    """``(1-based line number, line)`` of every non-blank line of a record file, split at
    ``\\n`` only, stripped of surrounding whitespace; with ``comments``, lines starting with
    ``#`` are left out too. Bytes that are not UTF-8 are kept as ``os.fsdecode`` surrogates."""
    text = Path(path).read_bytes().decode("utf-8", "surrogateescape")
    out = []
    for i, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if line and not (comments and line.startswith("#")):
            out.append((i, line))
    return out


def record_line(*fields, sep: str = "\t") -> str:
    """One record line (with its ``\\n``): text fields escaped, other values by ``str``."""
    return sep.join(escape_field(f) if isinstance(f, (str, bytes)) else str(f) for f in fields) + "\n"


def write_lines(path, lines: Iterable[str], header: str = "") -> Path:
    """Write record lines (each ending in ``\\n``, fields escaped, e.g. by :func:`record_line`)
    to ``path`` atomically and fsync'ed."""
    from .fileio import atomic_write
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(header)
        for line in lines:
            f.write(line)
    return Path(path)


def read_failures(path) -> dict[str, str]:
    """``{name: reason}`` of a ``name<TAB>reason`` failures file (empty when it does not exist);
    comment lines and lines without a tab (cut off) are ignored."""
    out = {}
    if Path(path).is_file():
        for _, line in read_lines(path, comments=True):
            if "\t" in line:
                name, reason = line.split("\t", 1)
                out[unescape_field(name)] = unescape_field(reason)
    return out


def write_failures(path, failed: dict[str, str]) -> Path:
    """``name<TAB>reason`` per line, sorted by name, atomically (empty file: none failed)."""
    return write_lines(path, (record_line(k, failed[k]) for k in sorted(failed)))


def read_names(path) -> list[str]:
    """One name per line (a feature set's ``names.txt``), unescaped."""
    return [unescape_field(line) for _, line in read_lines(path)]


def write_names(path, names: Iterable[str]) -> Path:
    """One escaped name per line, atomically."""
    return write_lines(path, (escape_field(n) + "\n" for n in names))


def caffe_list_problem(path: str) -> str | None:
    """Why ``path`` cannot be a line of a list file that Caffe reads word by word (its
    ``HDF5Data`` source), or None. Caffe takes such a file one whitespace-separated word at a
    time and knows no escapes."""
    if not path or any(c.isspace() for c in path) or re.search(r"[\x00-\x1f\x7f\ud800-\udfff]", path):
        return (f"{escape_field(path)}: Caffe reads this list file word by word and knows no escapes, so a "
                f"path in it cannot hold spaces, line breaks, control characters or bytes that are not UTF-8; "
                f"rename or move it")
    return None
