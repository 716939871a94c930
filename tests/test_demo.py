"""The demo end to end (tools/demo.py --quick): raw LFW and CelebA photos through MTCNN
alignment, MOON, labelling and voting, LMDB/HDF5, Caffe training of the multi-task net,
feature extraction, the three evaluations and the report, all with the project's tools on
real data; then a rerun that reuses every stage, and --redo of the last ones."""
import json
import re
import subprocess
import sys

import pytest

from mtdnn.paths import REPO

DEMO = REPO / "tools" / "demo.py"
STAGES = ["moon", "lists", "align_lfw", "train_list", "build_db", "label", "check_db", "train", "extract_lfw",
          "extract_celeba", "attr_list", "extract_attributes", "eval_lfw", "eval_identification",
          "eval_attributes", "report", "summary"]


def demo(*args, timeout=600):
    return subprocess.run([sys.executable, str(DEMO), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    out = demo("--quick", "--work", work)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    return work, out


def test_quick_demo_runs_every_stage_with_the_tools(quick):
    work, out = quick
    # a line per stage with the elapsed time, the exact command before each tool runs
    heads = re.findall(r"^== (\d\d:\d\d) \[(\d+)/(\d+)\] (\w+): ", out.stdout, re.M)
    assert [h[3] for h in heads] == STAGES and all(h[2] == str(len(STAGES)) for h in heads)
    for tool in ("align_faces", "train_attributes", "build_db", "label_attributes", "check_db", "train",
                 "extract_features", "eval_lfw", "eval_identification", "eval_attributes", "report"):
        assert re.search(rf"^\$ \S*python\S* \S*tools/{tool}\.py ", out.stdout, re.M), tool
    assert "caffe train -solver solver_pretrain.prototxt" in out.stdout  # train.py's own lines come through
    for name in STAGES:
        marker = json.loads((work / ".done" / f"{name}.json").read_text())
        assert marker["stage"] == name and marker["seconds"] >= 0
    # what the stages made
    run = work / "runs" / "fast_w0.125"
    for path in ("lfw-112x96/landmarks.txt", "celeba-112x96/landmarks.txt", "lfw-db/train_lmdb/data.mdb",
                 "lfw-db/train_attributes.h5", "runs/moon/moon.caffemodel", "runs/moon/train.png",
                 "features/lfw_fc5.npy", "features/celeba_fc5.npy", "features/celeba_heldout_attr.npy",
                 "results.md", "report.md", "timings.json"):
        assert (work / path).is_file(), path
    for path in ("run.json", "pretrain.png", "finetune.png", "eval/lfw.json", "eval/lfw_roc.png",
                 "eval/identification.json", "eval/identification_cmc.png", "eval/attributes.json"):
        assert (run / path).is_file(), path
    # the training labels are MOON's votes, not build_db's placeholder zeros
    import h5py
    with h5py.File(work / "lfw-db" / "train_attributes.h5") as f:
        labels = f["attributes"][:]
    assert set(labels.ravel().tolist()) <= {-1.0, 1.0}


def test_quick_demo_report_has_the_tables(quick):
    work, _ = quick
    report = (work / "report.md").read_text()
    for heading in ("## Data", "## Models", "## Results", "## Plots", "## Stages", "## The paper's tables"):
        assert heading in report, heading
    assert re.search(r"\*\*LFW View 1\*\*: accuracy \*\*\d+\.\d\d %\*\*", report)
    assert "| distractors | rank-1 (%) |" in report
    assert "| attribute | multi-task net | MOON (its teacher) | majority class |" in report
    for name in ("Narrow_Eyes", "Big_Nose", "Pointy_Nose", "Chubby", "Double_Chin", "High_Cheekbones", "Male"):
        assert re.search(rf"^\| {name} \| \d+\.\d\d \(\d+\.\d\d\)( \*chance\*)? \| \d+\.\d\d", report, re.M), name
    # extra columns marked as such, the figure of faces, TAR cells beyond the pairs out of range
    assert "| net AUC (extra) | MOON AUC (extra) |" in report
    assert "![faces.png](faces.png)" in report and (work / "faces.png").stat().st_size > 10_000
    assert "out of range (FAR < 1/" in report
    assert "| 8 | train |" in report and "tools/train.py --model fast" in report
    # the paper's tables from tools/report.py, ours beside them
    assert "Tab. 2: MegaFace rank-1" in report and "Tab. 4: attribute prediction accuracy" in report
    # toy scale: never in bold in the paper's columns, the scale on the row
    assert "**ours" not in report and "ours: Fast-Model (fast_w0.125)" in report and "(toy scale)" in report
    assert "![runs/fast_w0.125/pretrain.png](runs/fast_w0.125/pretrain.png)" in report
    results = json.loads((work / "runs" / "fast_w0.125" / "eval" / "identification.json").read_text())
    assert results["n_probes"] >= 8  # the quick plan aligns some peopleDevTest people as probes


def test_rerun_reuses_stages_and_redo_redoes_the_rest(quick):
    work, _ = quick
    again = demo("--quick", "--work", work, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    reused = re.findall(r"^== \d\d:\d\d \[\d+/\d+\] (\w+): .*done before .*reused$", again.stdout, re.M)
    glue = {"lists", "train_list", "attr_list", "summary"}  # glue always runs (under a second)
    assert reused == [s for s in STAGES if s not in glue]
    assert "tools/align_faces.py" not in again.stdout and "caffe train" not in again.stdout
    redo = demo("--quick", "--work", work, "--redo", "eval_identification", timeout=300)
    assert redo.returncode == 0, redo.stderr[-3000:]
    ran = re.findall(r"^\$ \S+ \S*tools/(\w+)\.py", redo.stdout, re.M)
    assert ran == ["eval_identification", "eval_attributes", "report"]
    bad = demo("--quick", "--work", work, "--redo", "nosuch")
    assert bad.returncode == 2 and "no such stage" in bad.stderr
    # another seed: the net is trained afresh (not taken for finished), and run.json says which seed
    seeded = demo("--quick", "--work", work, "--seed", "2", timeout=600)
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    assert re.search(r"^\$ .*tools/train\.py .*--seed 2 .*--restart$", seeded.stdout, re.M)
    assert re.search(r"^\[pretrain\] \d+ iterations, from scratch", seeded.stdout, re.M)
    assert "finished before" not in seeded.stdout
    assert json.loads(next((work / "runs").glob("*/run.json")).read_text())["overrides"]["random_seed"] == 2


def test_runner_restarts_a_stage_whose_command_changed(tmp_path):
    """A stage with a restart_flag gets it when it finished before with another command or is
    redone, not on its first run nor on a resumed one; its fingerprint ignores the flag."""
    from mtdnn.pipeline import Runner, Stage
    log = tmp_path / "argv.txt"
    def stages(word):
        cmd = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')",
               log, word]
        return [Stage("write", "write", cmd, restart_flag="--restart")]
    def run(word, redo=None):
        runner = Runner(tmp_path / "work", out=lambda s: None)
        if redo:
            runner.forget_from(stages(word), redo)
        runner.run(stages(word))
    run("a")
    run("a")  # reused: nothing written
    run("b")  # finished before with "a"
    (tmp_path / "work" / ".done" / "write.json").unlink()  # as after an interruption
    run("b")
    run("b", redo="write")
    run("b")  # the fingerprint of "b" was kept: reused
    assert log.read_text().splitlines() == ["a", "b --restart", "b", "b --restart"]


def test_missing_data_ends_with_a_message(tmp_path):
    out = demo("--quick", "--work", tmp_path / "w", "--data", tmp_path / "nodata")
    assert out.returncode == 2 and "make data" in out.stderr and "--data" in out.stderr and "Traceback" not in out.stderr


def test_every_caffe_stage_runs_with_a_fixed_number_of_blas_threads(tmp_path):
    """Caffe's parameter gradients depend on OpenBLAS's thread count (measured: the Fast-Model's
    backward pass differs bit for bit between 1 and 2 threads), and OpenBLAS takes the machine's
    core count unless told: the demo's training and feature extraction pin it, so a machine with
    more cores trains the same net."""
    from dataclasses import replace
    from mtdnn.demo import FULL, Demo
    (tmp_path / "celeba" / "img_align_celeba").mkdir(parents=True)   # CelebA there: the stages that read it too
    for name in ("list_attr_celeba.txt", "identity_CelebA.txt"):
        (tmp_path / "celeba" / name).write_text("0\n")
    d = Demo(FULL, work=tmp_path, data=tmp_path)
    stages = {s.name: s for s in d.stages()}
    cmd = [str(c) for c in stages["train"].cmd]
    assert cmd[cmd.index("--threads") + 1] == "1"
    for name in ("extract_lfw", "extract_celeba", "extract_attributes"):
        env = stages[name].env
        assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "1", name
    d3 = Demo(replace(FULL, threads=3), work=tmp_path, data=tmp_path)
    assert {s.name: s for s in d3.stages()}["extract_lfw"].env["OPENBLAS_NUM_THREADS"] == "3"


def test_without_celeba_the_recognition_half_runs_alone(tmp_path):
    """Issue 20, item 7: a data folder without CelebA (Drive refused, or the user declined it)
    still gives a trained net and an LFW figure; the demo says so once, leaves out the stages
    that read CelebA or MOON, trains with lambda1 = 0, and its report marks them skipped."""
    from mtdnn.paths import data_root
    src = data_root()
    if not (src / "lfw" / "lfw-deepfunneled").is_dir() or not (src / "mtcnn" / "det1.caffemodel").is_file():
        pytest.skip(f"needs LFW and the MTCNN models in {src} (make data)")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("lfw", "mtcnn"):          # everything but celeba/
        (data / name).symlink_to(src / name)
    work = tmp_path / "work"
    out = demo("--quick", "--work", work, "--data", data)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    assert out.stdout.count("the recognition half runs alone") == 1
    heads = re.findall(r"^== \d\d:\d\d \[\d+/(\d+)\] (\w+): ", out.stdout, re.M)
    skipped = {"moon", "label", "extract_celeba", "attr_list", "extract_attributes", "eval_identification",
               "eval_attributes"}
    assert [h[1] for h in heads] == [s for s in STAGES if s not in skipped]
    assert re.search(r"tools/train\.py .*--lambda1 0 ", out.stdout)
    assert json.loads((work / "runs" / "fast_w0.125" / "eval" / "lfw.json").read_text())["view1"]["accuracy"] >= 0
    assert not (work / "runs" / "moon").exists()
    report = (work / "report.md").read_text()
    assert "## Skipped" in report and all(f"| {s} | skipped (no CelebA) |" in report for s in skipped)
    assert "**LFW View 1**" in report and "lambda1 = 0)" in report
