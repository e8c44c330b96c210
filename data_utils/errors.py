"""Exceptions raised for bad data; every message names the file, the problem and the fix."""


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or inconsistent."""


class DownloadError(RuntimeError):
    """A dataset could not be downloaded or verified."""
