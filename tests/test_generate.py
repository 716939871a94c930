"""The generator: committed models/ equal its output, solver and data fields follow the
paper (Sec. 4.4), the CLI documents every variant and parameter, bad input stops cleanly."""
import filecmp
import subprocess
import sys

import numpy as np
import pytest

from mtdnn import netgen as generate
from mtdnn.netgen import GenerateError, render_all, render_model
from mtdnn.netgen.render import MODELS
from mtdnn import db
from mtdnn.paths import REPO, data_path
from mtdnn.prototxt import read_net, read_solver

ALL7 = ["Narrow_Eyes", "Big_Nose", "Pointy_Nose", "Chubby", "Double_Chin", "High_Cheekbones", "Male"]
PAPER_BATCH = {"full": 40, "fast": 48, "variants": 40}


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "generate", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def tiny_data(folder, n=4, attributes=2, rows=None):
    """An LMDB of ``n`` random 112x96 faces and an HDF5 attribute list file beside it."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 112, 96, 3), dtype=np.uint8)
    db.write_image_lmdb(folder / "lmdb", zip(images, range(n)))
    source = db.write_attribute_hdf5(folder / "attr.h5",
                                     rng.choice([-1.0, 1.0], (rows or n, attributes)))
    return folder / "lmdb", source


def test_celeba_attribute_names_are_the_header_of_list_attr_celeba():
    with open(data_path("celeba", "list_attr_celeba.txt")) as f:
        f.readline()  # the image count
        header = tuple(f.readline().split())
    assert generate.CELEBA_ATTRIBUTES == header and len(header) == 40
    assert list(generate.GROUPS["all"]) == ALL7


def test_committed_models_equal_the_generator_output(tmp_path):
    render_all(tmp_path)
    cmp = filecmp.dircmp(MODELS, tmp_path)
    stack, problems = [cmp], []
    while stack:
        d = stack.pop()
        problems += [f"only in models/: {x}" for x in d.left_only]
        problems += [f"not committed: {x}" for x in d.right_only]
        _, mismatch, errors = filecmp.cmpfiles(d.left, d.right, d.common_files, shallow=False)
        problems += [f"differs: {d.left}/{x}" for x in mismatch + errors]
        stack += d.subdirs.values()
    assert not problems, "run `python -m generate all`:\n" + "\n".join(problems)
    assert generate.compare_all(MODELS) == []


def test_all_command_writes_and_checks(tmp_path):
    out = run_cli("all", "--out", tmp_path / "m")
    assert out.returncode == 0, out.stderr
    assert run_cli("all", "--check", "--out", tmp_path / "m").returncode == 0
    (tmp_path / "m" / "fast" / "deploy.prototxt").write_text("edited\n")
    (tmp_path / "m" / "stray.txt").write_text("x\n")
    out = run_cli("all", "--check", "--out", tmp_path / "m")
    assert out.returncode == 1
    assert "differs: fast/deploy.prototxt" in out.stdout and "not generated: stray.txt" in out.stdout


def test_help_lists_every_variant_and_parameter():
    top = run_cli("--help").stdout
    model = run_cli("model", "--help").stdout
    for name in [*generate.VARIANTS, *generate.ALIASES]:
        assert name in top and name in model
    for flag in ["--variant", "--block", "--config", "--attributes", "--identities", "--width",
                 "--batch", "--pretrain-iter", "--finetune-iter", "--lambda1", "--train-lmdb",
                 "--test-lmdb", "--train-hdf5", "--test-hdf5", "--out", "--check-paths",
                 "--absolute-paths"]:
        assert flag in model and flag in top
    assert "Male" in model and "Narrow_Eyes" in model  # the attribute names are listed


def test_variant_folders_and_aliases():
    assert set(generate.VARIANTS) == {
        "full", "fast", "full_noattr", "fast_noattr", "block_variants", "config2", "config3",
        "attr_eye", "attr_nose", "attr_global"}
    for alias, target in {"block_full": "full", "block_fast": "fast", "config1": "fast",
                          "attr_all": "fast", "attr_none": "fast_noattr"}.items():
        assert generate.variant(alias) is generate.VARIANTS[target]
    expected = {"deploy.prototxt", "solver_pretrain.prototxt", "solver_finetune.prototxt",
                "readme.md", "train_val.prototxt"}
    for name, spec in generate.VARIANTS.items():
        files = {p.name for p in (MODELS / name).iterdir()}
        assert files == expected | ({"train_val_pretrain.prototxt"} if spec.attributes else set())
        assert spec.identities == 10575
    assert (MODELS / "README.md").is_file()


@pytest.mark.parametrize("name", sorted(generate.VARIANTS))
def test_solvers_follow_section_4_4(name):
    spec = generate.VARIANTS[name]
    folder = MODELS / name
    pre = read_solver(folder / "solver_pretrain.prototxt")
    fine = read_solver(folder / "solver_finetune.prototxt")
    for s, iters, lr, steps in ((pre, 70000, 0.01, [40000, 58000]), (fine, 30000, 0.001, [10000, 20000])):
        assert (s.max_iter, s.lr_policy, list(s.stepvalue)) == (iters, "multistep", steps)
        assert s.base_lr == pytest.approx(lr) and s.gamma == pytest.approx(0.1)
        assert s.momentum == pytest.approx(0.9) and s.weight_decay == pytest.approx(0.0005)
        assert s.type == "SGD" and s.solver_mode == s.CPU
        assert (folder / s.net).is_file()
        assert len(s.test_iter) == 1 and s.test_iter[0] * PAPER_BATCH[spec.block] >= 10575
        assert 0 < s.test_interval <= iters and 0 < s.snapshot <= iters
    assert (pre.snapshot_prefix, fine.snapshot_prefix) == ("pretrain", "finetune")
    assert pre.net == ("train_val_pretrain.prototxt" if spec.attributes else "train_val.prototxt")
    assert fine.net == "train_val.prototxt"


def _loss_weights(net):
    return {layer.name: list(layer.loss_weight) for layer in net.layer if "Loss" in layer.type}


@pytest.mark.parametrize("name", sorted(generate.VARIANTS))
def test_train_val_data_layers_and_loss_weights(name):
    spec = generate.VARIANTS[name]
    batch = PAPER_BATCH[spec.block]
    nets = {"train_val.prototxt": 0.1 if spec.attributes else None}
    if spec.attributes:
        nets["train_val_pretrain.prototxt"] = None  # lambda1 = 0: no attribute head at all
    for file, lambda1 in nets.items():
        net = read_net(MODELS / name / file)
        data = [l for l in net.layer if l.type == "Data"]
        assert [l.include[0].phase for l in data] == [0, 1]  # TRAIN, TEST
        for layer, mirror in zip(data, (True, False)):
            assert list(layer.top) == ["data", "label"]
            t = layer.transform_param
            assert t.scale == 0.0078125 and list(t.mean_value) == [127.5] * 3 and t.mirror == mirror
            assert layer.data_param.batch_size == batch and layer.data_param.backend == 1  # LMDB
        hdf5 = [l for l in net.layer if l.type == "HDF5Data"]
        weights = _loss_weights(net)
        assert weights.pop("id_loss") == [1.0]
        if lambda1 is None:
            assert not hdf5 and not weights
            assert not any(l.name.startswith("attr") for l in net.layer)
        else:
            assert weights == {"attr_loss": [pytest.approx(lambda1)]}
            assert [list(l.top) for l in hdf5] == [["attributes"]] * 2
            assert all(l.hdf5_data_param.batch_size == batch and not l.hdf5_data_param.shuffle
                       for l in hdf5)
        acc = [l for l in net.layer if l.type == "Accuracy"]
        assert len(acc) == 1 and acc[0].include[0].phase == 1


def test_every_generated_file_parses():
    for path in sorted(MODELS.rglob("*.prototxt")):
        (read_solver if path.name.startswith("solver") else read_net)(path)


def test_small_model_from_the_command_line(tmp_path):
    lmdb, source = tiny_data(tmp_path, attributes=2)
    out = run_cli("model", "--block", "fast", "--width", "0.25", "--identities", "100",
                  "--attributes", "Male,Big_Nose", "--batch", "16", "--pretrain-iter", "700",
                  "--finetune-iter", "300", "--train-lmdb", lmdb, "--train-hdf5", source,
                  "--out", tmp_path / "small")
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "small"
    pre = read_solver(folder / "solver_pretrain.prototxt")
    fine = read_solver(folder / "solver_finetune.prototxt")
    assert (pre.max_iter, list(pre.stepvalue)) == (700, [400, 580])
    assert (fine.max_iter, list(fine.stepvalue)) == (300, [100, 200])
    net = read_net(folder / "train_val.prototxt")
    layers = {l.name: l for l in net.layer}
    assert layers["conv1"].convolution_param.num_output == 8 and layers["fc5"].inner_product_param.num_output == 256
    assert layers["id_fc"].inner_product_param.num_output == 100
    assert layers["attr_pred"].inner_product_param.num_output == 2
    sources = [l.data_param.source for l in net.layer if l.type == "Data"]
    assert sources == [str(lmdb)] * 2  # the test set defaults to the training set
    assert "custom model" in (folder / "readme.md").read_text()


def test_render_model_api_and_absolute_paths(tmp_path, monkeypatch):
    lmdb, source = tiny_data(tmp_path, attributes=1)
    monkeypatch.chdir(tmp_path)
    paths = render_model(tmp_path / "run", variant="attr_eye", train_lmdb="lmdb",
                         train_hdf5=source.name, absolute_paths=True, identities=4)
    assert {p.name for p in paths} >= {"train_val.prototxt", "deploy.prototxt", "solver_finetune.prototxt"}
    solver = read_solver(tmp_path / "run" / "solver_finetune.prototxt")
    assert solver.net == str(tmp_path / "run" / "train_val.prototxt")
    assert solver.snapshot_prefix == str(tmp_path / "run" / "finetune")
    net = read_net(tmp_path / "run" / "train_val.prototxt")
    assert {l.data_param.source for l in net.layer if l.type == "Data"} == {str(lmdb)}
    assert {l.hdf5_data_param.source for l in net.layer if l.type == "HDF5Data"} == {str(source)}
    assert not solver.HasField("random_seed")  # Caffe's time-based seed unless one is asked for
    render_model(tmp_path / "seeded", variant="fast", random_seed=7, check_paths=False)
    assert read_solver(tmp_path / "seeded" / "solver_pretrain.prototxt").random_seed == 7


@pytest.mark.parametrize("params, message", [
    (dict(variant="nope"), "unknown variant 'nope'"),
    (dict(width=0), "width must be a positive number"),
    (dict(width=-0.5), "width must be a positive number"),
    (dict(batch=0), "batch must be a positive integer"),
    (dict(batch=-4), "batch must be a positive integer"),
    (dict(attributes="Male,Smile"), "unknown attribute(s) 'Smile'"),
    (dict(attributes="Male,Male"), "listed twice: Male"),
    (dict(config=4), "config 4"),
    (dict(block="deep"), "block 'deep'"),
    (dict(train_lmdb="/nonexistent/lmdb"), "--train-lmdb: /nonexistent/lmdb does not exist"),
    (dict(colour="red"), "unknown parameter(s): colour"),
    (dict(random_seed=-1), "random_seed must be an integer >= 0"),
])
def test_bad_input_raises_a_clear_error(tmp_path, params, message):
    with pytest.raises(GenerateError) as e:
        render_model(tmp_path / "out", **params)
    assert message in str(e.value)
    assert not (tmp_path / "out").exists()


def test_data_paths_must_fit_the_model(tmp_path):
    lmdb, source = tiny_data(tmp_path, n=4, attributes=2, rows=3)
    with pytest.raises(GenerateError, match="3 attribute rows but --train-lmdb holds 4 records"):
        render_model(tmp_path / "a", attributes="Male,Big_Nose", train_lmdb=lmdb, train_hdf5=source)
    with pytest.raises(GenerateError, match=r"shape \(3, 2\), but the model predicts 7"):
        render_model(tmp_path / "b", train_lmdb=lmdb, train_hdf5=source)
    with pytest.raises(GenerateError, match="not an LMDB folder"):
        render_model(tmp_path / "c", train_lmdb=tmp_path)
    with pytest.raises(GenerateError, match="relative paths are taken from the run folder"):
        render_model(tmp_path / "d", train_lmdb="lmdb")
    # placeholders are checked only on request
    render_model(tmp_path / "e", variant="fast_noattr")
    with pytest.raises(GenerateError, match="data/casia_train_lmdb does not exist"):
        render_model(tmp_path / "f", variant="fast_noattr", check_paths=True)


@pytest.mark.parametrize("args, message", [
    (["model", "--variant", "nope", "--out", "x"], "unknown variant 'nope'"),
    (["model", "--width", "0", "--out", "x"], "--width: must be positive"),
    (["model", "--batch", "-1", "--out", "x"], "--batch: must be positive"),
    (["model", "--attributes", "Beard", "--out", "x"], "unknown attribute(s) 'Beard'"),
    (["model", "--train-lmdb", "/nonexistent/lmdb", "--out", "x"], "/nonexistent/lmdb does not exist"),
])
def test_cli_bad_input_stops_without_traceback(tmp_path, args, message):
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x").exists()


def test_paper_figures_agree_across_tables_and_with_the_text():
    """mtdnn.paper holds each table's figures once; one network's figures in two tables agree,
    the text's claims hold, and every model folder's rows are rows of the tables."""
    from mtdnn import paper
    rank1 = {row: fig[2] for row, fig in paper.TABLES_2_3.items()}
    ablation = {(t, row): fig for t, (_, rows) in paper.TABLES_5_7.items() for row, fig in rows.items()}
    assert rank1["Full-Model"] == ablation["5", "Full-Block"][0] == 77.74
    for row in (("5", "Fast-Block"), ("6", "Configuration-1"), ("7", "All attributes")):
        assert ablation[row] == ablation["5", "Fast-Block"] and ablation[row][0] == rank1["Fast-Model"]
    assert ablation["7", "No attribute"][0] == rank1["Fast-Model (without Attribute)"]
    # Sec. 4.7: 79.24 % TAR, 1.78 % over Lightened CNN; Sec. 4.7 (5): ours beats MOON everywhere
    assert round(paper.TABLES_2_3["Full-Model"][3] - paper.TABLES_2_3["Lightened CNN"][3], 2) == 1.78
    assert tuple(paper.TABLE_4) == paper.PAPER_ATTRIBUTES == tuple(ALL7)
    assert all(ours > moon for moon, ours in paper.TABLE_4.values())
    assert set(paper.MODEL_ROWS) == set(generate.VARIANTS) and paper.TABLE_4_MODEL in paper.MODEL_ROWS
    for name, rows in paper.MODEL_ROWS.items():
        for table, row in rows.items():
            assert row in (paper.TABLES_2_3 if table == "2" else paper.TABLES_5_7[table][1]), (name, row)
        # the rendered readme shows the figures of exactly these rows
        assert {r for _, r, _, _ in generate.VARIANTS[name].paper} - {"Ours"} == set(rows.values())


def _imports(path):
    """Top-level names of the modules a Python file imports (relative imports: '.')."""
    import ast
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else node.module.split(".")[0])
    return names


def test_generate_imports_mtdnn_and_never_the_reverse():
    for path in sorted((REPO / "mtdnn").rglob("*.py")):
        assert "generate" not in _imports(path), f"{path} imports generate: the library must not"
    seen = set()
    for path in sorted((REPO / "generate").glob("*.py")):
        own = _imports(path) - set(sys.stdlib_module_names) - {"__future__"}
        assert own <= {"mtdnn", "."}, f"{path} imports {own - {'mtdnn', '.'}}: generate/ is mtdnn's command line"
        seen |= own
    assert "mtdnn" in seen
