"""The reproduction's arithmetic (mtdnn.reproduce): figures read from the eval tools' JSON,
means over seeds, paired differences with hand-checked t intervals and verdicts."""
import json
import math

import pytest

from mtdnn.reproduce import format_differences, format_summary, paired_difference, run_figures, summarise, \
    t_interval


def write_run(folder, view1, tar=0.5, dir_=0.3, rank1=0.2, attrs=(0.8, 0.6), blufr_excluded=4038):
    ev = folder / "eval"
    ev.mkdir(parents=True)
    (ev / "lfw.json").write_text(json.dumps({"accuracy": 0.9, "view1": {"accuracy": view1}}))
    (ev / "blufr.json").write_text(json.dumps({
        "standard": not blufr_excluded, "excluded_people": blufr_excluded,
        "verification": {"tar_mean_minus_std": tar, "tar_mean": tar + 0.1, "tar_std": 0.1},
        "open_set": {"dir_mean_minus_std": dir_, "dir_mean": dir_ + 0.05, "dir_std": 0.05}}))
    (ev / "identification.json").write_text(json.dumps({"results": [
        {"distractors": 10, "rank1": 0.9}, {"distractors": 1000, "rank1": rank1}]}))
    if attrs:
        (ev / "attributes.json").write_text(json.dumps({"attributes": [
            {"accuracy": a, "balanced_accuracy": a - 0.1} for a in attrs]}))
    return folder


def test_run_figures_reads_every_eval(tmp_path):
    f = run_figures(write_run(tmp_path / "r", 0.7))
    assert f == pytest.approx({"lfw_view1": 0.7, "blufr_unseen_tar": 0.5, "blufr_unseen_dir": 0.3, "ident_rank1": 0.2,
                               "ident_distractors": 1000, "attr_accuracy": 0.7, "attr_balanced": 0.6})
    assert "attr_accuracy" not in run_figures(write_run(tmp_path / "n", 0.7, attrs=()))
    assert run_figures(tmp_path / "nothing") == {}


def test_t_interval_by_hand():
    # mean 2, sd 1, n 3: half width t(0.975, 2) * 1 / sqrt(3) = 4.3027 / 1.7321 = 2.4841
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2 - 2.48414, abs=1e-4) and high == pytest.approx(2 + 2.48414,
                                                                                                  abs=1e-4)
    m, lo, hi = t_interval([0.4])
    assert m == 0.4 and math.isnan(lo) and math.isnan(hi)


def test_paired_differences_and_verdicts():
    runs = {"a": {1: {"x": 0.80}, 2: {"x": 0.82}, 3: {"x": 0.81}},
            "b": {1: {"x": 0.70}, 2: {"x": 0.71}, 3: {"x": 0.72}, 4: {"x": 0.99}},  # seed 4 is unpaired
            "c": {1: {"x": 0.85}, 2: {"x": 0.75}, 3: {"x": 0.80}}}
    d = paired_difference(runs, "a", "b", "x")
    assert d["n"] == 3 and d["diffs"] == pytest.approx([0.10, 0.11, 0.09]) and d["verdict"] == "a better"
    assert paired_difference(runs, "b", "a", "x")["verdict"] == "a better"
    assert paired_difference(runs, "a", "c", "x")["verdict"] == "not distinguishable from seed noise"
    one = paired_difference({"a": {1: {"x": 1.0}}, "b": {1: {"x": 0.0}}}, "a", "b", "x")
    assert "cannot be told from noise" in one["verdict"]
    assert paired_difference(runs, "a", "missing", "x") is None
    assert "| a − b |" in "\n".join(format_differences([d]))


def test_summary_table():
    runs = {"fast": {1: {"lfw_view1": 0.6}, 2: {"lfw_view1": 0.7}}, "fast_noattr": {1: {"lfw_view1": 0.5}}}
    s = summarise(runs)
    assert s["fast"]["lfw_view1"]["mean"] == pytest.approx(0.65) and s["fast"]["lfw_view1"]["n"] == 2
    assert s["fast"]["lfw_view1"]["std"] == pytest.approx(0.0707107, abs=1e-6)
    text = "\n".join(format_summary(s))
    assert "| fast | 65.00 ± 7.07 (n=2) |" in text and "| fast_noattr | 50.00 ± - (n=1) |" in text


def run_tool(*args):
    import subprocess
    import sys
    from mtdnn.paths import REPO
    return subprocess.run([sys.executable, str(REPO / "tools" / "reproduce.py"), *map(str, args)],
                          capture_output=True, text=True)


def test_report_from_run_folders(tmp_path):
    """--report-only: the tables, verdicts, plot and notes from the runs' eval JSON."""
    demo, work, out = tmp_path / "demo", tmp_path / "work", tmp_path / "out"
    (demo / "runs" / "moon" / "eval").mkdir(parents=True)
    (demo / "runs" / "moon" / "eval" / "attributes.json").write_text(json.dumps({"attributes": [
        {"accuracy": 0.9, "balanced_accuracy": 0.8}, {"accuracy": 0.7, "balanced_accuracy": 0.6}]}))
    for seed, (a, b) in enumerate([(0.80, 0.70), (0.82, 0.71), (0.81, 0.72)], 1):
        write_run(work / "runs" / f"fast_s{seed}", a)
        write_run(work / "runs" / f"fast_noattr_s{seed}", b, attrs=())
    r = run_tool("--report-only", "--demo-work", demo, "--work", work, "--out", out, "--models",
                 "fast,fast_noattr", "--seeds", "1,2,3", "--note", "a note")
    assert r.returncode == 0, r.stderr
    text = (out / "README.md").read_text()
    assert "| fast | 81.00 ± 1.00 (n=3) |" in text and "| fast − fast_noattr | LFW View 1 accuracy | +10.00 |" in text
    assert "fast better" in text and "- a note" in text and "--note" not in text.split("## Budget")[0]
    assert "MOON, the attribute teacher" in text and "80.00 %" in text
    res = json.loads((out / "results.json").read_text())
    assert res["summary"]["fast_noattr"]["lfw_view1"]["n"] == 3 and (out / "reproduction.png").stat().st_size > 1000


def test_missing_demo_is_a_clear_error(tmp_path):
    r = run_tool("--demo-work", tmp_path / "nodemo", "--work", tmp_path / "w", "--out", tmp_path / "o")
    assert r.returncode == 1 and "run `make demo`" in r.stderr and "Traceback" not in r.stderr


def test_blufr_on_training_people_is_never_read(tmp_path):
    """A blufr.json evaluated on all of LFW (the training people included) gives no BLUFR figure;
    one without the excluded people gives its mean - std."""
    f = run_figures(write_run(tmp_path / "all", 0.7, blufr_excluded=0))
    assert "blufr_unseen_tar" not in f and "blufr_tar" not in f and f["lfw_view1"] == 0.7
    old = tmp_path / "old"  # a blufr.json of the format before the fix: all of LFW, no "standard"
    write_run(old, 0.7)
    (old / "eval" / "blufr.json").write_text(json.dumps({"verification": {"tar_mean": 0.5}, "open_set": {"dir_mean": 0.3}}))
    assert not {"blufr_unseen_tar", "blufr_tar"} & set(run_figures(old))


def test_report_from_an_earlier_results_json_drops_blufr_on_training_people(tmp_path):
    runs = {m: {str(s): {"lfw_view1": v + s / 100, "blufr_tar": 0.1234, "blufr_dir": 0.0123, "ident_rank1": 0.05,
                        "ident_distractors": 3210} for s in (1, 2, 3)} for m, v in (("fast", 0.8), ("fast_noattr", 0.7))}
    old = {"command": "tools/reproduce.py --seeds 1,2,3 --out docs/reproduction", "wall_seconds": None,
           "runs": runs, "moon": {"attr_accuracy": 0.79, "attr_balanced": 0.75, "images": 399}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    out = tmp_path / "out"
    r = run_tool("--report-only", "--from-results", tmp_path / "old.json", "--out", out, "--models", "fast,fast_noattr",
                 "--seeds", "1,2,3", "--demo-work", tmp_path / "nodemo", "--work", tmp_path / "nowork")
    assert r.returncode == 0, r.stderr
    text = (out / "README.md").read_text()
    assert "tools/reproduce.py --seeds 1,2,3 --out docs/reproduction" in text and "--from-results" not in text
    assert "| fast | 82.00 ± 1.00 (n=3) |" in text and "fast better" in text and "79.00 %" in text
    assert "BLUFR" not in text.split("## The paper")[0].split("## Results")[1]  # no column of dashes
    assert "12.34" not in text and "1.23" not in text  # the BLUFR figures on all of LFW are gone
    res = json.loads((out / "results.json").read_text())
    assert "blufr_tar" not in res["runs"]["fast"]["1"] and res["moon"]["images"] == 399
    bad = run_tool("--from-results", tmp_path / "old.json", "--out", out)
    assert bad.returncode == 2 and "--report-only" in bad.stderr
