"""mtdnn.db: LMDB Datum and HDF5 attribute files round-trip, and are written atomically."""
import cv2
import numpy as np
import pytest

from mtdnn import db
from mtdnn.paths import data_path


def real_faces(n):
    folder = data_path("lfw", "lfw-112x96", "Aaron_Peirsol")
    paths = sorted(folder.glob("*.jpg"))[:n]
    assert len(paths) == n
    return [cv2.imread(str(p)) for p in paths]


@pytest.mark.parametrize("encoded", [False, True])
def test_lmdb_round_trip(tmp_path, encoded):
    images = real_faces(3)
    n = db.write_image_lmdb(tmp_path / "db", zip(images, [4, 5, 6]), encoded=encoded)
    assert n == 3 and db.lmdb_count(tmp_path / "db") == 3
    back = list(db.read_image_lmdb(tmp_path / "db"))
    assert [label for _, label in back] == [4, 5, 6]
    for (image, _), original in zip(back, images):
        assert np.array_equal(image, original)  # PNG and raw are both lossless


def test_lmdb_refuses_to_overwrite_and_leaves_no_partial_output(tmp_path):
    db.write_image_lmdb(tmp_path / "db", zip(real_faces(1), [0]))
    with pytest.raises(FileExistsError, match="force"):
        db.write_image_lmdb(tmp_path / "db", zip(real_faces(1), [0]))

    def broken():
        yield real_faces(1)[0], 1
        raise OSError("disk full")
    with pytest.raises(OSError):
        db.write_image_lmdb(tmp_path / "db", broken(), force=True)
    assert [label for _, label in db.read_image_lmdb(tmp_path / "db")] == [0]  # the old one is intact


def test_bad_image_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        db.write_image_lmdb(tmp_path / "db", [(np.zeros((4, 4), np.uint8), 0)])
    assert not (tmp_path / "db").exists()


def test_hdf5_round_trip_and_list_file(tmp_path):
    attrs = np.array([[1, -1], [-1, 1], [1, 1]], dtype=np.float64)
    source = db.write_attribute_hdf5(tmp_path / "a.h5", attrs)
    assert source.read_text().strip() == str((tmp_path / "a.h5").resolve())
    rel = db.write_attribute_hdf5(tmp_path / "r.h5", attrs, relative_source=True)
    assert rel.read_text() == "r.h5\n" and db.read_source(rel) == [tmp_path / "r.h5"]
    back = db.read_attribute_hdf5(tmp_path / "a.h5")
    assert back.dtype == np.float32 and np.array_equal(back, attrs)
    with pytest.raises(ValueError, match="N x M"):
        db.write_attribute_hdf5(tmp_path / "b.h5", np.zeros(3))
