"""The command line of :mod:`mtdnn.netgen`: ``python -m generate`` (the paper's models and their
ablations into ``models/``, ``make prototxt``) and ``python -m generate.moon`` (MOON's nets).

The rendering itself is library code, :mod:`mtdnn.netgen`; this package only parses options and
prints, so that ``generate`` imports ``mtdnn`` and never the reverse.
"""
