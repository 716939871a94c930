"""Where the project finds its data and its own folders.

The real face data is never committed: ``make data`` (tools/fetch_data.py) puts it into
``data/`` in the repository, or into the folder named by the environment variable
``MTDNN_DATA``; docs/data.md describes the layout.
"""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class DataMissing(FileNotFoundError):
    """A file or folder of the data folder is missing (``make data`` fetches it); the tests skip
    on it with its path as the reason (tests/conftest.py)."""

    def __init__(self, path: Path):
        self.message = (f"{path} does not exist: run `make data` (or set MTDNN_DATA to a folder "
                        f"holding lfw/, celeba/, mtcnn/; see docs/data.md)")
        super().__init__(self.message)
        self.filename = str(path)

    def __str__(self) -> str:
        return self.message


def data_root() -> Path:
    """The data folder: ``$MTDNN_DATA`` if set, else ``<repo>/data``."""
    return Path(os.environ.get("MTDNN_DATA") or REPO / "data").resolve()


def data_path(*parts: str, must_exist: bool = True) -> Path:
    """A path below the data folder; raises :class:`DataMissing` (a FileNotFoundError) naming it when it is missing."""
    path = data_root().joinpath(*parts)
    if must_exist and not path.exists():
        raise DataMissing(path)
    return path
