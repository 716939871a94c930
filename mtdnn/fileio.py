"""The project's one way to write a file, to key reuse on content, and to tell a problem of the
machine from a problem of the input.

- :func:`atomic_write` (and the ``atomic_write_*`` shorthands): the result appears whole or not
  at all. The data goes to a temporary file in the same folder, is flushed and fsync'ed, and
  is renamed over the target; on any error the temporary file is removed and the old target
  (if any) is left as it was. A reader, a resumed run or a report never sees half a file.
- :func:`content_key`: size, modification time and SHA-256 of a file's bytes, the key that
  reuse and resume compare (a retrained ``.caffemodel`` at the same path is a different key).
- :func:`is_machine_error` / :class:`MachineError`: disk full, I/O error, read-only or
  permission-denied output. A tool stops on these with a clear message and never records
  them as a property of the image or record it was working on (docs/reliability.md).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from pathlib import Path

# errno values that say the machine (disk, file system, permissions of the output) failed,
# not the input being processed.
MACHINE_ERRNOS = frozenset(
    e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EIO, errno.EROFS, errno.EFBIG,
                errno.ENOMEM, errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE)
    if e is not None)


class MachineError(RuntimeError):
    """A fault of the machine or the tool (disk full, I/O error, output not writable): the run
    must stop; it is never recorded as a property of an input."""


def is_machine_error(exc: BaseException) -> bool:
    """True for an OSError whose errno says the disk, file system or output permissions failed."""
    return isinstance(exc, OSError) and exc.errno in MACHINE_ERRNOS


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None):
    """Open a temporary file beside ``path`` for writing; on a clean exit it is fsync'ed and
    renamed to ``path``, on an exception it is removed and ``path`` is untouched.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    kwargs = {} if "b" in mode else {"encoding": encoding, "newline": newline}
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # the first error is the one to report: on a read-only file system even removing a file
        # that was never made fails (EROFS), and that must not replace it
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path, obj, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (the JSON is serialised before the file is
    opened, so an unserialisable object leaves nothing behind)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_KEY_CACHE: dict[tuple, str] = {}


def content_key(path) -> dict:
    """``{"size", "mtime_ns", "sha256"}`` of a file: what reuse and resume compare.

    Two keys are the same file content when their ``sha256`` match; the hash is cached per
    (path, size, mtime_ns, ctime_ns, inode) within a process (ctime changes on every write
    and cannot be set back), so asking twice costs one stat."""
    path = Path(path)
    st = path.stat()
    cache = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if cache not in _KEY_CACHE:
        _KEY_CACHE[cache] = sha256_file(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _KEY_CACHE[cache]}


def escape_field(text: str) -> str:
    """One text field (a file name, an error message) made safe for a line of a tab-separated
    record file: backslash, tab, CR and LF become ``\\\\``, ``\\t``, ``\\r``, ``\\n``, and the bytes
    of a name that is not valid UTF-8 (``os.fsdecode``'s surrogates) become ``\\xNN``.
    Plain names come out unchanged; :func:`unescape_field` gives back the exact name."""
    raw = os.fsencode(text) if isinstance(text, str) else bytes(text)
    for a, b in ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\r", b"\\r"), (b"\n", b"\\n")):
        raw = raw.replace(a, b)
    return raw.decode("utf-8", "backslashreplace")


_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|[\\trn])")
_UNESCAPE = {"\\": b"\\", "t": b"\t", "r": b"\r", "n": b"\n"}


def unescape_field(field: str) -> str:
    """The inverse of :func:`escape_field` (a name with undecodable bytes comes back as the
    ``os.fsdecode`` string that opens the same file)."""
    parts = _ESCAPE_RE.split(field)  # text, escape, text, escape, ..., text
    raw = b"".join(part.encode("utf-8", "surrogateescape") if k % 2 == 0
                   else bytes([int(part[1:], 16)]) if part[0] == "x" else _UNESCAPE[part]
                   for k, part in enumerate(parts))
    return os.fsdecode(raw)


def same_content(key_a: dict | None, key_b: dict | None) -> bool:
    """True when two :func:`content_key` results describe the same bytes."""
    return bool(key_a and key_b and key_a.get("sha256") == key_b.get("sha256")
                and key_a.get("size") == key_b.get("size"))


class LockHeld(RuntimeError):
    """Another process holds the lock file (see :func:`exclusive_lock`)."""


@contextlib.contextmanager
def exclusive_lock(path):
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created; it holds the holder's pid) for the
    ``with`` block; raises :class:`LockHeld` at once when another process holds it. The kernel
    drops the lock when the holder dies, so a killed run never leaves a stale lock."""
    import fcntl
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"{path} is held by another process") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def lock_held(path) -> bool:
    """True while another process holds ``path`` with :func:`exclusive_lock`."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
