#!/usr/bin/env python3
"""Forward + backward of a small net of the layer types whose CPU code the project patches
(Convolution: 3x3 pad 0/1, stride 2, 1x1, with and without bias, and a 5x3 kernel with
dilation 2, pads 3 x 2 and strides 2 x 3, whose im2col and col2im meet kernel taps in the
padding at both ends of rows and columns; PReLU per channel and shared), with fixed weights
and inputs; writes every top, every parameter gradient and the data gradient to an .npz.

tests/test_caffe_cpu_patch.py runs it in subprocesses with the project's CPU patch on and off
(MTDNN_CAFFE_CPU_PATCH=0 runs Caffe's original code) and compares the arrays.

    python tests/caffe_reference.py OUT.npz
"""
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
import caffe  # noqa: E402

NET = """
name: "cpu_patch_reference"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 5 dim: 3 dim: 20 dim: 16 } shape { dim: 5 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 32 kernel_size: 3 pad: 0 } }
layer { name: "relu1" type: "PReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
layer { name: "relu2" type: "PReLU" bottom: "conv2" top: "relu2" prelu_param { channel_shared: true } }
layer { name: "conv3" type: "Convolution" bottom: "relu2" top: "conv3"
        convolution_param { num_output: 48 kernel_size: 3 pad: 1 stride: 2 bias_term: false } }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4"
        convolution_param { num_output: 24 kernel_size: 1 } }
layer { name: "relu4" type: "PReLU" bottom: "conv4" top: "conv4" }
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5"
        convolution_param { num_output: 16 kernel_h: 5 kernel_w: 3 pad_h: 3 pad_w: 2 stride_h: 2 stride_w: 3
                            dilation: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv5" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


def run(net_text: str = NET, seed: int = 0) -> dict:
    """Set seeded weights and inputs, run forward + backward on the CPU, return all arrays."""
    caffe.set_mode_cpu()
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(net_text)
    try:
        net = caffe.Net(f.name, caffe.TRAIN)
    finally:
        os.unlink(f.name)
    rng = np.random.default_rng(seed)
    for name, params in net.params.items():
        for i, p in enumerate(params):
            scale = 0.25 if name.startswith("relu") else 0.1
            p.data[...] = rng.uniform(0, scale, p.data.shape) if name.startswith("relu") \
                else rng.normal(0, scale, p.data.shape)
    net.blobs["data"].data[...] = rng.normal(0, 1, net.blobs["data"].data.shape)
    net.blobs["label"].data[...] = rng.integers(0, 10, net.blobs["label"].data.shape)
    net.forward()
    net.backward()
    out = {f"top/{k}": v.data.copy() for k, v in net.blobs.items()}
    out["diff/data"] = net.blobs["data"].diff.copy()
    for name, params in net.params.items():
        for i, p in enumerate(params):
            out[f"param_diff/{name}/{i}"] = p.diff.copy()
    return out


if __name__ == "__main__":
    np.savez_compressed(sys.argv[1], **run())
