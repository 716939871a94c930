"""The record files of an aligned tree: ``landmarks.txt`` (path and 10 numbers) and
``failures.txt`` (path<TAB>reason), both in the one record format of :mod:`mtdnn.records`."""
from __future__ import annotations

from pathlib import Path

from mtdnn.records import escape_field, read_lines, unescape_field, write_failures, write_lines

LANDMARKS_HEADER = "# path x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 (left eye, right eye, nose, left mouth, right mouth; 0-based)\n"


def landmarks_line(rel: str, points) -> str:
    """One record of landmarks.txt: the escaped path and the 5 points, 3 decimals."""
    return escape_field(rel) + " " + " ".join(f"{v:.3f}" for v in points.reshape(-1))


def read_landmarks(path: Path) -> dict[str, str]:
    """{path: line} of a landmarks file (paths un-escaped); malformed (e.g. cut-off) lines are
    ignored."""
    out = {}
    if path.is_file():
        for _, line in read_lines(path, comments=True):
            parts = line.rsplit(None, 10)
            if len(parts) != 11:
                continue
            try:
                [float(v) for v in parts[1:]]
            except ValueError:
                continue
            out[unescape_field(parts[0])] = line
    return out


def write_records(landmarks_path: Path, failures_path: Path, done: dict, failed: dict) -> None:
    """Both record files, sorted and de-duplicated, each replaced atomically."""
    write_lines(landmarks_path, (done[k] + "\n" for k in sorted(done)), header=LANDMARKS_HEADER)
    write_failures(failures_path, failed)
