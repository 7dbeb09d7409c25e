"""User-facing errors.

Every problem a user can fix (a missing folder, an unreadable image, too few images for k folds)
raises a :class:`VistrainError` whose message names the path and the fix.  The CLI prints it as one
line and exits non-zero, without a traceback; the Python API lets it propagate.
"""
from __future__ import annotations


class VistrainError(Exception):
    """An error the user can act on; ``str(err)`` is a complete one-line explanation."""

    exit_code = 2


class DataError(VistrainError):
    """The data folder is missing, empty, or unusable as given."""


class ImageLoadError(VistrainError):
    """One image file could not be decoded.  ``path`` and ``reason`` are kept for reports."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsError(VistrainError):
    """Pretrained weights could not be found or do not fit the model."""


class RunDirError(VistrainError):
    """A run directory is missing or incomplete."""


class TrainingError(VistrainError):
    """Training cannot continue (e.g. the loss became NaN); the last checkpoint is kept."""


# the import names of the extra vistrain[train] (a serving install, vistrain[serve], lacks them)
TRAIN_LIBRARIES = ("torch", "torchvision", "timm", "safetensors", "sklearn", "matplotlib", "jinja2",
                   "cleanlab", "regex", "fsspec", "filelock")


class MissingExtraError(VistrainError, ImportError):
    """A job needs a library of the extra ``vistrain[train]`` that this install lacks (both the
    one-line :class:`VistrainError` and the ``ImportError`` a Python caller may catch)."""


def missing_train_extra(err: ImportError, what: str) -> MissingExtraError | None:
    """The one-line error for ``what`` (e.g. ``"vistrain train"``) when ``err`` is the import of
    a ``vistrain[train]`` library failing; None for any other import error.

    Example:
        >>> str(missing_train_extra(ModuleNotFoundError("no", name="torch"), "vistrain train"))
        "vistrain train needs torch, which is not installed; install it with pip install 'vistrain[train]'"
    """
    library = (err.name or "").split(".")[0]
    if library not in TRAIN_LIBRARIES:
        return None
    return MissingExtraError(f"{what} needs {library}, which is not installed; install it with "
                             "pip install 'vistrain[train]'")
