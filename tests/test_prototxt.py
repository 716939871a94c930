"""mtdnn.prototxt: parse errors name the file; a train_val net runs without its data sources."""
import pytest

from mtdnn.paths import REPO
from mtdnn.prototxt import in_phase, read_net, with_input_layers, write_prototxt


def test_parse_error_names_the_file(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer { name: "x" type: }')
    with pytest.raises(ValueError, match="bad.prototxt: not a valid Caffe net"):
        read_net(bad)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_train_val_with_input_layers_runs_forward(tmp_path, phase):
    import caffe
    net = read_net(REPO / "models" / "fast" / "train_val.prototxt")
    shapes = {"data": (2, 3, 112, 96), "label": (2,), "attributes": (2, 7)}
    timed = with_input_layers(net, phase, shapes)
    assert timed.layer[0].type == "Input" and list(timed.layer[0].top) == ["data", "label", "attributes"]
    assert not any(layer.type in ("Data", "HDF5Data") for layer in timed.layer)
    kept = [layer.name for layer in net.layer if in_phase(layer, phase) and layer.type not in ("Data", "HDF5Data")]
    assert [layer.name for layer in timed.layer[1:]] == kept
    pynet = caffe.Net(str(write_prototxt(timed, tmp_path / "net.prototxt")), getattr(caffe, phase))
    out = pynet.forward()
    assert out["id_loss"] > 0 and pynet.blobs["fc5"].data.shape == (2, 1024)
    assert ("id_accuracy" in out) == (phase == "TEST")


def test_missing_input_shape_is_an_error():
    net = read_net(REPO / "models" / "fast" / "train_val.prototxt")
    with pytest.raises(ValueError, match="attributes"):
        with_input_layers(net, "TRAIN", {"data": (1, 3, 112, 96), "label": (1,)})
