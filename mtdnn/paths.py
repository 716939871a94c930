"""Where the project finds its data and its own folders.

The real face data is never copied into the repository: it is read in place from the
folder named by the environment variable ``MTDNN_DATA`` or, by default, ``../shared/data``
beside the repository.
"""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The data folder: ``$MTDNN_DATA`` if set, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("MTDNN_DATA", REPO.parent / "shared" / "data")).resolve()


def data_path(*parts: str, must_exist: bool = True) -> Path:
    """A path below the data folder; raises FileNotFoundError naming it when it is missing."""
    path = data_root().joinpath(*parts)
    if must_exist and not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: set MTDNN_DATA to the folder holding lfw/, celeba/, mtcnn/ "
            f"(see ../shared/data/README.md)")
    return path
