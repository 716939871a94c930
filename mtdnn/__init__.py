"""Multi-task face recognition and attribute prediction (Wang et al., ICMR 2017), reproduced in Caffe.

Shared code for the tools in ``tools/`` and the generator in ``generate/``.
"""
