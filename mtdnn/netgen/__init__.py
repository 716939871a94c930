"""The library that renders the networks and solvers of Wang et al. (ICMR 2017) from Jinja2 templates.

``prototxt_templates/`` holds the templates (layer macros in ``layers.j2``, the nets in
``net.prototxt.j2``, the solvers, the readmes); this package fills them in, one model-zoo
folder a model: ``train_val_pretrain.prototxt`` (multi-task models only),
``train_val.prototxt``, ``deploy.prototxt``, ``solver_pretrain.prototxt``,
``solver_finetune.prototxt`` and ``readme.md``.

Command line (``python -m generate --help``, ``python -m generate model --help``)::

    python -m generate all                 # every committed variant into models/ (make prototxt)
    python -m generate all --check         # exit 1 when models/ differs from the templates
    python -m generate list                # variants, the paper's rows they are, aliases
    python -m generate model --variant fast --width 0.25 --identities 100 \\
        --attributes Male,Big_Nose --batch 16 --pretrain-iter 200 --finetune-iter 100 \\
        --train-lmdb X_lmdb --train-hdf5 X.h5.txt --test-lmdb V_lmdb --test-hdf5 V.h5.txt \\
        --out runs/small

Python::

    from mtdnn.netgen import render_model
    paths = render_model("runs/small", variant="fast", width=0.25, identities=100,
                         attributes="Male,Big_Nose", batch=16, train_lmdb=..., train_hdf5=...)

Decisions (see ``models/README.md``):

- Pre-training has lambda1 = 0 (Sec. 4.4), so its net has *no* attribute head and no HDF5
  input; fine-tuning (lambda1 = 0.1) loads the pre-trained weights by layer name and the
  attribute layers start from their fillers. This is the same as training the head with
  loss weight 0, and lets one pre-training run serve every model of a block type.
- Paths in the rendered files are relative to the run folder (the working directory of
  ``caffe train``), unless ``--absolute-paths``. Relative data paths given to ``model`` are
  therefore checked against the output folder.
- Bad input (unknown variant, non-positive width or batch, an attribute that is not one of
  CelebA's 40, a data path given that does not exist or does not fit) raises
  :class:`GenerateError` (a ValueError); the command line turns it into an error message
  and exit status 2, without a traceback.
"""
from mtdnn.paper import CELEBA_ATTRIBUTES, GROUPS, parse_attributes
from .moon import MoonSpec, render_moon
from .render import all_files, compare_all, model_files, render_all, render_model
from .spec import GenerateError, ModelSpec
from .variants import ALIASES, VARIANTS, variant

__all__ = [
    "ALIASES", "CELEBA_ATTRIBUTES", "GROUPS", "GenerateError", "ModelSpec", "MoonSpec", "VARIANTS",
    "all_files", "compare_all", "model_files", "parse_attributes", "render_all",
    "render_model", "render_moon", "variant",
]
