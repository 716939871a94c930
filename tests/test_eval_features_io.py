"""Feature files: the .npy + names format, the MegaFace devkit .bin format, and their checks."""
import numpy as np
import pytest

from mtdnn.evaluation.features_io import (bin_path, check_features, image_key, l2_normalize,
                                          load_features, lookup, name_index, read_bin,
                                          read_bin_features, write_bin, write_names)


def test_bin_round_trip_and_layout(tmp_path):
    v = np.arange(5, dtype=np.float32) / 3
    p = bin_path(tmp_path, "Aaron/Aaron_1.png", "_x")
    assert p == tmp_path / "Aaron/Aaron_1.png_x.bin"
    write_bin(p, v)
    raw = p.read_bytes()
    assert np.frombuffer(raw[:16], "<i4").tolist() == [5, 1, 4, 5] and len(raw) == 16 + 20
    np.testing.assert_array_equal(read_bin(p), v)
    np.testing.assert_array_equal(read_bin_features(tmp_path, ["Aaron/Aaron_1.png"], "_x.bin",
                                                    progress=False), v[None])


def test_bin_errors_name_the_file(tmp_path):
    p = tmp_path / "a.bin"
    write_bin(p, np.ones(4))
    with pytest.raises(ValueError, match="a.bin: feature of dimension 4, expected 8"):
        read_bin(p, dim=8)
    p.write_bytes(p.read_bytes()[:-4])
    with pytest.raises(ValueError, match="a.bin: 28 bytes, expected 32"):
        read_bin(p)
    p.write_bytes(np.array([4, 1, 4, 6], "<i4").tobytes() + np.ones(4, "<f4").tobytes())
    with pytest.raises(ValueError, match="a.bin: header .* type=6"):
        read_bin(p)
    p.write_bytes(b"\0" * 8)
    with pytest.raises(ValueError, match="shorter than the 16-byte header"):
        read_bin(p)
    write_bin(tmp_path / "x_s.bin", np.ones(4))
    write_bin(tmp_path / "y_s.bin", np.ones(3))
    with pytest.raises(ValueError, match="y_s.bin: feature of dimension 3, expected 4"):
        read_bin_features(tmp_path, ["x", "y"], "_s", progress=False)
    with pytest.raises(FileNotFoundError, match="z_s.bin"):
        read_bin_features(tmp_path, ["z"], "_s", progress=False)


def test_load_features_checks_names_and_dim(tmp_path):
    np.save(tmp_path / "f.npy", np.ones((3, 4), np.float32))
    write_names(tmp_path / "f.names.txt", ["a", "b"])
    with pytest.raises(ValueError, match="has 3 rows but .*f.names.txt has 2 names"):
        load_features(tmp_path / "f")
    write_names(tmp_path / "f.names.txt", ["a", "b", "c"])
    x, names, labels = load_features(tmp_path / "f.npy")
    assert x.shape == (3, 4) and names == ["a", "b", "c"] and labels is None
    with pytest.raises(ValueError, match="dimension 4, expected 8"):
        load_features(tmp_path / "f", dim=8)
    np.save(tmp_path / "g.npy", np.ones(3, np.float32))
    write_names(tmp_path / "g.names.txt", ["a", "b", "c"])
    with pytest.raises(ValueError, match="expected a 2-D"):
        load_features(tmp_path / "g")
    with pytest.raises(FileNotFoundError, match="h.npy"):
        load_features(tmp_path / "h")


def test_nan_and_zero_rows_are_errors():
    x = np.ones((4, 3), np.float32)
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="probes: 1 feature row.* NaN or inf, first row 12"):
        check_features(x, "probes", first_row=10)
    x[2] = 0
    with pytest.raises(ValueError, match="zero norm, first row 2"):
        l2_normalize(x)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(np.ones((2, 3))), axis=1), 1, rtol=1e-6)


def test_names_keys_duplicates_and_unknown():
    assert image_key("Aaron_Eckhart/Aaron_Eckhart_0001.jpg") == "Aaron_Eckhart_0001"
    idx = name_index(["A/A_0001.jpg", "B/B_0001.png"])
    assert lookup(idx, ["B_0001", "A_0001"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="2 image\\(s\\) not found, e.g. C_0001, D_0001"):
        lookup(idx, ["C_0001", "A_0001", "D_0001"], "features")
    with pytest.raises(ValueError, match="'A_0001' appears twice \\(rows 0 and 1\\)"):
        name_index(["A/A_0001.jpg", "x/A_0001.png"])


def test_check_same_making_reads_what_each_meta_records(tmp_path):
    """Settings a meta.json does not record (an older extract_features) are not compared; sets
    extracted without weights (Caffe's fillers, drawn anew on every run) never match."""
    import json

    from mtdnn.evaluation.features_io import check_same_making
    old = {"settings": {"n": 2, "dim": 4, "blob": "fc5", "mirror": "concat"}}
    new = {"settings": {"n": 3, "dim": 4, "blob": "fc5", "mirror": "concat", "l2norm": False,
                        "weights_sha256": "a" * 64}, "input_size": [112, 96]}
    for name, meta in (("old", old), ("new", new)):
        (tmp_path / f"{name}.meta.json").write_text(json.dumps(meta))
    said = []
    assert check_same_making({"probes": tmp_path / "old", "distractors": tmp_path / "new"}, log=said.append) == []
    assert said == []
    new["settings"]["weights_sha256"] = None
    (tmp_path / "new.meta.json").write_text(json.dumps(new))
    with pytest.raises(ValueError, match="distractors .*new was extracted without --weights"):
        check_same_making({"probes": tmp_path / "old", "distractors": tmp_path / "new"})
    problems = check_same_making({"probes": tmp_path / "old", "distractors": tmp_path / "x"}, accept=True,
                                 log=said.append)
    assert problems == [] and "distractors" in said[0] and "no meta.json" in said[0]
