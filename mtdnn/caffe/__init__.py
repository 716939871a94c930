"""Caffe's room: everything that knows it is Caffe that trains and measures the nets.

- :mod:`.run`        the `caffe` binary (:func:`~.run.caffe_binary`), the `caffe train` runner
                     (log, progress bar, Ctrl-C passed on), `caffe time`, BLAS thread variables
- :mod:`.cuda`       the one CUDA probe: is this Caffe (pycaffe or a binary) built with CUDA
- :mod:`.log`        what Caffe writes: training logs as rows and curves, its error lines,
                     `caffe time`'s averages
- :mod:`.netstats`   per-layer shapes, parameters and FLOPs of a net (tools/net_summary.py)
- :mod:`.snapshots`  a run's phases and snapshot pairs: whole or damaged, resumable or not, and
                     the fingerprints of nets and solvers that tell whether snapshots fit a net
- :mod:`.engine`     the seam where a training engine plugs into mtdnn.train:
                     :class:`~.engine.TrainingEngine` (what mtdnn.train asks of an engine) and
                     :class:`~.engine.CaffeEngine`, the only one
- :mod:`.gpu_check`  the steps of tools/gpu_check.py (Caffe on an NVIDIA GPU: gtests, GPU vs
                     CPU, speed) and its report

Nothing here imports the training run (mtdnn.train), the evaluators or the tools.
"""
import os


def import_pycaffe():
    """pycaffe, imported with Caffe's per-layer log off (GLOG_minloglevel=2 unless set)."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # before caffe's first import
    import caffe
    return caffe
