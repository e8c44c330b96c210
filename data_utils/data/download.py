"""Fetch PASCAL VOC 2007, verify it and extract it safely, or use a copy that is already there.

:func:`ensure_voc2007` is the entry point: it returns ``.../VOCdevkit/VOC2007`` and raises only
:class:`DatasetError` or :class:`DownloadError`, whose messages say how to fix the problem.  An
existing copy comes from ``voc_root`` or ``$VOC_ROOT`` and is only checked; otherwise the archives go
to ``root``, ``$COURSE_DATA`` or ``~/.cache/detection-course`` (one copied there by hand is used).

Downloads use :func:`urllib.request.urlopen`, write ``<file>.part`` and resume it with ``Range`` (a
server that ignores ``Range`` restarts it), mirror after mirror.  A file gets its final name only
once its MD5 matched; a bad download is deleted, a bad file found in place renamed ``<file>.bad``.
Extraction goes to a temporary folder that is renamed into place; a completion marker is written
last, so a tree without one counts as incomplete and is extracted again.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from tqdm.auto import tqdm

from data_utils.atomic import atomic_write_text
from data_utils.cli_options import EXIT_FAILURE, EXIT_OK, add_data_root, add_no_progress, add_voc_root
from data_utils.errors import DatasetError, DownloadError

logger = logging.getLogger(__name__)

VOC_ROOT_ENV: str = "VOC_ROOT"  #: names an existing VOCdevkit (or VOC2007) directory
COURSE_DATA_ENV: str = "COURSE_DATA"  #: names the course's data directory
DEFAULT_ROOT: Path = Path("~/.cache/detection-course")  #: used when neither root nor $COURSE_DATA is given
#: Base URLs tried in order: the official host, its HTTPS twin, a long-lived mirror.
VOC2007_MIRRORS: tuple[str, ...] = ("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/",
                                    "https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/",
                                    "https://pjreddie.com/media/files/")
TRAINVAL_FILENAME: str = "VOCtrainval_06-Nov-2007.tar"
TRAINVAL_MD5: str = "c52e279531787c972589f7e41ab4ae64"  #: as recorded by torchvision
TEST_FILENAME: str = "VOCtest_06-Nov-2007.tar"
TEST_MD5: str = "b6e924de25625d8de591ea690078ad9f"  #: as recorded by torchvision
#: Folders every usable VOC2007 directory has.
REQUIRED_DIRS: tuple[str, ...] = ("JPEGImages", "Annotations", "ImageSets/Main")
#: ``(connect, read)`` seconds: a dead host fails fast, a slow body is not cut off.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)
DEFAULT_RETRIES: int = 3  #: resumes per mirror before the next mirror is tried
DEFAULT_RETRY_DELAY: float = 1.0  #: resume number n waits n * this many seconds

_CHUNK_SIZE = 1 << 20
_HEADERS = {"User-Agent": "detection-course-data-utils (python urllib)", "Accept-Encoding": "identity"}
Timeout = float | tuple[float, float]


@dataclass(frozen=True)
class VocArchive:
    """One downloadable archive: ``filename`` on the server and on disk, the ``md5`` of the whole
    file, full ``urls`` tried in order, and the ``split`` (``ImageSets/Main/<split>.txt``) it
    provides, by which an existing tree is checked to hold this archive's part of the data."""

    filename: str
    md5: str
    urls: tuple[str, ...]
    split: str


def _archive(filename: str, md5: str, split: str) -> VocArchive:
    return VocArchive(filename, md5, tuple(base + filename for base in VOC2007_MIRRORS), split)


#: The archives :func:`ensure_voc2007` knows, by the name used in ``archives=``.
ARCHIVES: Mapping[str, VocArchive] = MappingProxyType({
    "trainval": _archive(TRAINVAL_FILENAME, TRAINVAL_MD5, "trainval"),
    "test": _archive(TEST_FILENAME, TEST_MD5, "test"),
})


# --------------------------------------------------------------------------- paths


def default_root() -> Path:
    """``$COURSE_DATA`` if set and non-empty, else ``~/.cache/detection-course`` (not created)."""
    value = os.environ.get(COURSE_DATA_ENV)
    return Path(value).expanduser() if value else DEFAULT_ROOT.expanduser()


def voc2007_dir(root: str | os.PathLike[str]) -> Path:
    """Where an extraction under ``root`` puts the data: ``<root>/VOCdevkit/VOC2007``."""
    return Path(root).expanduser() / "VOCdevkit" / "VOC2007"


def extraction_marker(root: str | os.PathLike[str], archive: VocArchive) -> Path:
    """The file whose presence (holding ``archive.md5``) says ``archive`` was fully extracted under ``root``."""
    return voc2007_dir(root) / f".{archive.filename}.complete"


def is_extracted(root: str | os.PathLike[str], archive: VocArchive) -> bool:
    """True if the completion marker of ``archive`` under ``root`` exists and names its MD5."""
    try:
        return extraction_marker(root, archive).read_text().strip() == archive.md5
    except OSError:
        return False


def resolve_voc2007(path: str | os.PathLike[str]) -> Path:
    """The ``VOC2007`` directory of a user-given ``VOC2007``, ``VOCdevkit`` or parent-of-``VOCdevkit``
    path; ``path`` itself if nothing better matches (the contents are :func:`check_voc2007`'s job)."""
    path = Path(path).expanduser()
    for candidate in (path / "VOC2007", path / "VOCdevkit" / "VOC2007"):
        if candidate.is_dir():
            return candidate
    return path


def check_voc2007(voc2007: str | os.PathLike[str], *, splits: Sequence[str] = (), source: str = "") -> Path:
    """Return ``voc2007`` if it has :data:`REQUIRED_DIRS` and ``ImageSets/Main/<split>.txt`` for every
    split in ``splits``, else raise :class:`DatasetError` naming what is missing and ``source`` (e.g.
    ``"VOC_ROOT"``), so the user knows what to change."""
    voc2007 = Path(voc2007)
    where = f"{voc2007}" + (f" (from {source})" if source else "")
    if not voc2007.is_dir():
        raise DatasetError(
            f"PASCAL VOC 2007 directory {where} does not exist. Point {VOC_ROOT_ENV} / voc_root at an "
            f"existing VOCdevkit or VOC2007 directory, or unset it to download the data.")
    missing = [f"{name}/" for name in REQUIRED_DIRS if not (voc2007 / name).is_dir()]
    missing += [f"ImageSets/Main/{s}.txt" for s in splits if not (voc2007 / "ImageSets" / "Main" / f"{s}.txt").is_file()]
    if missing:
        archives = TRAINVAL_FILENAME + (f", {TEST_FILENAME}" if "test" in splits else "")
        raise DatasetError(
            f"PASCAL VOC 2007 directory {where} is incomplete: missing {', '.join(missing)}. Extract the "
            f"complete archive(s) ({archives}) so that this directory has JPEGImages/, Annotations/ and "
            f"ImageSets/Main/, point {VOC_ROOT_ENV} / voc_root at a complete copy, or unset it and let "
            f"ensure_voc2007 download the data (if the tree is one it extracted, delete it and run again).")
    return voc2007


# ------------------------------------------------------------------------ download


class _Interrupted(Exception):
    """A transfer started but did not finish; the ``.part`` file (if kept) can be resumed."""


def md5sum(path: str | os.PathLike[str]) -> str:
    """Hex MD5 digest of the file at ``path``, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def _describe(exc: BaseException) -> str:
    """A one-line reason for a failed request (urllib wraps the socket error in ``URLError.reason``)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name ({reason.strerror}); offline?"
    if isinstance(reason, TimeoutError):
        return "timed out"
    return str(reason) or type(reason).__name__


def _fetch_once(url: str, part: Path, *, timeout: tuple[float, float], progress: bool) -> None:
    """One request that writes (or continues, with ``Range``) ``part``; returns once it holds the whole file.

    Raises :class:`_Interrupted` if the transfer can go on from ``part`` (deleted first where it
    cannot be trusted), ``OSError``/``HTTPException`` if this URL gave no usable answer, and
    :class:`DownloadError` if ``part`` cannot be written.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {**_HEADERS, "Range": f"bytes={offset}-"} if offset else _HEADERS
    try:  # urlopen's one timeout bounds reaching the host and its headers: a dead host fails fast
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout[0])
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        exc.close()  # 416: nothing at or after `offset`, so `part` is complete if the file has `offset` bytes
        if exc.headers.get("Content-Range", "").endswith(f"/{offset}"):
            return
        part.unlink()
        raise _Interrupted(f"server cannot resume at byte {offset} (HTTP 416); starting over") from None
    with response:
        # The body may come slower than the headers. http.client keeps its socket privately; where it
        # is not found the body keeps the connect timeout, which only makes a slow mirror fail sooner.
        sock = getattr(getattr(response.fp, "raw", None), "_sock", None)
        if sock is not None:
            sock.settimeout(timeout[1])
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() else None
        if response.status == 206:
            if not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                part.unlink()
                raise _Interrupted(f"server did not resume at byte {offset}; starting over")
            total = None if total is None else offset + total
        else:  # 200: the whole file, whether or not a Range was asked for
            offset = 0
        try:
            with open(part, "ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name.removesuffix(".part"), disable=not progress,
            ) as bar:
                while True:
                    try:
                        chunk = response.read(_CHUNK_SIZE)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Interrupted(f"connection lost after {out.tell()} bytes ({_describe(exc)})") from exc
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
                received = out.tell()
        except OSError as exc:  # read errors are _Interrupted by now: this is the disk
            raise DownloadError(f"Cannot write {part}: {exc}. Free some disk space or choose another root "
                                f"(--data-root / {COURSE_DATA_ENV}).") from exc
    if total is not None and received < total:  # http.client reads no further than Content-Length
        raise _Interrupted(f"connection closed after {received} of {total} bytes")


def _manual_install_hint(archive: VocArchive, target: Path) -> str:
    hint = (f"To install it by hand: download {archive.filename} on a machine with internet access (e.g. from "
            f"{archive.urls[0]}; md5 {archive.md5}), copy it to\n    {target}\nand run this again (it is "
            f"verified and extracted there). If you already have an extracted copy, set "
            f"{VOC_ROOT_ENV}=/path/to/VOCdevkit or pass voc_root=... (command line: python -m data_utils "
            f"download --voc-root DIR).")
    tree = voc2007_dir(target.parent)
    if tree.is_dir():
        hint += (f"\nNote: {tree} exists but has no completion marker for {archive.filename}, so it is treated "
                 f"as incomplete; if you extracted it yourself, set {VOC_ROOT_ENV}={tree}.")
    return hint


def download_archive(
    archive: VocArchive, dest_dir: str | os.PathLike[str], *, progress: bool = True,
    timeout: Timeout = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES, retry_delay: float = DEFAULT_RETRY_DELAY,
) -> Path:
    """Download ``archive`` to ``dest_dir/archive.filename`` and return that path.

    ``archive.urls`` are tried in order; an interrupted transfer is resumed up to ``retries`` times
    per URL (waiting ``n * retry_delay`` seconds before resume ``n``).  ``timeout`` is seconds, or
    ``(connect, read)`` seconds.  :class:`DownloadError` lists every URL with its failure; its first
    line already says how to use an existing copy instead, which is what an offline user needs.
    """
    dest_dir = Path(dest_dir).expanduser()
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / archive.filename
    part = target.with_name(target.name + ".part")
    timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    failures: list[str] = []
    offline = True  # until some host answered: then the message says more than "offline?"
    for url in archive.urls:
        for attempt in range(1, retries + 2):
            try:
                _fetch_once(url, part, timeout=timeout, progress=progress)
            except _Interrupted as exc:
                problem, offline = f"transfer interrupted {attempt} times, last: {exc}", False
                if attempt <= retries:
                    logger.warning("%s: %s; resuming (retry %d of %d)", url, exc, attempt, retries)
                    time.sleep(retry_delay * attempt)
                continue
            except (OSError, http.client.HTTPException) as exc:
                problem = _describe(exc)
                offline &= isinstance(exc, OSError) and not isinstance(exc, urllib.error.HTTPError)
                break
            actual = md5sum(part)
            if actual == archive.md5:
                os.replace(part, target)  # the final name only for a verified file
                return target
            part.unlink()
            problem, offline = (f"checksum mismatch for {archive.filename}: expected md5 {archive.md5}, got "
                                f"{actual} (the download was deleted)"), False
            break
        logger.info("%s: %s", url, problem)
        failures.append(f"  - {url}: {problem}")
    raise DownloadError(
        f"Could not download {archive.filename} (PASCAL VOC 2007) to {target}"
        + ("; no mirror could be reached (offline?)" if offline else "")
        + f". To use a copy you already have, pass --voc-root DIR or set {VOC_ROOT_ENV}=DIR. Tried:\n"
        + "\n".join(failures) + "\n" + _manual_install_hint(archive, target))


def _verified_local_copy(archive: VocArchive, target: Path) -> Path | None:
    """``target`` if it exists with the right MD5; a wrong one is renamed ``<file>.bad`` (kept for the user)."""
    if not target.is_file():
        return None
    actual = md5sum(target)
    if actual == archive.md5:
        return target
    bad = target.with_name(target.name + ".bad")
    os.replace(target, bad)
    logger.warning("%s has md5 %s, expected %s; renamed it to %s and downloading it again",
                   target, actual, archive.md5, bad.name)
    return None


# ------------------------------------------------------------------------- extract


def extract_archive(tar_path: str | os.PathLike[str], root: str | os.PathLike[str], archive: VocArchive) -> Path:
    """Extract ``tar_path`` (holding ``VOCdevkit/VOC2007/...``) under ``root``; return the VOC2007 dir.

    Unpacks with tarfile's ``"data"`` filter into a temporary folder in ``root``, renames it to
    ``root/VOCdevkit`` (or merges it into an existing one) and only then writes
    :func:`extraction_marker`.  On failure the temporary folder is removed, no marker exists and
    :class:`DatasetError` says why.
    """
    tar_path, root = Path(tar_path), Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    marker = extraction_marker(root, archive)
    marker.unlink(missing_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".extracting-{archive.filename}-", dir=root))
    try:
        with tarfile.open(tar_path) as tar:
            if not hasattr(tarfile, "data_filter"):  # pragma: no cover - Python < 3.11.4
                raise DatasetError("Extracting safely needs Python 3.11.4 or newer (tarfile's 'data' filter).")
            tar.extractall(staging, filter="data")
        if not (staging / "VOCdevkit" / "VOC2007").is_dir():
            raise DatasetError(f"{tar_path} does not contain VOCdevkit/VOC2007/; it is not a PASCAL VOC 2007 "
                               f"archive. Delete it and run again.")
        if (root / "VOCdevkit").exists():  # e.g. test after trainval: merge, renaming file by file
            shutil.copytree(staging / "VOCdevkit", root / "VOCdevkit", dirs_exist_ok=True, copy_function=os.replace)
        else:
            os.replace(staging / "VOCdevkit", root / "VOCdevkit")
        atomic_write_text(marker, archive.md5 + "\n")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"Could not extract {tar_path} into {root}: {exc}. Check the free disk space (VOC "
                           f"2007 needs about 1 GB per archive); if the archive is damaged, delete it and run "
                           f"again.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return voc2007_dir(root)


# ---------------------------------------------------------------------- entry point


def ensure_voc2007(
    root: str | os.PathLike[str] | None = None, *, voc_root: str | os.PathLike[str] | None = None,
    download: bool = True, archives: Sequence[str] = ("trainval",), progress: bool = True,
    archive_table: Mapping[str, VocArchive] | None = None, timeout: Timeout = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES, retry_delay: float = DEFAULT_RETRY_DELAY,
) -> Path:
    """Return the ``VOCdevkit/VOC2007`` directory, downloading and extracting it if needed.

    With ``voc_root`` (or ``$VOC_ROOT`` when it is None) that existing tree is checked
    (:func:`check_voc2007`, with the split of every archive in ``archives``) and nothing is
    downloaded.  Otherwise, under ``root`` (default :func:`default_root`), each archive in
    ``archives`` (keys of ``archive_table``, default :data:`ARCHIVES`) without its completion marker
    is taken from ``<root>/<filename>`` if that has the right MD5, else downloaded (only if
    ``download``, else :class:`DatasetError`) with ``progress``, ``timeout``, ``retries`` and
    ``retry_delay`` (:func:`download_archive`), then extracted atomically.
    """
    table = ARCHIVES if archive_table is None else archive_table
    unknown = [name for name in archives if name not in table]
    if unknown:
        raise ValueError(f"unknown archive(s) {unknown}; choose from {sorted(table)}")
    chosen = [table[name] for name in archives]
    splits = [archive.split for archive in chosen]

    source = "voc_root"
    if voc_root is None and os.environ.get(VOC_ROOT_ENV):
        voc_root, source = os.environ[VOC_ROOT_ENV], VOC_ROOT_ENV
    if voc_root is not None:
        return check_voc2007(resolve_voc2007(voc_root), splits=splits, source=source)

    root = Path(root).expanduser() if root is not None else default_root()
    for archive in chosen:
        if is_extracted(root, archive):
            continue
        target = root / archive.filename
        tar_path = _verified_local_copy(archive, target)
        if tar_path is None:
            if not download:
                raise DatasetError(f"PASCAL VOC 2007 ({archive.filename}) is not extracted under {root} and "
                                   f"download=False.\n" + _manual_install_hint(archive, target))
            tar_path = download_archive(archive, root, progress=progress, timeout=timeout, retries=retries,
                                        retry_delay=retry_delay)
        extract_archive(tar_path, root, archive)
    return check_voc2007(voc2007_dir(root), splits=splits)


#: What ``python -m data_utils download`` does, for its ``--help``.
DESCRIPTION = ("Download, verify and extract PASCAL VOC 2007, or check an existing copy; "
               "prints the VOCdevkit/VOC2007 directory.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m data_utils download`` (the convention of :mod:`data_utils.cli_options`)."""
    add_data_root(parser, help=f"where to download and extract (default: ${COURSE_DATA_ENV} or {DEFAULT_ROOT})",
                  deprecated=("--root",))
    add_voc_root(parser, help=f"use this existing VOCdevkit or VOC2007 directory instead (default: ${VOC_ROOT_ENV})")
    parser.add_argument("--test", action="store_true", help="also fetch the test set archive")
    add_no_progress(parser, help="do not show a progress bar")


def run(args: argparse.Namespace) -> int:
    """Fetch or check VOC 2007 as ``args`` say (:func:`add_arguments`): print the VOC2007 directory and
    return 0, or print a :class:`DatasetError` / :class:`DownloadError` to stderr and return 1."""
    try:
        path = ensure_voc2007(args.data_root, voc_root=args.voc_root, progress=not args.no_progress,
                              archives=("trainval", "test") if args.test else ("trainval",))
    except (DatasetError, DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(path)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m data_utils download [--data-root DIR] [--voc-root DIR] [--test] [--no-progress]``:
    :func:`run` on ``argv``, the arguments *after* ``download`` (default ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(prog="python -m data_utils download", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))
