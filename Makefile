# Multi-task face recognition + attributes (Wang et al., ICMR 2017) in Caffe.
#
#   make setup      .venv with the pinned Python packages and Caffe 1.0 built from Debian's source
#   make data       fetch the data the demo and tests read into data/ (or $MTDNN_DATA); docs/data.md
#   make test       setup + data, then the test suite (real Caffe, real data)
#   make demo       setup + the demo's data, then the main job end to end on real data (see README)
#   make train      setup, then pre-train + fine-tune MODEL on DATA in RUN (GPUS=0,1 for GPUs; ARGS=...)
#   make prototxt   render prototxt_templates/ into models/
#   make bench      setup, then the benchmarks (figures and ratios, no pass/fail)
#
# Every target installs what it needs and is idempotent: a second `make setup` takes seconds.

PYTHON_BASE ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
CAFFE       := $(VENV)/caffe/.stamp
# The data folder: data/ in the repository unless MTDNN_DATA names another (mtdnn/paths.py).
# pycaffe prints every layer it builds through glog; tests and tools want quiet stderr.
export GLOG_minloglevel ?= 2
PYTEST_ARGS ?=

.PHONY: setup data data-demo data-test test demo train prototxt bench clean-caffe help

help:
	@sed -n '3,11p' Makefile

setup: $(VENV)/.requirements $(CAFFE)

$(VENV)/.requirements: requirements.txt
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@# The repository root on the venv's path: `import mtdnn` and `import generate` work from tools/ too.
	$(PY) -c 'import sysconfig; print("$(CURDIR)", file=open(sysconfig.get_paths()["purelib"] + "/mtdnn-repo.pth", "w"))'
	touch $@

# The build script is a no-op when its stamp matches, so it can always be asked.
$(CAFFE): docker/build_caffe.sh $(VENV)/.requirements
	docker/build_caffe.sh $(PY) $(VENV)/caffe

prototxt: $(VENV)/.requirements
	$(PY) -m generate all

# A complete folder is checked in well under a second and used as it is; what needs a licence
# form is listed with where to get it (exit 2).
data: $(VENV)/.requirements
	$(PY) tools/fetch_data.py

data-demo: $(VENV)/.requirements
	$(PY) tools/fetch_data.py --group demo

# make test fetches what it can and goes on: the tests of what is missing skip, with the reason.
data-test: $(VENV)/.requirements
	$(PY) tools/fetch_data.py --missing-ok

test: setup data-test
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup data-demo
	$(PY) tools/demo.py

# make train MODEL=fast DATA=work/casia-db GPUS=0,1 RUN=runs/fast ARGS="--width 0.5"
MODEL ?= full
DATA  ?= work/casia-db
RUN   ?= runs/$(MODEL)
GPUS  ?=
ARGS  ?=
train: setup
	$(PY) tools/train.py --model $(MODEL) --data $(DATA) --run $(RUN) $(if $(GPUS),--gpu $(GPUS)) $(ARGS)

bench: setup
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done

clean-caffe:
	rm -rf $(VENV)/caffe $(VENV)/caffe.build $(VENV)/bin/caffe
