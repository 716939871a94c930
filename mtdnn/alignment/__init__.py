"""Face alignment of a folder or list of photos: MTCNN finds the face (:mod:`mtdnn.mtcnn`), its
5 points are fitted to SphereFace's template (:mod:`mtdnn.align`), and the crops are written
under the inputs' relative paths with their records (tools/align_faces.py is the command).

- :mod:`.options`: :class:`AlignOptions` (one run) and :class:`AlignInputError` (bad input);
- :mod:`.naming`: crop names (``--ext``), clashes resolved or refused;
- :mod:`.landmarks`: ``landmarks.txt`` / ``failures.txt`` read and written (:mod:`mtdnn.records`);
- :mod:`.worker`: the work on one image in a worker process (``align_one``);
- :mod:`.run`: :func:`align_images`, the resumable run loop over a worker pool.

MegaFace's devkit boxes (``--devkit-boxes``) are :mod:`mtdnn.devkit_align`.
"""
from .landmarks import LANDMARKS_HEADER, read_landmarks, write_records
from .naming import KEEP_SUFFIXES, output_path, output_paths
from .options import AlignInputError, AlignOptions
from .run import AlignResult, align_images, input_paths
from .worker import align_one, init_worker

__all__ = ["AlignInputError", "AlignOptions", "AlignResult", "KEEP_SUFFIXES", "LANDMARKS_HEADER", "align_images",
           "align_one", "init_worker", "input_paths", "output_path", "output_paths", "read_landmarks",
           "write_records"]
