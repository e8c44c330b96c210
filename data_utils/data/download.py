"""Fetch PASCAL VOC 2007, verify it and extract it safely, or use a copy that is already there.

The one entry point most code needs is :func:`ensure_voc2007`; it returns the
``.../VOCdevkit/VOC2007`` directory and raises only :class:`DatasetError` or
:class:`DownloadError`, whose messages say what went wrong and how to fix it.

Where the data lives
--------------------
* ``voc_root`` (argument) or ``$VOC_ROOT``: an existing extraction, given as its
  ``VOCdevkit`` directory, its ``VOC2007`` directory or the directory holding
  ``VOCdevkit``.  It is only checked, never written to.
* Otherwise ``root`` (argument), ``$COURSE_DATA`` or ``~/.cache/detection-course``.
  The archives are downloaded to ``<root>/<archive file name>`` and extracted to
  ``<root>/VOCdevkit/VOC2007``.  An archive copied there by hand is verified and
  used instead of downloading.

Guarantees
----------
* Downloads use the standard library only, go to ``<file>.part`` and are resumed
  with an HTTP ``Range`` request after an interruption (a bounded number of
  times per mirror, then the next mirror resumes the same ``.part``).
* A file is renamed to its final name only after its MD5 matched; a file that
  does not match is deleted (a download) or renamed to ``<file>.bad`` (a file
  found in place), never left under the name of a good one.
* Extraction goes to a temporary directory beside the destination and is moved
  into place with :func:`os.replace`; a completion marker is written last.  A tree
  without its marker is treated as incomplete and extracted again.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

from tqdm.auto import tqdm

from data_utils.atomic import atomic_write_text
from data_utils.cli_options import EXIT_FAILURE, EXIT_OK, add_data_root, add_no_progress, add_voc_root
from data_utils.errors import DatasetError, DownloadError

logger = logging.getLogger(__name__)

#: Environment variable naming an existing VOCdevkit (or VOC2007) directory.
VOC_ROOT_ENV: str = "VOC_ROOT"
#: Environment variable naming the course's data directory (default root).
COURSE_DATA_ENV: str = "COURSE_DATA"
#: Root used when neither ``root`` nor ``$COURSE_DATA`` is given.
DEFAULT_ROOT: Path = Path("~/.cache/detection-course")

#: Base URLs tried in order: the official host, its HTTPS twin, a long-lived mirror.
VOC2007_MIRRORS: tuple[str, ...] = (
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/",
    "https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/",
    "https://pjreddie.com/media/files/",
)
TRAINVAL_FILENAME: str = "VOCtrainval_06-Nov-2007.tar"
#: MD5 recorded by torchvision for the trainval archive.
TRAINVAL_MD5: str = "c52e279531787c972589f7e41ab4ae64"
TEST_FILENAME: str = "VOCtest_06-Nov-2007.tar"
#: MD5 recorded by torchvision for the test archive.
TEST_MD5: str = "b6e924de25625d8de591ea690078ad9f"

#: Folders every usable VOC2007 directory has.
REQUIRED_DIRS: tuple[str, ...] = ("JPEGImages", "Annotations", "ImageSets/Main")

#: ``(connect, read)`` seconds: a dead host fails fast, a slow mirror is not cut off.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)
#: How many times one mirror may resume an interrupted transfer before the next is tried.
DEFAULT_RETRIES: int = 3
#: Pause before resume number ``n`` is ``n * DEFAULT_RETRY_DELAY`` seconds.
DEFAULT_RETRY_DELAY: float = 1.0

_CHUNK_SIZE = 1 << 20
_USER_AGENT = "detection-course-data-utils (python urllib)"
_EXTRACT_PREFIX = ".extracting-"

Timeout = float | tuple[float, float]


@dataclass(frozen=True)
class VocArchive:
    """One downloadable archive.

    filename: name of the file on the server and on disk;
    md5: expected hex digest of the whole file;
    urls: full URLs, tried in order;
    split: the ``ImageSets/Main/<split>.txt`` list the archive provides, used to
        check that an existing tree contains this archive's part of the data.
    """

    filename: str
    md5: str
    urls: tuple[str, ...]
    split: str


#: The archives :func:`ensure_voc2007` knows, by the name used in ``archives=``.
ARCHIVES: Mapping[str, VocArchive] = MappingProxyType(
    {
        "trainval": VocArchive(
            TRAINVAL_FILENAME,
            TRAINVAL_MD5,
            tuple(base + TRAINVAL_FILENAME for base in VOC2007_MIRRORS),
            "trainval",
        ),
        "test": VocArchive(
            TEST_FILENAME,
            TEST_MD5,
            tuple(base + TEST_FILENAME for base in VOC2007_MIRRORS),
            "test",
        ),
    }
)


class _Interrupted(Exception):
    """A transfer started but did not finish; it may be resumed from the ``.part`` file."""


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
    """Map a user-given location to its ``VOC2007`` directory.

    Accepts the ``VOC2007`` directory itself, a ``VOCdevkit`` directory holding
    it, or a directory holding ``VOCdevkit``.  Does not check the contents (see
    :func:`check_voc2007`); returns ``path`` unchanged if nothing better matches.
    """
    path = Path(path).expanduser()
    for candidate in (path / "VOC2007", path / "VOCdevkit" / "VOC2007"):
        if candidate.is_dir():
            return candidate
    return path


def check_voc2007(
    voc2007: str | os.PathLike[str], *, splits: Sequence[str] = (), source: str = ""
) -> Path:
    """Return ``voc2007`` if it holds a usable VOC 2007 tree, else raise :class:`DatasetError`.

    Usable means the folders in :data:`REQUIRED_DIRS` exist and, for each name in
    ``splits``, ``ImageSets/Main/<split>.txt`` exists.  ``source`` (e.g.
    ``"VOC_ROOT"``) is named in the message so the user knows what to change.
    """
    voc2007 = Path(voc2007)
    where = f"{voc2007}" + (f" (from {source})" if source else "")
    if not voc2007.is_dir():
        raise DatasetError(
            f"PASCAL VOC 2007 directory {where} does not exist. "
            f"Point {VOC_ROOT_ENV} / voc_root at an existing VOCdevkit or VOC2007 directory, "
            f"or unset it to download the data."
        )
    missing = [f"{name}/" for name in REQUIRED_DIRS if not (voc2007 / name).is_dir()]
    missing += [
        f"ImageSets/Main/{split}.txt"
        for split in splits
        if not (voc2007 / "ImageSets" / "Main" / f"{split}.txt").is_file()
    ]
    if missing:
        raise DatasetError(
            f"PASCAL VOC 2007 directory {where} is incomplete: missing {', '.join(missing)}. "
            f"Extract the complete archive(s) ({TRAINVAL_FILENAME}"
            + (f", {TEST_FILENAME}" if "test" in splits else "")
            + f") so that this directory has JPEGImages/, Annotations/ and ImageSets/Main/, "
            f"point {VOC_ROOT_ENV} / voc_root at a complete copy, or unset it and let "
            f"ensure_voc2007 download the data (if the tree is one it extracted, delete it "
            f"and run again)."
        )
    return voc2007


# ------------------------------------------------------------------------ download


def md5sum(path: str | os.PathLike[str]) -> str:
    """Hex MD5 digest of the file at ``path``, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def _split_timeout(timeout: Timeout) -> tuple[float, float]:
    if isinstance(timeout, tuple):
        connect, read = timeout
        return float(connect), float(read)
    return float(timeout), float(timeout)


class _ReadTimeoutMixin:
    """Gives the socket ``read_timeout`` once connected; ``urlopen``'s timeout then only bounds the connect."""

    read_timeout: float

    def do_open(self, http_class: Callable[..., Any], req: Any, **kwargs: Any) -> Any:
        read_timeout = self.read_timeout

        def make_connection(*args: Any, **kw: Any) -> http.client.HTTPConnection:
            conn = http_class(*args, **kw)
            connect = conn.connect

            def connect_then_set_read_timeout() -> None:
                connect()
                conn.sock.settimeout(read_timeout)

            conn.connect = connect_then_set_read_timeout  # type: ignore[method-assign]
            return conn

        return super().do_open(make_connection, req, **kwargs)  # type: ignore[misc]


class _HTTPHandler(_ReadTimeoutMixin, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_ReadTimeoutMixin, urllib.request.HTTPSHandler):
    pass


def _build_opener(read_timeout: float) -> urllib.request.OpenerDirector:
    handlers = [_HTTPHandler(), _HTTPSHandler()]
    for handler in handlers:
        handler.read_timeout = read_timeout
    return urllib.request.build_opener(*handlers)


def _describe(exc: BaseException) -> str:
    """A one-line, human-readable reason for a failed request."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return _describe(reason)
        return str(reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror}); offline?"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` of a ``Content-Range`` header; ``None`` where unknown."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _content_length(headers: Any) -> int | None:
    try:
        return int(headers.get("Content-Length"))
    except (TypeError, ValueError):
        return None


def _fetch_once(
    url: str,
    part: Path,
    *,
    opener: urllib.request.OpenerDirector,
    connect_timeout: float,
    progress: bool,
) -> None:
    """One request for ``url`` that writes to (or continues) ``part`` until the body ends.

    Returns normally only if the whole file is in ``part``.  Raises
    :class:`_Interrupted` if the transfer started but did not finish (resumable),
    ``OSError``/``HTTPException`` if no usable response came, and
    :class:`DownloadError` if ``part`` cannot be written.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = opener.open(request, timeout=connect_timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        _, total = _parse_content_range(exc.headers.get("Content-Range"))
        exc.close()
        if total == offset:
            return  # the partial file already holds every byte
        part.unlink(missing_ok=True)
        raise _Interrupted(
            f"server cannot resume at byte {offset} (HTTP 416); starting over"
        ) from None

    with response:
        if response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Interrupted(f"server resumed at byte {start}, not {offset}; starting over")
            if total is None:
                length = _content_length(response.headers)
                total = None if length is None else offset + length
            mode = "ab"
        else:  # 200: the whole file, whether or not a Range was asked for
            offset, total, mode = 0, _content_length(response.headers), "wb"
        received = _copy_body(response, part, mode=mode, offset=offset, total=total, progress=progress)

    if total is not None and received != total:
        if received > total:
            part.unlink(missing_ok=True)
            raise _Interrupted(f"received {received} bytes but {total} were announced; starting over")
        raise _Interrupted(f"connection closed after {received} of {total} bytes")


def _copy_body(
    response: BinaryIO, part: Path, *, mode: str, offset: int, total: int | None, progress: bool
) -> int:
    """Write ``response`` to ``part`` (``mode`` "ab" or "wb"); return the size of ``part`` reached."""
    received = offset
    try:
        out = open(part, mode)
    except OSError as exc:
        raise DownloadError(f"Cannot write {part}: {exc}. Choose another root (--data-root / COURSE_DATA).") from exc
    with out, tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=part.name.removesuffix(".part"),
        disable=not progress,
    ) as bar:
        while True:
            try:
                chunk = response.read(_CHUNK_SIZE)
            except (OSError, http.client.HTTPException) as exc:
                raise _Interrupted(
                    f"connection lost after {received} of {total or '?'} bytes ({_describe(exc)})"
                ) from exc
            if not chunk:
                return received
            try:
                out.write(chunk)
            except OSError as exc:
                raise DownloadError(
                    f"Cannot write {part}: {exc}. Free some disk space or choose another root "
                    f"(--data-root / COURSE_DATA)."
                ) from exc
            received += len(chunk)
            bar.update(len(chunk))


def _fetch_from_mirror(
    url: str,
    part: Path,
    *,
    opener: urllib.request.OpenerDirector,
    connect_timeout: float,
    retries: int,
    retry_delay: float,
    progress: bool,
) -> str | None:
    """Fetch ``url`` into ``part``, resuming up to ``retries`` times; ``None`` on success, else why not."""
    attempt = 0
    while True:
        attempt += 1
        try:
            _fetch_once(url, part, opener=opener, connect_timeout=connect_timeout, progress=progress)
            return None
        except _Interrupted as exc:
            if attempt > retries:
                return f"transfer interrupted {attempt} times, last: {exc}"
            logger.warning("%s: %s; resuming (retry %d of %d)", url, exc, attempt, retries)
            time.sleep(retry_delay * attempt)
        except (OSError, http.client.HTTPException) as exc:
            return _describe(exc)


def _manual_install_hint(archive: VocArchive, target: Path) -> str:
    tree = target.parent / "VOCdevkit" / "VOC2007"
    hint = (
        f"To install it by hand: download {archive.filename} on a machine with internet access "
        f"(e.g. from {archive.urls[0]}; md5 {archive.md5}), copy it to\n    {target}\n"
        f"and run this again (it is verified and extracted there). If you already have an "
        f"extracted copy, set {VOC_ROOT_ENV}=/path/to/VOCdevkit or pass voc_root=... "
        f"(command line: python -m data_utils download --voc-root DIR)."
    )
    if tree.is_dir():
        hint += (
            f"\nNote: {tree} exists but has no completion marker for {archive.filename}, so it is "
            f"treated as incomplete; if you extracted it yourself, set {VOC_ROOT_ENV}={tree}."
        )
    return hint


def download_archive(
    archive: VocArchive,
    dest_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    timeout: Timeout = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    retry_delay: float = DEFAULT_RETRY_DELAY,
) -> Path:
    """Download ``archive`` to ``dest_dir/archive.filename`` and return that path.

    Mirrors in ``archive.urls`` are tried in order.  Data goes to ``<file>.part``;
    an interrupted transfer is resumed with ``Range`` up to ``retries`` times per
    mirror, and the next mirror continues the same ``.part``.  ``timeout`` is
    seconds, or ``(connect, read)`` seconds.  The final name appears only once the
    MD5 matched; a mismatching download is deleted.  Raises :class:`DownloadError`
    listing every URL with its failure and how to install the file by hand.
    """
    dest_dir = Path(dest_dir).expanduser()
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / archive.filename
    part = target.with_name(target.name + ".part")
    connect_timeout, read_timeout = _split_timeout(timeout)
    opener = _build_opener(read_timeout)

    failures: list[str] = []
    for url in archive.urls:
        problem = _fetch_from_mirror(
            url,
            part,
            opener=opener,
            connect_timeout=connect_timeout,
            retries=retries,
            retry_delay=retry_delay,
            progress=progress,
        )
        if problem is None:
            actual = md5sum(part)
            if actual == archive.md5:
                os.replace(part, target)
                return target
            part.unlink(missing_ok=True)
            problem = (
                f"checksum mismatch for {archive.filename}: expected md5 {archive.md5}, "
                f"got {actual} (the download was deleted)"
            )
        logger.info("%s: %s", url, problem)
        failures.append(f"  - {url}: {problem}")

    raise DownloadError(
        f"Could not download {archive.filename} (PASCAL VOC 2007) to {target}. Tried:\n"
        + "\n".join(failures)
        + "\n"
        + _manual_install_hint(archive, target)
    )


def _verified_local_copy(archive: VocArchive, target: Path) -> Path | None:
    """``target`` if it exists with the right MD5; a wrong one is renamed to ``<file>.bad``."""
    if not target.is_file():
        return None
    actual = md5sum(target)
    if actual == archive.md5:
        return target
    bad = target.with_name(target.name + ".bad")
    os.replace(target, bad)
    logger.warning(
        "%s has md5 %s, expected %s; renamed it to %s", target, actual, archive.md5, bad.name
    )
    return None


# ------------------------------------------------------------------------- extract


def _checked_members(tar: tarfile.TarFile, dest: Path) -> Iterator[tarfile.TarInfo]:
    """Regular files and directories that stay inside ``dest`` (for Pythons without ``filter=``)."""
    dest = dest.resolve()
    for member in tar:
        target = (dest / member.name).resolve()
        if member.name.startswith("/") or not target.is_relative_to(dest):
            raise tarfile.TarError(f"member {member.name!r} would be written outside the target")
        if member.isfile() or member.isdir():
            yield member


def _extract_tar(tar_path: Path, dest: Path) -> None:
    with tarfile.open(tar_path) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tar.extractall(dest, members=_checked_members(tar, dest))


def _move_into_place(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``: one atomic rename if ``dst`` is absent, else merge entry by entry."""
    if not dst.exists() and not dst.is_symlink():
        os.replace(src, dst)
        return
    dst_is_dir = dst.is_dir() and not dst.is_symlink()
    if src.is_dir() and dst_is_dir:
        for child in src.iterdir():
            _move_into_place(child, dst / child.name)
        return
    if dst_is_dir:
        shutil.rmtree(dst)
    elif src.is_dir():
        dst.unlink()
    os.replace(src, dst)




def extract_archive(
    tar_path: str | os.PathLike[str], root: str | os.PathLike[str], archive: VocArchive
) -> Path:
    """Extract ``tar_path`` (holding ``VOCdevkit/VOC2007/...``) under ``root``; return the VOC2007 dir.

    The archive is unpacked into a temporary directory inside ``root`` with
    tarfile's ``"data"`` filter, then moved into ``root/VOCdevkit`` (a single
    rename when that does not exist yet, else merged file by file), and only then
    is :func:`extraction_marker` written.  On failure the temporary directory is
    removed and no marker exists; :class:`DatasetError` says why.
    """
    tar_path = Path(tar_path)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    marker = extraction_marker(root, archive)
    marker.unlink(missing_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{_EXTRACT_PREFIX}{archive.filename}-", dir=root))
    try:
        try:
            _extract_tar(tar_path, staging)
            if not (staging / "VOCdevkit" / "VOC2007").is_dir():
                raise DatasetError(
                    f"{tar_path} does not contain VOCdevkit/VOC2007/; it is not a PASCAL VOC "
                    f"2007 archive. Delete it and run again."
                )
            _move_into_place(staging / "VOCdevkit", root / "VOCdevkit")
            atomic_write_text(marker, archive.md5 + "\n")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DatasetError(
                f"Could not extract {tar_path} into {root}: {exc}. Check the free disk space "
                f"(VOC 2007 needs about 1 GB per archive); if the archive is damaged, delete it "
                f"and run again."
            ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return voc2007_dir(root)


# ---------------------------------------------------------------------- entry point


def ensure_voc2007(
    root: str | os.PathLike[str] | None = None,
    *,
    voc_root: str | os.PathLike[str] | None = None,
    download: bool = True,
    archives: Sequence[str] = ("trainval",),
    progress: bool = True,
    archive_table: Mapping[str, VocArchive] | None = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    retry_delay: float = DEFAULT_RETRY_DELAY,
) -> Path:
    """Return the ``VOCdevkit/VOC2007`` directory, downloading and extracting it if needed.

    With ``voc_root`` (or ``$VOC_ROOT`` when ``voc_root`` is None) the existing
    tree there is used: a ``VOCdevkit``, ``VOC2007`` or parent-of-``VOCdevkit``
    path; it must hold :data:`REQUIRED_DIRS` and the split list of every archive in
    ``archives``, else :class:`DatasetError` names what is missing.  Nothing is
    downloaded then.

    Otherwise, under ``root`` (default :func:`default_root`), each archive in
    ``archives`` (keys of ``archive_table``, default :data:`ARCHIVES`) whose
    completion marker is missing is taken from ``<root>/<filename>`` if that file
    has the right MD5, else downloaded (only if ``download``; otherwise
    :class:`DatasetError`), then extracted atomically.  ``progress``, ``timeout``,
    ``retries`` and ``retry_delay`` are passed to :func:`download_archive`.
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
                raise DatasetError(
                    f"PASCAL VOC 2007 ({archive.filename}) is not extracted under {root} "
                    f"and download=False.\n" + _manual_install_hint(archive, target)
                )
            tar_path = download_archive(
                archive,
                root,
                progress=progress,
                timeout=timeout,
                retries=retries,
                retry_delay=retry_delay,
            )
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
    """Fetch or check VOC 2007 as ``args`` say (see :func:`add_arguments`): prints the VOC2007
    directory and returns 0; on a :class:`DatasetError` or :class:`DownloadError` prints the
    message to stderr and returns 1."""
    try:
        path = ensure_voc2007(
            args.data_root,
            voc_root=args.voc_root,
            archives=("trainval", "test") if args.test else ("trainval",),
            progress=not args.no_progress,
        )
    except (DatasetError, DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(path)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m data_utils download [--data-root DIR] [--voc-root DIR] [--test] [--no-progress]``: :func:`run`.

    ``argv`` is the argument list *after* ``download`` (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="python -m data_utils download", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))
