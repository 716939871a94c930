"""tools/gpu_check.py (mtdnn.caffe.gpu_check): the no-GPU path (exit 0, nothing written) and the pieces that need no GPU."""
import json
import subprocess
import sys

import numpy as np
import pytest

from mtdnn.paths import REPO
from mtdnn.caffe import gpu_check
from mtdnn.caffe.log import parse_caffe_time

TOOL = REPO / "tools" / "gpu_check.py"


def fake_nvidia_smi(tmp_path, body: str):
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)
    return str(exe)


@pytest.mark.parametrize("smi", ["missing", "fails", "lists none"])
def test_no_gpu_says_so_writes_nothing_and_exits_0(tmp_path, smi):
    cmd = {"missing": str(tmp_path / "no-such-nvidia-smi"),
           "fails": fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed: no driver' >&2; exit 9"),
           "lists none": fake_nvidia_smi(tmp_path, "exit 0")}[smi]
    out_dir = tmp_path / "report"
    out = subprocess.run([sys.executable, str(TOOL), "--nvidia-smi", cmd, "--out", str(out_dir)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no NVIDIA GPU" in out.stdout
    assert not out_dir.exists()


def test_default_nvidia_smi_on_this_machine_without_gpu(tmp_path):
    if gpu_check.find_gpus():
        pytest.skip("this machine has a GPU")
    out = subprocess.run([sys.executable, str(TOOL), "--out", str(tmp_path / "r")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "no NVIDIA GPU" in out.stdout
    assert not (tmp_path / "r").exists()


def test_find_gpus_parses_nvidia_smi(tmp_path):
    smi = fake_nvidia_smi(tmp_path, "echo '0, NVIDIA H200, 143771, 580.82.07'; echo '1, NVIDIA H200, 143771, 580.82.07'")
    gpus = gpu_check.find_gpus(smi)
    assert gpus == [{"index": 0, "name": "NVIDIA H200", "memory_mib": 143771, "driver": "580.82.07"},
                    {"index": 1, "name": "NVIDIA H200", "memory_mib": 143771, "driver": "580.82.07"}]


def test_unknown_gpu_index_is_a_usage_error(tmp_path):
    smi = fake_nvidia_smi(tmp_path, "echo '0, NVIDIA H200, 143771, 580.82.07'")
    out = subprocess.run([sys.executable, str(TOOL), "--nvidia-smi", smi, "--gpu", "3", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no such GPU" in out.stderr


def test_cpu_only_caffe_with_a_gpu_is_refused_with_the_build_command(tmp_path):
    if gpu_check.caffe_build().startswith("GPU"):
        pytest.skip("this Caffe is a GPU build")
    smi = fake_nvidia_smi(tmp_path, "echo '0, NVIDIA H200, 143771, 580.82.07'")
    out = subprocess.run([sys.executable, str(TOOL), "--nvidia-smi", smi, "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "CAFFE_GPU=1 make setup" in out.stderr
    assert not (tmp_path / "r").exists()


def test_max_rel_diff():
    b = np.array([1.0, -4.0, 2.0])
    assert gpu_check.max_rel_diff(b, b) == 0.0
    assert gpu_check.max_rel_diff(b + [0, 0.04, 0], b) == pytest.approx(0.01)
    assert gpu_check.max_rel_diff(np.zeros(3), np.zeros(3)) == 0.0
    assert gpu_check.max_rel_diff(np.ones(3), np.zeros(3)) == float("inf")
    with pytest.raises(ValueError):
        gpu_check.max_rel_diff(np.ones(3), np.ones(4))


def test_parse_caffe_time_and_gtest():
    log = "I1202 Average Forward pass: 12.5 ms.\nI1202 Average Backward pass: 30.25 ms.\n"
    assert parse_caffe_time(log) == (12.5, 30.25)
    with pytest.raises(ValueError):
        parse_caffe_time("F1202 Check failed: error == cudaSuccess")
    gtest = ("[  PASSED  ] 10 tests.\n[  FAILED  ] 2 tests, listed below:\n"
             "[  FAILED  ] ConvolutionLayerTest/2.TestGradient, where TypeParam = caffe::GPUDevice<float>\n"
             "[  FAILED  ] CuDNNPoolingLayerTest/0.TestSetup, where TypeParam = float\n")
    assert gpu_check.parse_gtest(gtest) == {"passed": 10, "failed": 2, "failed_tests": [
        "ConvolutionLayerTest/2.TestGradient", "CuDNNPoolingLayerTest/0.TestSetup"]}


def test_train_input_net_has_input_blobs_and_no_dropout(tmp_path):
    from mtdnn.prototxt import read_net
    net = read_net(gpu_check.train_input_net("fast", 4, tmp_path / "n.prototxt"))
    types = [layer.type for layer in net.layer]
    assert types[0] == "Input" and "Dropout" not in types and "Data" not in types and "HDF5Data" not in types
    assert list(net.layer[0].input_param.shape[0].dim) == [4, 3, 112, 96]


def test_markdown_report_names_failures():
    report = {"gpu": {"name": "NVIDIA H200", "driver": "580", "memory_mib": 1}, "date": "d", "caffe_build": "GPU build",
              "steps": {"device": {"ok": True, "summary": "ok", "seconds": 1},
                        "time": {"ok": True, "summary": "", "seconds": 5, "runs": [
                            {"model": "full", "batch": 40, "math": "fma", "forward_ms": 10, "backward_ms": 20,
                             "img_per_s": 1333.3, "peak_mib": 900},
                            {"model": "full", "batch": 40, "math": "tf32", "error": "caffe time failed (134)"}]},
                        "train": {"ok": False, "summary": "train.py failed (1)", "seconds": 2}}}
    md = gpu_check.render_markdown(report)
    assert "| full | 40 | fma | 10.0 | 20.0 | 1333 | 900 |" in md
    assert "| full | 40 | tf32 | caffe time failed (134) |" in md
    assert "Steps failed: train." in md
    json.dumps(report)


# cuDNN 9.10's own log lines (CUDNN_LOGLEVEL_DBG=2), as written here by a program calling cudnnCreate
# without a GPU, and its load-failure messages (strings of libcudnn_graph.so.9) with the loader's.
CUDNN_LOG_NO_GPU = """
E! CuDNN (v91002 21) function cudnnCreate() called:
e!         Error: CUDNN_STATUS_NOT_INITIALIZED; Reason: cudaGetDeviceCount(&count) != cudaSuccess
e! Time: 2026-12-05T10:16:40.705729 (0d+0h+0m+0s since start)
e! Process=6393; Thread=6393; GPU=NULL; Handle=NULL; StreamId=NULL.
"""


def test_cudnn_log_without_load_failures():
    found = gpu_check.cudnn_log_problems(CUDNN_LOG_NO_GPU)
    assert found == {"errors": 1, "warnings": 0, "load_failures": [], "libraries_not_loaded": []}


def test_cudnn_log_names_the_libraries_it_could_not_load():
    log = CUDNN_LOG_NO_GPU + """
W! CuDNN (v91002 21) function cudnnBackendFinalize() called:
w!         Warning: CUDNN_STATUS_NOT_SUPPORTED; Reason: Could not open libnvrtc
w!         Warning: CUDNN_STATUS_NOT_SUPPORTED; Reason: Could not open libnvrtc
e!         Error: CUDNN_STATUS_INTERNAL_ERROR; Reason: cannot load libcuda
Could not load symbol cublasLtCreate. Error: libcublasLt.so.13: cannot open shared object file: No such file or directory
"""
    found = gpu_check.cudnn_log_problems(log)
    assert found["warnings"] == 1 and found["errors"] == 1
    assert len(found["load_failures"]) == 3               # each distinct message once
    assert found["libraries_not_loaded"] == ["libcublasLt.so.13", "libcuda", "libnvrtc"]
