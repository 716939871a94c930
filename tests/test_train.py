"""tools/train.py (make train) with real Caffe on real faces: both phases in a run folder, the
logs and curves, skipping finished phases, resuming after a kill or Ctrl-C, skipping damaged
snapshots, refusing snapshots of another net, and bad input that ends with a message."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from mtdnn.paths import REPO, data_path
from mtdnn.caffe.cuda import binary_has_cuda
from mtdnn.caffe.run import caffe_binary
from mtdnn.train import RunLock, net_fingerprint

TOOL = REPO / "tools" / "train.py"
PEOPLE, PER_PERSON = 6, 8
SMALL = ["--model", "fast", "--width", "0.125", "--batch", "8", "--display", "1", "--test-interval", "1000"]


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """A tools/build_db.py database of 48 aligned LFW faces (6 people, 8 each; 1 each held out)."""
    root = tmp_path_factory.mktemp("db")
    by_label = defaultdict(list)
    for line in data_path("lfw", "lfw-112x96_list.txt").read_text().splitlines():
        if line.strip():
            path, label = line.split()
            by_label[label].append(path)
    biggest = sorted(by_label, key=lambda k: (-len(by_label[k]), k))[:PEOPLE]
    (root / "list.txt").write_text("".join(f"{p} {i}\n" for i, k in enumerate(biggest)
                                           for p in sorted(by_label[k])[:PER_PERSON]))
    out = subprocess.run([sys.executable, str(REPO / "tools" / "build_db.py"), "--list", str(root / "list.txt"),
                          "--root", str(data_path("lfw", "lfw-112x96")), "--placeholder-attributes", "7",
                          str(root / "db")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return root / "db"


def train(*args, check=True):
    out = subprocess.run([sys.executable, str(TOOL), "--quiet", *map(str, args)], capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_two_phases_then_skip(database, tmp_path):
    run = tmp_path / "run"
    out = train(*SMALL, "--db", database, "--run", run, "--pretrain-iter", 6, "--finetune-iter", 4)
    # the exact commands are printed; fine-tuning starts from the last pre-training weights
    assert "caffe train -solver solver_pretrain.prototxt" in out.stdout
    assert "caffe train -solver solver_finetune.prototxt -weights pretrain_iter_6.caffemodel" in out.stdout
    for name in ("train_val_pretrain.prototxt", "train_val.prototxt", "deploy.prototxt", "solver_pretrain.prototxt",
                 "solver_finetune.prototxt", "run.json", "pretrain.log", "finetune.log", "pretrain.train.csv",
                 "finetune.train.csv", "pretrain.png", "finetune.png", "pretrain_iter_6.caffemodel",
                 "finetune_iter_4.caffemodel"):
        assert (run / name).is_file(), name
    # the database sets the classifier's size and the data paths
    net = (run / "train_val.prototxt").read_text()
    assert "num_output: 6\n" in net and str(database / "train_lmdb") in net
    assert "Optimization Done" in (run / "finetune.log").read_text()
    assert len((run / "pretrain.train.csv").read_text().splitlines()) >= 6  # header + iterations
    state = __import__("json").loads((run / "run.json").read_text())
    assert state["weights"] == "finetune_iter_4.caffemodel" and state["identities"] == PEOPLE
    assert state["nets"]["finetune"] == net_fingerprint(net)

    again = train(*SMALL, "--db", database, "--run", run, "--pretrain-iter", 6, "--finetune-iter", 4)
    assert "[pretrain] finished before" in again.stdout and "[finetune] finished before" in again.stdout
    assert "caffe train" not in again.stdout
    # more fine-tuning iterations: the finished pre-training is kept, fine-tuning continues
    more = train(*SMALL, "--db", database, "--run", run, "--pretrain-iter", 6, "--finetune-iter", 6)
    assert "[pretrain] finished before" in more.stdout
    assert "-snapshot finetune_iter_4.solverstate" in more.stdout
    assert (run / "finetune_iter_6.caffemodel").is_file()


def _wait_for(predicate, timeout=120):
    t0 = time.time()
    while not predicate():
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _last_iteration(log: Path) -> int:
    found = re.findall(r"Iteration (\d+) ", log.read_text()) if log.is_file() else []
    return int(found[-1]) if found else -1


def test_resume_after_kill_skips_damaged_snapshots(database, tmp_path):
    run = tmp_path / "run"
    args = [*SMALL, "--db", database, "--run", run, "--pretrain-iter", 80, "--finetune-iter", 2, "--snapshot", 10]
    proc = subprocess.Popen([sys.executable, str(TOOL), "--quiet", *map(str, args)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # kill the tool and Caffe (SIGKILL: no chance to snapshot) a little after the 2nd snapshot
        _wait_for(lambda: _last_iteration(run / "pretrain.log") >= 22)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)
    snaps = sorted(int(m[1]) for p in run.glob("pretrain_iter_*.solverstate")
                   if (m := re.search(r"_(\d+)\.solverstate", p.name)))
    assert snaps and snaps[-1] < 80, snaps
    good = snaps[-1]
    # a snapshot half-written when the power went: newer than the good one, truncated
    bad = good + 10
    for ext in ("caffemodel", "solverstate"):
        data = (run / f"pretrain_iter_{good}.{ext}").read_bytes()
        (run / f"pretrain_iter_{bad}.{ext}").write_bytes(data[: len(data) // 3])

    out = train(*args)
    assert f"pretrain_iter_{bad}.solverstate is damaged" in out.stdout
    assert f"continuing from iteration {good} (pretrain_iter_{good}.solverstate)" in out.stdout
    assert f"-snapshot pretrain_iter_{good}.solverstate" in out.stdout
    log = (run / "pretrain.log").read_text()
    assert f"Resuming from pretrain_iter_{good}.solverstate" in log
    assert log.count("### tools/train.py") == 2  # one log, appended to on resume
    assert (run / "pretrain_iter_80.caffemodel").is_file() and (run / "finetune_iter_2.caffemodel").is_file()


def test_ctrl_c_snapshots_and_rerun_continues(database, tmp_path):
    run = tmp_path / "run"
    args = [*SMALL, "--db", database, "--run", run, "--pretrain-iter", 300, "--finetune-iter", 2,
            "--snapshot", 1000]
    proc = subprocess.Popen([sys.executable, str(TOOL), "--quiet", *map(str, args)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _last_iteration(run / "pretrain.log") >= 5)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stdout + stderr
    assert "stopped before the end of pretrain" in stderr and "Rerun the same command" in stderr
    stopped = [p for p in run.glob("pretrain_iter_*.solverstate")]
    assert len(stopped) == 1  # Caffe snapshotted where it stopped
    it = int(re.search(r"_(\d+)\.", stopped[0].name)[1])
    assert 5 <= it < 300
    # rerun (here with a shorter schedule, which changes the solver, not the net: allowed)
    args[args.index("--pretrain-iter") + 1] = it + 3
    out = train(*args)
    assert f"continuing from iteration {it}" in out.stdout
    assert (run / f"pretrain_iter_{it + 3}.caffemodel").is_file() and (run / "finetune_iter_2.caffemodel").is_file()


def test_snapshots_of_another_net_are_refused(database, tmp_path):
    run = tmp_path / "run"
    args = ["--db", database, "--run", run, "--pretrain-iter", 4, "--finetune-iter", 2, "--snapshot", 2]
    train(*SMALL, *args)
    def files():
        return {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name != ".train.lock"}
    before = files()
    out = train(*SMALL, *args, "--width", "0.25", check=False)
    assert out.returncode == 2
    assert "of a different net" in out.stderr and "width 0.125 -> 0.25" in out.stderr
    assert "new run folder" in out.stderr and "--restart" in out.stderr
    assert files() == before  # nothing touched
    out = train(*SMALL, *args, "--lambda1", "0.5", check=False)  # the fine-tuning net differs
    assert out.returncode == 2 and "finetune snapshots" in out.stderr and "lambda1 default -> 0.5" in out.stderr
    # the same nets, another solver: a finished run is not passed off as a seeded one
    out = train(*SMALL, *args, "--seed", "3", check=False)
    assert out.returncode == 2 and "made with a different solver" in out.stderr
    assert "random_seed default -> 3" in out.stderr and files() == before
    out = train(*SMALL, *args, "--finetune-lr", "0.5", check=False)
    assert out.returncode == 2 and "finetune snapshots" in out.stderr and "made with a different solver" in out.stderr
    # a run.json written before solvers were recorded: the solver files beside the snapshots decide
    state = json.loads((run / "run.json").read_text())
    del state["solvers"]
    (run / "run.json").write_text(json.dumps(state))
    assert train(*SMALL, *args, "--seed", "3", check=False).returncode == 2
    before = files()
    # bookkeeping (display, test interval) is not the recipe: the finished phases are kept
    out = train(*SMALL, *args, "--display", "2", "--test-interval", "500")
    assert out.stdout.count("finished before") == 2
    assert {k: v for k, v in files().items() if k.endswith((".caffemodel", ".solverstate"))} == \
        {k: v for k, v in before.items() if k.endswith((".caffemodel", ".solverstate"))}
    # snapshots without run.json: nobody can say which net made them
    (run / "run.json").unlink()
    out = train(*SMALL, *args, check=False)
    assert out.returncode == 2 and "cannot be resumed safely" in out.stderr
    # --restart starts over with the new net
    out = train(*SMALL, *args, "--width", "0.25", "--restart")
    assert "deleted" in out.stdout and "from scratch" in out.stdout
    assert "num_output: 8\n" in (run / "train_val.prototxt").read_text()  # 32 x 0.25: the stem's first conv


def test_bad_input_ends_with_a_message(database, tmp_path):
    run = tmp_path / "run"
    args = ["--run", run, "--pretrain-iter", 2, "--finetune-iter", 2]
    out = train(*SMALL, "--db", tmp_path / "nowhere", *args, check=False)
    assert out.returncode == 2 and "no training database" in out.stderr and "tools/build_db.py" in out.stderr
    assert "Traceback" not in out.stderr
    out = train("--model", "nosuch", "--db", database, *args, check=False)
    assert out.returncode == 2 and "no model 'nosuch'" in out.stderr and "fast_noattr" in out.stderr
    out = train(*SMALL, "--db", database, *args, "--identities", "3", check=False)
    assert out.returncode == 2 and "smaller than the 6 identities" in out.stderr
    out = train(*SMALL, "--db", database, *args, "--min-free", "1e9", check=False)
    assert out.returncode == 2 and "not enough disk space" in out.stderr and "GiB free" in out.stderr
    out = train(*SMALL, "--db", database, *args, "--gpus", "0", check=False)
    if binary_has_cuda(caffe_binary()) and shutil.which("nvidia-smi") and subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True).returncode == 0:
        assert out.returncode == 0, out.stderr  # a GPU build on a GPU machine trains there
    elif binary_has_cuda(caffe_binary()):
        # a GPU build on a machine without a usable GPU: a failure inside Caffe is shown with
        # Caffe's own words, and a rerun recovers
        assert out.returncode == 1 and "rerun the same command" in out.stderr
        assert ("CUDA driver version is insufficient" in out.stderr or "no CUDA-capable device" in out.stderr
                or "cudaSuccess" in out.stderr), out.stderr
    else:  # a CPU-only Caffe is refused before it starts (it would abort inside Caffe)
        assert out.returncode == 2 and "built without CUDA" in out.stderr and "CAFFE_GPU=1 make setup" in out.stderr
    train(*SMALL, "--db", database, *args)
    # two trainings on one run folder: the second is turned away
    with RunLock(run):
        out = train(*SMALL, "--db", database, *args, check=False)
    assert out.returncode == 2 and "another tools/train.py" in out.stderr
    # an attribute-less model trains on the same database (its HDF5 is not read)
    train("--model", "fast_noattr", *SMALL[2:], "--db", database, "--run", tmp_path / "noattr",
          "--pretrain-iter", 2, "--finetune-iter", 2)


def test_make_train_passes_model_data_gpus_run_and_args():
    """`make train` is tools/train.py with the Makefile's variables (dry run: nothing trains)."""
    import shutil
    if shutil.which("make") is None:
        pytest.fail("make is not installed; the README's commands need it")
    out = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(REPO), "train", "MODEL=fast", "DB=work/x-db", "GPUS=0,1",
                          "RUN=runs/r", "ARGS=--width 0.5"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].endswith(
        "tools/train.py --model fast --db work/x-db --run runs/r --gpus 0,1 --width 0.5")
    plain = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(REPO), "train"], capture_output=True, text=True).stdout
    assert plain.strip().splitlines()[-1].rstrip().endswith("--model full --db work/casia-db --run runs/full")


def test_moved_database_and_other_batch_keep_the_snapshots(database, tmp_path):
    """The net fingerprint leaves out data sources and batch sizes (the template writes
    `data_param { source: ... batch_size: ... }` on one line): a copied database and another
    --batch resume the run; the run's own HDF5Data list names the copy's .h5. Other data (other
    attribute rows) is refused, and run folders recorded with the old line-based fingerprints
    are still recognised."""
    import shutil
    run = tmp_path / "run"
    args = ["--run", run, "--pretrain-iter", 2, "--finetune-iter", 2]
    train(*SMALL, "--db", database, *args)
    copy = tmp_path / "copy-db"
    shutil.copytree(database, copy)
    small = [a if a != "8" else "4" for a in SMALL]  # --batch 4
    out = train(*small, "--db", copy, *args)
    assert out.stdout.count("finished before") == 2, out.stdout
    assert (run / "train_attributes.h5.txt").read_text() == f"{(copy / 'train_attributes.h5').resolve()}\n"
    assert f'source: "train_attributes.h5.txt"' in (run / "train_val.prototxt").read_text()
    # a run.json of the line-based fingerprints (version 1): the same net, recognised
    from mtdnn.caffe.snapshots import FINGERPRINTS, _legacy_fingerprint
    state = json.loads((run / "run.json").read_text())
    for kind in ("nets", "solvers"):
        for name in state[kind]:
            text = (run / ("train_val_pretrain.prototxt" if (kind, name) == ("nets", "pretrain") else
                           "train_val.prototxt" if kind == "nets" else f"solver_{name}.prototxt")).read_text()
            state[kind][name] = _legacy_fingerprint(text, FINGERPRINTS[kind][1])
            if kind == "nets":
                state["phases"][name]["net"] = state[kind][name]
    del state["fingerprint_version"]
    (run / "run.json").write_text(json.dumps(state))
    out = train(*small, "--db", copy, *args)
    assert out.stdout.count("finished before") == 2, out.stdout
    # other attribute rows in the copy: not the data the snapshots were trained on
    m = json.loads((copy / "train_manifest.json").read_text())
    m["attributes_sha256"] = "0" * 64
    (copy / "train_manifest.json").write_text(json.dumps(m))
    out = train(*small, "--db", copy, *args, check=False)
    assert out.returncode == 2 and "trained on other data" in out.stderr


def test_truncated_weights_fall_back_to_the_previous_snapshot(database, tmp_path):
    """A power cut leaves a .caffemodel cut short beside an intact .solverstate (Caffe writes the
    weights first, without fsync): the pair is named and set aside, training continues from the
    snapshot before, and fine-tuning never starts from damaged pre-trained weights."""
    from caffe.proto import caffe_pb2
    run = tmp_path / "run"
    args = [*SMALL, "--db", database, "--run", run, "--finetune-iter", 2, "--snapshot", 2]
    train(*args, "--pretrain-iter", 4, "--phase", "pretrain")
    final = run / "pretrain_iter_4.caffemodel"
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 2])
    out = train(*args, "--pretrain-iter", 4, "--phase", "finetune", check=False)
    assert out.returncode == 2 and "not whole" in out.stderr, out.stdout + out.stderr
    assert "pretrain_iter_4.caffemodel does not parse" in out.stdout
    assert (run / "pretrain_iter_4.caffemodel.damaged").is_file() and (run / "pretrain_iter_4.solverstate.damaged").is_file()
    out = train(*args, "--pretrain-iter", 4)
    assert "continuing from iteration 2 (pretrain_iter_2.solverstate)" in out.stdout
    assert (run / "finetune_iter_2.caffemodel").is_file()
    # weights cut at a layer boundary parse, but lack the blobs the .solverstate's history has
    net = caffe_pb2.NetParameter()
    net.ParseFromString(final.read_bytes())
    del net.layer[len(net.layer) // 2:]
    final.write_bytes(net.SerializeToString())
    out = train(*args, "--pretrain-iter", 6)
    assert "pretrain_iter_4.caffemodel holds" in out.stdout and "history blobs" in out.stdout
    assert "continuing from iteration 2 (pretrain_iter_2.solverstate)" in out.stdout
    assert (run / "pretrain_iter_6.caffemodel").is_file() and (run / "pretrain_iter_4.caffemodel.damaged2").is_file()


def test_staged_database_is_refused(database, tmp_path):
    """build_db's working copy (*.partial: an interrupted or running build) is not trained on."""
    import shutil
    staged = tmp_path / "db.partial"
    shutil.copytree(database, staged)
    out = train(*SMALL, "--db", staged, "--run", tmp_path / "run", "--pretrain-iter", 2, "--finetune-iter", 2,
                check=False)
    assert out.returncode == 2 and "working copy of tools/build_db.py" in out.stderr
    assert not (tmp_path / "run" / "pretrain.log").exists()


def test_database_path_with_a_space_and_a_renamed_run_folder(database, tmp_path):
    """Caffe reads an HDF5Data list word by word: a database whose path holds a space trained
    the first phase and aborted in fine-tuning. The run's list names the .h5 through a link in
    the run folder instead. A renamed run folder was refused as "a different net" (its name is
    the net's name) with a hint to --restart, which deletes the snapshots: it is the same net,
    and a run.json of the fingerprints that kept the name (version 2) is recognised."""
    spaced = tmp_path / "my database"
    shutil.copytree(database, spaced)
    run = tmp_path / "run"
    args = [*SMALL, "--db", spaced, "--pretrain-iter", 2, "--finetune-iter", 2]
    out = train(*args, "--run", run)
    assert (run / "finetune_iter_2.caffemodel").is_file(), out.stdout
    assert (run / "train_attributes.h5.txt").read_text() == "train_attributes.h5\n"
    assert (run / "train_attributes.h5").resolve() == (spaced / "train_attributes.h5").resolve()
    moved = tmp_path / "run2"
    run.rename(moved)
    out = train(*args, "--run", moved, check=False)
    assert out.returncode == 0 and out.stdout.count("finished before") == 2, out.stdout + out.stderr
    # a run.json written by version 2 (fingerprints with the net's name), then renamed again
    state = json.loads((moved / "run.json").read_text())
    for name, net in (("pretrain", "train_val_pretrain.prototxt"), ("finetune", "train_val.prototxt")):
        state["nets"][name] = state["phases"][name]["net"] = net_fingerprint((moved / net).read_text(), keep_name=True)
    state["fingerprint_version"] = 2
    (moved / "run.json").write_text(json.dumps(state))
    again = tmp_path / "run3"
    moved.rename(again)
    out = train(*args, "--run", again)
    assert out.stdout.count("finished before") == 2, out.stdout


def test_solverstate_without_history_is_damaged(database, tmp_path):
    """A .solverstate without its history blobs passed the snapshot check, and Caffe aborted on
    every rerun (SGD restores one history blob per parameter). It is now a damaged pair: set
    aside, and the snapshot before it is used."""
    from caffe.proto import caffe_pb2
    run = tmp_path / "run"
    args = [*SMALL, "--db", database, "--run", run, "--pretrain-iter", 4, "--snapshot", 2, "--phase", "pretrain"]
    train(*args)
    state = caffe_pb2.SolverState()
    path = run / "pretrain_iter_4.solverstate"
    state.ParseFromString(path.read_bytes())
    assert len(state.history)
    del state.history[:]
    path.write_bytes(state.SerializeToString())
    out = train(*args, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no history blobs" in out.stdout and "continuing from iteration 2 (pretrain_iter_2.solverstate)" in out.stdout
    assert (run / "pretrain_iter_4.solverstate.damaged").is_file() and (run / "pretrain_iter_4.caffemodel").is_file()


def test_read_only_run_folder_is_a_message(database, tmp_path):
    """A run folder on a read-only file system ended in a traceback; now exit 1 and a message
    that blames the machine, not the input."""
    from faults import read_only_disk
    with read_only_disk(tmp_path / "ro") as ro:
        out = train(*SMALL, "--db", database, "--run", ro / "run", "--pretrain-iter", 2, check=False)
    assert out.returncode == 1 and "Read-only file system" in out.stderr and "Traceback" not in out.stderr, out.stderr
