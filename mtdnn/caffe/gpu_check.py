"""Checking and measuring Caffe on an NVIDIA GPU: the steps of tools/gpu_check.py (make gpu-check)
and its report. Each step takes :class:`CheckOptions` and a scratch folder and returns a dict
(``ok``, ``summary``, its figures); :func:`run_checks` runs them in order, recording a failing
step and going on. The pure parts (nvidia-smi's list, gtest and cuDNN logs, differences, the
Markdown report) need no GPU and are tested in tests/test_gpu_check.py.

``python -m mtdnn.caffe.gpu_check MODEL GPU WORK`` is one GPU-vs-CPU comparison in a process of
its own (a Caffe abort stays contained), printed as one JSON line.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..paper import PAPER_ATTRIBUTES
from ..paths import REPO, data_root
from .run import CaffeTimeFailed, caffe_time, timing_net


@dataclass
class CheckOptions:
    gpu: int = 0               # the GPU checked (nvidia-smi's index)
    iterations: int = 10       # caffe time iterations
    tolerance: float = 1e-2    # largest relative GPU-vs-CPU difference that passes


VENV = Path(sys.executable).parent.parent
CAFFE_PREFIX = VENV / "caffe"
GTEST_BIN = VENV / "caffe.build" / "build" / "test" / "test.testbin"
GTEST_CWD = VENV / "caffe.build" / "src"
# GPU instances of the typed tests (/2 float, /3 double) and the cuDNN tests.
GTEST_GPU_FILTER = "*LayerTest/2.*:*LayerTest/3.*:SGDSolverTest/2.*:SGDSolverTest/3.*:CuDNN*"
STEPS = ("device", "cudnnlog", "gtest", "compare", "time", "train", "extract")
# (model, batch, CAFFE_CUDNN_TF32): FP32 as FP32 (FMA math), and once with TF32 allowed.
TIMINGS = (("full", 40, "0"), ("fast", 48, "0"), ("full", 256, "0"), ("full", 40, "1"))
# cuDNN 9's messages when a library it dlopens is missing (strings of libcudnn_graph.so.9 and the
# loader's own "cannot open shared object file").
CUDNN_LOAD_FAILURE = re.compile(r"(?i)(could not (open|load) (?!symbol)|cannot (load|open) (?!symbol)|"
                                r"failed to (open|load)|cannot open shared object)")


# ---------------------------------------------------------------- pure helpers (tested)

def find_gpus(nvidia_smi: str = "nvidia-smi") -> list[dict]:
    """The machine's NVIDIA GPUs as nvidia-smi lists them; [] when there is none or no driver."""
    try:
        out = subprocess.run([nvidia_smi, "--query-gpu=index,name,memory.total,driver_version",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    gpus = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit():
            gpus.append({"index": int(parts[0]), "name": parts[1], "memory_mib": int(float(parts[2])),
                         "driver": parts[3]})
    return gpus


def max_rel_diff(a, b) -> float:
    """Largest |a - b| relative to the largest |b| (b: the CPU reference); 0 for two zero arrays."""
    import numpy as np
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    scale = float(np.abs(b).max()) if b.size else 0.0
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


def cudnn_log_problems(log: str) -> dict:
    """cuDNN's debug log (CUDNN_LOGLEVEL_DBG >= 1): its error and warning counts, and each distinct
    line that says a library could not be loaded, with the library names it mentions."""
    failures = []
    for line in log.splitlines():
        text = line.strip().removeprefix("e!").removeprefix("w!").strip()
        if CUDNN_LOAD_FAILURE.search(text) and text not in failures:
            failures.append(text)
    libraries = sorted({m.group(0).rstrip(".:;") for f in failures
                        for m in re.finditer(r"lib[A-Za-z0-9_+-]+(\.so[.0-9]*)?", f)})
    return {"errors": len(re.findall(r"^E! CuDNN", log, re.M)),
            "warnings": len(re.findall(r"^W! CuDNN", log, re.M)),
            "load_failures": failures, "libraries_not_loaded": libraries}


def parse_gtest(log: str) -> dict:
    """Counts of a gtest run: passed, failed (with the failed tests' names)."""
    passed = re.search(r"\[  PASSED  \] (\d+) test", log)
    failed = re.findall(r"^\[  FAILED  \] ([^\s,]+)", log, re.M)
    failed = [f for f in dict.fromkeys(failed) if not f[0].isdigit()]
    return {"passed": int(passed.group(1)) if passed else 0, "failed": len(failed), "failed_tests": failed}


def safe_name(gpu_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", gpu_name).strip("-") or "gpu"


def render_markdown(report: dict) -> str:
    """The report as a short Markdown page (docs/gpu/<name>.md)."""
    g = report["gpu"]
    lines = [f"# Caffe on {g['name']}", "",
             f"Measured by `make gpu-check` (tools/gpu_check.py) on {report['date']}: driver {g['driver']}, "
             f"{g['memory_mib']} MiB, Caffe {report.get('caffe_build', '?')}.", "",
             "| step | result | seconds |", "| --- | --- | --- |"]
    for name in STEPS:
        step = report["steps"].get(name)
        if step is None:
            continue
        lines.append(f"| {name} | {step.get('summary', '')} | {step.get('seconds', 0):.0f} |")
    timing = report["steps"].get("time", {}).get("runs", [])
    if timing:
        lines += ["", "| net | batch | float math | forward ms | backward ms | img/s | peak MiB |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in timing:
            if "error" in r:
                lines.append(f"| {r['model']} | {r['batch']} | {r.get('math', '?')} | {r['error']} | | | |")
                continue
            lines.append(f"| {r['model']} | {r['batch']} | {r.get('math', 'fma')} | {r['forward_ms']:.1f} | "
                         f"{r['backward_ms']:.1f} | {r['img_per_s']:.0f} | {r.get('peak_mib', '?')} |")
    comp = report["steps"].get("compare", {}).get("models", {})
    if comp:
        lines += ["", "| net | loss | fc5 | worst parameter gradient |", "| --- | --- | --- | --- |"]
        for m, c in comp.items():
            lines.append(f"| {m} | {c['loss']:.2e} | {c['fc5']:.2e} | {c['worst_gradient']:.2e} "
                         f"({c['worst_gradient_param']}) |")
    failed = [n for n, s in report["steps"].items() if not s.get("ok")]
    lines += ["", f"Steps failed: {', '.join(failed)}." if failed else "Every step passed.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- steps (need a GPU)

def run_logged(cmd, timeout, cwd=None, env=None) -> tuple[int, str]:
    """(exit status, stdout + stderr) of ``cmd``; 124 when it ran past ``timeout`` seconds. The
    repository is on the PYTHONPATH of what it starts (the tools import mtdnn)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                             env={**os.environ, "PYTHONPATH": path, **(env or {})})
    except subprocess.TimeoutExpired as e:
        return 124, f"timed out after {timeout} s\n{(e.stdout or b'')[-2000:]!r}"
    return out.returncode, out.stdout + out.stderr


class PeakMemory:
    """Polls nvidia-smi's used memory of one GPU while a command runs; peak minus the baseline."""

    def __init__(self, gpu: int):
        self.gpu, self.peak, self._stop = gpu, 0, threading.Event()
        self.base = self._used()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _used(self) -> int:
        out = subprocess.run(["nvidia-smi", f"--id={self.gpu}", "--query-gpu=memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True)
        return int(float(out.stdout.strip() or 0))

    def _poll(self):
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._used())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mib(self) -> int:
        return max(0, self.peak - self.base)


def step_device(opts: CheckOptions, work: Path) -> dict:
    rc, log = run_logged(["caffe", "device_query", "-gpu", str(opts.gpu)], 120, env={"GLOG_minloglevel": "0"})
    return {"ok": rc == 0, "summary": "ok" if rc == 0 else f"caffe device_query failed ({rc})",
            "log": log[-3000:]}


def step_cudnnlog(opts: CheckOptions, work: Path) -> dict:
    proto = train_input_net("fast", 8, work / "fast_b8_cudnnlog.prototxt")
    logfile = work / "cudnn.log"
    rc, log = run_logged(["caffe", "time", "-model", str(proto), "-gpu", str(opts.gpu), "-iterations", "2"], 300,
                         env={"CUDNN_LOGLEVEL_DBG": "2", "CUDNN_LOGDEST_DBG": str(logfile)})
    cudnn_log = logfile.read_text(errors="replace") if logfile.exists() else ""
    found = cudnn_log_problems(cudnn_log + "\n" + log)
    ok = rc == 0 and not found["load_failures"]
    summary = (f"cuDNN could not load: {', '.join(found['libraries_not_loaded']) or found['load_failures'][0]}"
               if found["load_failures"] else f"every library cuDNN asked for loaded; {found['errors']} "
               f"cuDNN error(s), {found['warnings']} warning(s) logged")
    if rc != 0:
        summary = f"caffe time failed ({rc}); " + summary
    return {"ok": ok, "summary": summary, **found, "log_tail": cudnn_log[-3000:], "caffe_log_tail": log[-2000:]}


def step_gtest(opts: CheckOptions, work: Path) -> dict:
    if not GTEST_BIN.exists():
        return {"ok": False, "summary": f"no gtest binary {GTEST_BIN} (make gpu-check builds it)"}
    rc, log = run_logged([str(GTEST_BIN), str(opts.gpu), f"--gtest_filter={GTEST_GPU_FILTER}"], 300,
                         cwd=GTEST_CWD)
    counts = parse_gtest(log)
    ok = rc == 0 and counts["failed"] == 0 and counts["passed"] > 0
    return {"ok": ok, "summary": f"{counts['passed']} passed, {counts['failed']} failed", **counts,
            "filter": GTEST_GPU_FILTER, "log_tail": log[-3000:]}


def train_input_net(model: str, batch: int, out: Path) -> Path:
    """The model's fine-tune train net with Input blobs for its data and without Dropout."""
    return timing_net(REPO / "models" / model / "train_val.prototxt", batch, out, dropout=False)


def compare_in_process(model: str, batch: int, gpu: int, work: Path) -> dict:
    """Forward + backward on the CPU, then on the GPU, same weights and inputs; relative differences."""
    import numpy as np
    import caffe
    proto = train_input_net(model, batch, work / f"{model}_compare.prototxt")
    rng = np.random.default_rng(0)
    results = {}
    weights = work / f"{model}_compare.caffemodel"
    for mode in ("cpu", "gpu"):
        if mode == "cpu":
            caffe.set_mode_cpu()
        else:
            caffe.set_device(gpu)
            caffe.set_mode_gpu()
        caffe.set_random_seed(1)
        net = caffe.Net(str(proto), caffe.TRAIN)
        if mode == "cpu":
            net.save(str(weights))
            data = rng.standard_normal(net.blobs["data"].data.shape).astype(np.float32)
            classes = net.params[[n for n in net.params if n.startswith("id_fc")][-1]][0].data.shape[0]
            label = rng.integers(0, classes, net.blobs["label"].data.shape).astype(np.float32)
            attrs = rng.choice([-1.0, 1.0], net.blobs["attributes"].data.shape).astype(np.float32)
        else:
            net.copy_from(str(weights))
        net.blobs["data"].data[...] = data
        net.blobs["label"].data[...] = label
        net.blobs["attributes"].data[...] = attrs
        losses = {k: float(v) for k, v in net.forward().items()}
        net.backward()
        results[mode] = {"losses": losses, "fc5": net.blobs["fc5"].data.copy(),
                         "grads": {f"{name}[{i}]": b.diff.copy() for name, blobs in net.params.items()
                                   for i, b in enumerate(blobs)}}
        del net
    cpu, gpu_r = results["cpu"], results["gpu"]
    grads = {k: max_rel_diff(gpu_r["grads"][k], cpu["grads"][k]) for k in cpu["grads"]}
    worst = max(grads, key=grads.get)
    return {"batch": batch, "loss": max(max_rel_diff(gpu_r["losses"][k], v) for k, v in cpu["losses"].items()),
            "losses_cpu": cpu["losses"], "losses_gpu": gpu_r["losses"],
            "fc5": max_rel_diff(gpu_r["fc5"], cpu["fc5"]), "worst_gradient": grads[worst],
            "worst_gradient_param": worst, "gradients": grads}


def step_compare(opts: CheckOptions, work: Path) -> dict:
    models, ok = {}, True
    for model in ("full", "fast"):
        rc, log = run_logged([sys.executable, "-m", "mtdnn.caffe.gpu_check", model, str(opts.gpu), str(work)], 240)
        try:
            models[model] = json.loads(log.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"ok": False, "summary": f"{model}: comparison failed ({rc})", "log": log[-3000:], "models": models}
        ok &= max(models[model]["loss"], models[model]["fc5"], models[model]["worst_gradient"]) < opts.tolerance
    summary = ", ".join(f"{m}: loss {c['loss']:.1e} fc5 {c['fc5']:.1e} grad {c['worst_gradient']:.1e}"
                        for m, c in models.items())
    return {"ok": ok, "summary": summary, "tolerance": opts.tolerance, "models": models}


def step_time(opts: CheckOptions, work: Path) -> dict:
    runs, ok = [], True
    for model, batch, tf32 in TIMINGS:
        proto = train_input_net(model, batch, work / f"{model}_b{batch}_time.prototxt")
        math = "tf32" if tf32 == "1" else "fma"
        try:
            with PeakMemory(opts.gpu) as mem:
                fwd, bwd = caffe_time(proto, opts.iterations, gpu=opts.gpu, timeout=300,
                                      env={**os.environ, "CAFFE_CUDNN_TF32": tf32})
        except CaffeTimeFailed as e:
            ok = False
            runs.append({"model": model, "batch": batch, "math": math, "error": f"caffe time failed ({e.rc})",
                         "log": e.log[-2000:]})
            continue
        runs.append({"model": model, "batch": batch, "math": math, "forward_ms": fwd, "backward_ms": bwd,
                     "img_per_s": batch * 1000.0 / (fwd + bwd), "peak_mib": mem.mib})
    good = [r for r in runs if "img_per_s" in r]
    summary = ", ".join(f"{r['model']} b{r['batch']} {r['math']} {r['img_per_s']:.0f} img/s "
                        f"{r['peak_mib']} MiB" for r in good)
    return {"ok": ok, "summary": summary or "failed", "iterations": opts.iterations, "runs": runs}


def step_train(opts: CheckOptions, work: Path) -> dict:
    lfw = data_root() / "lfw" / "lfw-112x96"
    if not lfw.is_dir():
        return {"ok": False, "summary": f"no aligned LFW at {lfw} (set MTDNN_DATA)"}
    db, run = work / "lfw-db", work / "train-run"
    rc, log = run_logged([sys.executable, str(REPO / "tools" / "build_db.py"), str(db), "--images", str(lfw),
                          "--min-images", "10", "--placeholder-attributes", str(len(PAPER_ATTRIBUTES)),
                          "--attribute-names", ",".join(PAPER_ATTRIBUTES)], 300)
    if rc != 0:
        return {"ok": False, "summary": f"build_db failed ({rc})", "log": log[-3000:]}
    iters, batch = (210, 90), 40
    start = time.monotonic()
    rc, log = run_logged([sys.executable, str(REPO / "tools" / "train.py"), "--model", "full", "--db", str(db),
                          "--run", str(run), "--gpus", str(opts.gpu), "--batch", str(batch),
                          "--pretrain-iter", str(iters[0]), "--finetune-iter", str(iters[1])], 400)
    seconds = time.monotonic() - start
    if rc != 0:
        return {"ok": False, "summary": f"train.py failed ({rc})", "log": log[-3000:]}
    images = sum(iters) * batch
    return {"ok": True, "summary": f"{sum(iters)} iterations, {images / seconds:.0f} img/s (wall, incl. tests)",
            "iterations": sum(iters), "batch": batch, "seconds_wall": seconds, "img_per_s": images / seconds}


def step_extract(opts: CheckOptions, work: Path) -> dict:
    tool = REPO / "tools" / "extract_features.py"
    data = data_root() / "lfw"
    start = time.monotonic()
    rc, log = run_logged([sys.executable, str(tool), "--deploy", str(REPO / "models" / "full" / "deploy.prototxt"),
                          "--list", str(data / "lfw-112x96_list.txt"), "--root", str(data / "lfw-112x96"),
                          "--batch-size", "256", "--out", str(work / "lfw_fc5"), "--quiet",
                          "--gpu", str(opts.gpu)], 300)
    seconds = time.monotonic() - start
    if rc != 0:
        return {"ok": False, "summary": f"extract_features.py failed ({rc})", "log": log[-3000:]}
    import numpy as np
    n = np.load(work / "lfw_fc5.npy", mmap_mode="r").shape[0]
    return {"ok": True, "summary": f"{n} images, {n / seconds:.0f} img/s (wall, incl. loading)",
            "images": n, "seconds_wall": seconds, "img_per_s": n / seconds}


STEP_FUNCS = {"device": step_device, "cudnnlog": step_cudnnlog, "gtest": step_gtest, "compare": step_compare, "time": step_time,
              "train": step_train, "extract": step_extract}


def caffe_build() -> str:
    stamp = CAFFE_PREFIX / ".stamp"
    if not stamp.exists():
        return "not built"
    text = stamp.read_text()
    if " gpu=1 " not in text:
        return "CPU-only"
    arch = re.search(r" arch=([0-9 ]*) cudnn=(\d)", text)
    route = re.search(r" route=([0-9.]+)$", text.strip())
    cuda = f"CUDA {route.group(1)}, " if route else ""
    return f"GPU build ({cuda}arch {arch.group(1)}, cuDNN {'on' if arch.group(2) == '1' else 'off'})" if arch else "GPU build"


def run_checks(opts: CheckOptions, gpu: dict, skip=(), log=print) -> dict:
    """Run every step not in ``skip`` on ``gpu`` (an entry of :func:`find_gpus`); returns the
    report (:func:`render_markdown` draws it). A step that raises is recorded as failed."""
    import tempfile
    report = {"gpu": gpu, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "caffe_build": caffe_build(),
              "steps": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for name in STEPS:
            if name in skip:
                continue
            log(f"gpu_check: {name} ...")
            start = time.monotonic()
            try:
                result = STEP_FUNCS[name](opts, Path(tmp))
            except Exception as e:  # a bug or a Caffe failure in one step: recorded, the next step runs
                result = {"ok": False, "summary": f"{type(e).__name__}: {e}"}
            result["seconds"] = time.monotonic() - start
            report["steps"][name] = result
            log(f"gpu_check: {name}: {'ok' if result['ok'] else 'FAILED'}: {result['summary']} "
                f"({result['seconds']:.0f} s)")
    return report


if __name__ == "__main__":  # one comparison in its own process (step_compare)
    os.environ.setdefault("GLOG_minloglevel", "2")
    print(json.dumps(compare_in_process(sys.argv[1], 8, int(sys.argv[2]), Path(sys.argv[3]))))
