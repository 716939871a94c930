"""mtdnn.fileio: atomic writes leave the old file or the new one, never half of one; content keys."""
import errno
import os

import pytest

from mtdnn import fileio


def test_atomic_write_replaces_whole(tmp_path):
    target = tmp_path / "a.json"
    fileio.atomic_write_json(target, {"x": 1})
    assert target.read_text() == '{\n  "x": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_error_keeps_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_write(target) as f:
            f.write("new, half")
            raise RuntimeError("disk died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary file left


def test_atomic_write_json_unserialisable_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        fileio.atomic_write_json(tmp_path / "a.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_content_key_follows_bytes_not_name(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"weights-1")
    b.write_bytes(b"weights-1")
    ka = fileio.content_key(a)
    assert fileio.same_content(ka, fileio.content_key(b))
    a.write_bytes(b"weights-2")  # retrained into the same path
    os.utime(a, ns=(ka["mtime_ns"], ka["mtime_ns"]))  # even with the old mtime
    assert not fileio.same_content(ka, fileio.content_key(a))


def test_machine_errors():
    assert fileio.is_machine_error(OSError(errno.ENOSPC, "No space left on device"))
    assert fileio.is_machine_error(OSError(errno.EIO, "Input/output error"))
    assert not fileio.is_machine_error(OSError(errno.ENOENT, "No such file"))
    assert not fileio.is_machine_error(ValueError("bad image"))


def test_cleanup_never_hides_the_first_error(tmp_path):
    """On a read-only file system even removing the temporary file that was never made fails
    (EROFS): atomic_write's cleanup raised that second error in place of the first."""
    from faults import read_only_disk
    with read_only_disk(tmp_path / "ro") as ro, pytest.raises(OSError) as e:
        fileio.atomic_write_text(ro / "x.txt", "x")
    assert e.value.errno == errno.EROFS and e.value.__context__ is None
    assert fileio.is_machine_error(e.value)
