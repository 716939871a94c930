"""What one alignment run is asked to do (:class:`AlignOptions`), and the error of bad input."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class AlignInputError(ValueError):
    """The input cannot be aligned as asked (no images, clashing crop names, a bad folder):
    a problem of the input, never of one image or of the machine (tools: exit status 2)."""


@dataclass
class AlignOptions:
    """One run of :func:`mtdnn.alignment.align_images` (tools/align_faces.py's options)."""
    src: Path                       # folder of input images, or the root of ``list`` paths
    out: Path                       # output folder of the aligned tree
    list: Path | None = None        # file of relative image paths ('path' or 'path label' lines)
    people: Path | None = None      # LFW people file: only its images
    workers: int = 2
    crop: str = "112x96"
    select: str = "center"
    models: Path | None = None      # MTCNN model folder (None: $MTDNN_DATA/mtcnn)
    minsize: float = 20
    factor: float = 0.85
    thresholds: tuple = (0.6, 0.7, 0.9)
    refine_landmarks: bool = False
    resize: str = "matlab"
    max_side: int = 2000
    ext: str = "keep"
    quality: int = 95
    landmarks: Path | None = None   # None: OUT/landmarks.txt
    failures: Path | None = None    # None: OUT/failures.txt
    retry_failed: bool = False
    limit: int | None = None
    devkit_boxes: bool = False
    engine: str = "auto"
    gpu: int | None = None

    @property
    def landmarks_path(self) -> Path:
        return self.landmarks or self.out / "landmarks.txt"

    @property
    def failures_path(self) -> Path:
        return self.failures or self.out / "failures.txt"

    def check(self) -> None:
        """Refuse what cannot run at all (:class:`AlignInputError`)."""
        if self.workers < 1:
            raise AlignInputError("--workers must be >= 1")
        if not self.src.is_dir():
            raise AlignInputError(f"{self.src} is not a folder")
        if self.out.exists() and not self.out.is_dir():
            raise AlignInputError(f"the output {self.out} is not a folder; name a new or existing folder")

    def worker_config(self) -> dict:
        """What each worker process needs (:func:`mtdnn.alignment.worker.init_worker`)."""
        return dict(src=str(self.src), out=str(self.out), models=self.models, minsize=self.minsize,
                    thresholds=tuple(self.thresholds), factor=self.factor, refine=self.refine_landmarks,
                    resize=self.resize, select=self.select, max_side=self.max_side, crop=self.crop,
                    quality=self.quality, engine=self.engine, gpu=self.gpu, devkit=self.devkit_boxes)
