"""Parsing Caffe training logs and drawing their curves."""
import subprocess
import sys

from mtdnn.caffe.log import parse_caffe_log
from mtdnn.paths import REPO

PLOT_LOG = str(REPO / "tools" / "plot_log.py")

LOG = """\
I1128 15:00:00.000000  1234 solver.cpp:218] Iteration 0 (0 iter/s, 1.2s/10 iters), loss = 4.7
I1128 15:00:00.000000  1234 solver.cpp:237]     Train net output #0: loss_attr = 1.02 (* 0.1 = 0.102 loss)
I1128 15:00:00.000000  1234 solver.cpp:237]     Train net output #1: loss_id = 4.6 (* 1 = 4.6 loss)
I1128 15:00:00.000000  1234 sgd_solver.cpp:105] Iteration 0, lr = 0.01
I1128 15:00:01.000000  1234 solver.cpp:330] Iteration 10, Testing net (#0)
I1128 15:00:01.000000  1234 solver.cpp:397]     Test net output #0: accuracy = 0.125
I1128 15:00:01.000000  1234 solver.cpp:397]     Test net output #1: loss_id = 4.4 (* 1 = 4.4 loss)
I1128 15:00:02.000000  1234 solver.cpp:218] Iteration 10 (8.1 iter/s, 1.23s/10 iters), loss = 3.9
I1128 15:00:02.000000  1234 solver.cpp:237]     Train net output #0: loss_attr = 0.81 (* 0.1 = 0.081 loss)
I1128 15:00:02.000000  1234 solver.cpp:237]     Train net output #1: loss_id = 3.82 (* 1 = 3.82 loss)
I1128 15:00:02.000000  1234 sgd_solver.cpp:105] Iteration 10, lr = 0.001
"""


def test_parse_training_and_test_rows():
    log = parse_caffe_log(LOG)
    assert log.train == [
        {"iteration": 0, "loss": 4.7, "loss_attr": 1.02, "loss_id": 4.6, "lr": 0.01},
        {"iteration": 10, "loss": 3.9, "loss_attr": 0.81, "loss_id": 3.82, "lr": 0.001},
    ]
    assert log.test == [{"iteration": 10, "accuracy": 0.125, "loss_id": 4.4}]
    assert log.column("loss_id") == ([0, 10], [4.6, 3.82])
    assert log.names(test=True) == ["accuracy", "loss_id"]


def test_plot_log_tool_writes_csv_and_png(tmp_path):
    (tmp_path / "train.log").write_text(LOG)
    out = subprocess.run([sys.executable, PLOT_LOG, str(tmp_path / "train.log")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "2 training rows" in out.stdout
    assert (tmp_path / "train.train.csv").read_text().splitlines()[0] == "iteration,loss,loss_attr,loss_id,lr"
    assert (tmp_path / "train.png").stat().st_size > 10_000
    missing = subprocess.run([sys.executable, PLOT_LOG, str(tmp_path / "nope.log")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "nope.log: no such log file" in missing.stderr
