"""One exception root for the product.

Every leaf also inherits the builtin it means (a failed tile download is an ``OSError``, a bad
bbox a ``ValueError``), so callers can catch either. Messages name the bad value and the fix;
front ends show ``str(error)`` as is.
"""

from __future__ import annotations


class CampError(Exception):
    """Root of every error the core raises on purpose."""

    exit_code = 2


class InputError(CampError, ValueError):
    """A parameter or input file is wrong (bbox, zoom, band count, file format ...)."""


class TooManyTilesError(InputError):
    """The extent needs more tiles than the configured cap."""


class OutputExistsError(CampError, FileExistsError):
    """The output folder already holds results; pass overwrite/resume to reuse it."""


class OutputNotWritableError(CampError, PermissionError):
    """The output folder cannot be created or written."""


class TileFetchError(CampError, OSError):
    """Imagery tiles could not be downloaded or decoded."""


class OverpassError(CampError, OSError):
    """The Overpass API failed or answered with a runtime error."""


class LabelsError(CampError, ValueError):
    """A labels file is missing, unreadable or has no polygons."""


class DatasetError(CampError, ValueError):
    """A training dataset folder is missing, empty, or malformed."""


class ModelLoadError(CampError, ValueError):
    """A model file is not a model this product can run, or lacks its metadata."""


class TrainingError(CampError, RuntimeError):
    """Training cannot go on (NaN loss, no usable device ...)."""


class ExportError(CampError, RuntimeError):
    """An exported model does not reproduce the trained model (parity check failed)."""


class TrackingError(CampError, ConnectionError):
    """The MLflow tracking server is unreachable or refused the run."""


class DependencyError(CampError, ImportError):
    """A Python package the job needs is missing; the message gives the install command."""


class Cancelled(CampError):
    """The user cancelled the job (Ctrl-C, Cancel button). Outputs written so far are complete
    files only; re-running resumes."""

    exit_code = 130
