"""Atomic file and folder writes: a reader never sees a half-written output.

Files are written to a temporary name in the same folder and renamed into place (``os.replace``
is atomic on one filesystem). Whole result folders are built in a hidden staging folder and
swapped in at the end, so a cancelled job leaves the previous results intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputNotWritableError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the suffix, so format drivers that look at it (GDAL, ONNX) work.
    """
    target = Path(path)
    ensure_writable_dir(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f"{target.suffix}.part{target.suffix}",
                               dir=target.parent)
    os.close(fd)
    os.unlink(tmp)  # writers (GDAL, torch) create the file themselves
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".camp-write-test", delete=True)
        probe.close()
    except OSError as exc:
        raise OutputNotWritableError(
            f"cannot write to output folder {folder}: {exc.strerror or exc}. "
            "Choose a folder you can write to (--out)."
        ) from exc
    return folder


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a result folder in a staging folder beside ``final`` and swap it in on success.

    An existing ``final`` is replaced only once the new one is complete; on error or cancel the
    staging folder is removed and ``final`` is untouched.
    """
    final_path = Path(final)
    ensure_writable_dir(final_path.parent)
    stage = Path(tempfile.mkdtemp(prefix=f".{final_path.name}.staging-", dir=final_path.parent))
    try:
        yield stage
        if final_path.exists():
            backup = final_path.with_name(f".{final_path.name}.old-{os.getpid()}")
            os.replace(final_path, backup)
            os.replace(stage, final_path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(stage, final_path)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
