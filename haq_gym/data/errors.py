"""Errors raised by the dataset loaders."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where the loader looked for them.

    A subclass of FileNotFoundError so callers can catch either; the message always
    names the place that was searched and how to fix it.
    """
