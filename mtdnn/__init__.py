"""Multi-task face recognition and attribute prediction (Wang et al., ICMR 2017), reproduced in Caffe.

Shared code for the tools in ``tools/`` and the generator in ``generate/``.
"""

__all__ = ["FaceModel", "MoonModel", "NoFace"]


def __getattr__(name):
    """``mtdnn.FaceModel`` / ``MoonModel`` / ``NoFace`` (mtdnn.facemodel), imported on first use."""
    if name in __all__:
        from . import facemodel
        return getattr(facemodel, name)
    raise AttributeError(f"module 'mtdnn' has no attribute {name!r}")
