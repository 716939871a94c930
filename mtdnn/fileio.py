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
import weakref
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


def read_json(path, error: type[Exception], missing: str = "file not found"):
    """The JSON document of ``path``; a missing file or one that is not JSON (or not UTF-8)
    raises ``error`` naming the file (``"PATH: missing"``, ``"PATH: not valid JSON (why)"``)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None


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


# One escaping rule for every record file (mtdnn/records.py), re-exported here where it began.
from mtdnn.records import escape_field, unescape_field  # noqa: E402,F401


def same_content(key_a: dict | None, key_b: dict | None) -> bool:
    """True when two :func:`content_key` results describe the same bytes."""
    return bool(key_a and key_b and key_a.get("sha256") == key_b.get("sha256")
                and key_a.get("size") == key_b.get("size"))


class LockHeld(RuntimeError):
    """Another process holds the lock file (see :func:`exclusive_lock`); ``holder`` says which
    (pid, start time and command line, as far as the lock file tells)."""

    def __init__(self, message: str, holder: str = "another process"):
        super().__init__(message)
        self.holder = holder


def lock_holder(path) -> str:
    """Who holds a lock of :func:`exclusive_lock`, from what the holder wrote into it:
    'pid 123, since 2026-12-05 10:00:00 UTC: tools/align_faces.py SRC OUT'."""
    try:
        pid, since, command = (Path(path).read_text(encoding="utf-8", errors="replace").split("\n") + ["", ""])[:3]
    except OSError:
        return "another process"
    if not pid.strip().isdigit():
        return "another process"
    return f"pid {pid.strip()}" + (f", since {since}" if since else "") + (f": {command}" if command else "")


def _acquire_lock(path: Path) -> int:
    """Open ``path`` and take an exclusive ``flock`` on it at once, writing the holder's pid,
    start time and command line into it; the open descriptor (closing it releases the lock).
    Raises :class:`LockHeld` naming the holder when another process holds it."""
    import fcntl
    import shlex
    import sys
    import time
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        command = " ".join(shlex.quote(a) for a in sys.argv).replace("\n", " ")
        os.write(fd, f"{os.getpid()}\n{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n{command}\n"
                 .encode("utf-8", "backslashreplace"))
    except BlockingIOError:
        os.close(fd)
        holder = lock_holder(path)
        raise LockHeld(f"{path} is held by {holder}", holder) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def exclusive_lock(path):
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created; it holds the holder's pid, start
    time and command line) for the ``with`` block; raises :class:`LockHeld` naming the holder
    at once when another process holds it. The kernel drops the lock when the holder dies, so
    a killed run never leaves a stale lock."""
    path = Path(path)
    fd = _acquire_lock(path)
    try:
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class OutputBusy(RuntimeError):
    """Another run is writing the same output (see :class:`OutputLock`): not a fault of the
    input; the tools stop with this message and status 1 (:func:`mtdnn.cli.run_tool`)."""


def output_lock_path(target) -> Path:
    """The lock file of an output folder, prefix or file: ``.<name>.lock`` beside it (not in
    it: a folder may be replaced by a rename, and the tree scan skips hidden files)."""
    target = Path(os.path.abspath(target))
    return target.parent / f".{target.name}.lock"


_HELD = weakref.WeakValueDictionary()  # lock path -> this process's OutputLock on it


class OutputLock:
    """The lock of output ``target`` (:func:`output_lock_path`), the one rule of every tool that
    writes an output folder or prefix: a second run on the same output raises
    :class:`OutputBusy` at once, saying who holds it (pid, start, command line).

    Held from construction until :meth:`release`, the end of a ``with`` block, or the object's
    end (``lock = OutputLock(out)`` in a tool's ``main`` holds it while ``main`` runs). A hold
    of this same process that was left behind (e.g. kept alive by a traceback) is given up
    first: the lock guards against other processes."""

    def __init__(self, target, tool: str | None = None):
        import sys
        self.path = output_lock_path(target)
        earlier = _HELD.pop(str(self.path), None)
        if earlier is not None:
            earlier.release()
        self._fd = None
        try:
            self._fd = _acquire_lock(self.path)
        except LockHeld as e:
            raise OutputBusy(f"{target} is being written by another run ({e.holder}; lock {self.path}); "
                             f"wait for it to finish or stop it, then rerun "
                             f"{tool or Path(sys.argv[0]).name}") from None
        _HELD[str(self.path)] = self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        self.release()


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
