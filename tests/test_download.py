"""Tests of data_utils.data.download against a real HTTP server on 127.0.0.1.

The server (``Mirror``) serves small tars in the VOC layout, implements
``Range`` itself, can drop a connection after a number of body bytes, ignore
``Range``, redirect or answer 404, and records every request it gets.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data_utils.data import download
from data_utils.data.download import (
    TEST_FILENAME,
    TRAINVAL_FILENAME,
    VocArchive,
    ensure_voc2007,
    extraction_marker,
    main,
)
from data_utils.errors import DatasetError, DownloadError

#: Keyword arguments that keep every test quick and quiet.
FAST = dict(progress=False, timeout=(2.0, 2.0), retries=2, retry_delay=0.0)


# ----------------------------------------------------------------------- test data


def make_voc_tar(split: str = "trainval", image_id: str = "000005") -> bytes:
    """A tiny archive laid out like the real ones: ``VOCdevkit/VOC2007/...``."""
    rng = random.Random(image_id)
    files = {
        f"VOCdevkit/VOC2007/JPEGImages/{image_id}.jpg": rng.randbytes(6000),
        f"VOCdevkit/VOC2007/Annotations/{image_id}.xml": (
            f"<annotation><filename>{image_id}.jpg</filename></annotation>\n".encode()
        ),
        f"VOCdevkit/VOC2007/ImageSets/Main/{split}.txt": f"{image_id}\n".encode(),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for directory in (
            "VOCdevkit",
            "VOCdevkit/VOC2007",
            "VOCdevkit/VOC2007/JPEGImages",
            "VOCdevkit/VOC2007/Annotations",
            "VOCdevkit/VOC2007/ImageSets",
            "VOCdevkit/VOC2007/ImageSets/Main",
        ):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


TRAINVAL_TAR = make_voc_tar()
TEST_TAR = make_voc_tar("test", "000001")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def trainval_table(*urls: str, checksum: str | None = None) -> dict[str, VocArchive]:
    return {
        "trainval": VocArchive(
            TRAINVAL_FILENAME, checksum or md5(TRAINVAL_TAR), tuple(urls), "trainval"
        )
    }


def make_tree(parent: Path, *, without: str | None = None, splits: tuple[str, ...] = ("trainval",)) -> Path:
    """An extracted-looking ``parent/VOCdevkit/VOC2007``, optionally lacking one folder."""
    voc = parent / "VOCdevkit" / "VOC2007"
    for name in ("JPEGImages", "Annotations", "ImageSets/Main"):
        if name != without:
            (voc / name).mkdir(parents=True, exist_ok=True)
    if without != "ImageSets/Main":
        for split in splits:
            (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("000005\n")
    return voc


def leftovers(root: Path) -> list[str]:
    """Temporary files and directories the code must not leave behind."""
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".part") or p.name.startswith("."))


# -------------------------------------------------------------------- the server


@dataclass
class Route:
    body: bytes = b""
    #: Per request, in order: close the connection after this many body bytes (None: send all).
    drop_after: list[int | None] = field(default_factory=list)
    ignore_range: bool = False
    redirect_to: str | None = None
    #: Seconds to wait between the headers and the body (a slow mirror).
    body_delay: float = 0.0


@dataclass
class Seen:
    path: str
    range: str | None
    status: int = 0


class Mirror:
    """A ThreadingHTTPServer on 127.0.0.1 with routes and a request log."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.mirror = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def serve(self, path: str, body: bytes, **options: object) -> str:
        self.routes[path] = Route(body, **options)  # type: ignore[arg-type]
        return self.url(path)

    def seen(self, path: str) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # silence the log (the stdlib's parameter name)
        pass

    def do_GET(self) -> None:  # the stdlib's name
        mirror: Mirror = self.server.mirror  # type: ignore[attr-defined]
        seen = Seen(self.path, self.headers.get("Range"))
        with mirror.lock:
            mirror.requests.append(seen)
            route = mirror.routes.get(self.path)
            drop = route.drop_after.pop(0) if route and route.drop_after else None

        if route is None:
            seen.status = 404
            self.send_error(404)
            return
        if route.redirect_to is not None:
            seen.status = 302
            self.send_response(302)
            self.send_header("Location", route.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return

        body, start = route.body, 0
        match = re.fullmatch(r"bytes=(\d+)-", seen.range or "")
        if match and not route.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                seen.status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            seen.status = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            seen.status = 200
            self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.flush()
        time.sleep(route.body_delay)
        payload = body[start:] if drop is None else body[start : start + drop]
        self.wfile.write(payload)
        self.wfile.flush()
        self.close_connection = True  # HTTP/1.0: the client sees EOF, short if dropped


class SilentServer:
    """Accepts connections and never answers (closes them after ``hold`` seconds)."""

    def __init__(self, hold: float = 8.0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.hold, self.stop = hold, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"

    def _run(self) -> None:
        held: list[tuple[float, socket.socket]] = []
        while not self.stop.is_set():
            try:
                held.append((time.monotonic(), self.sock.accept()[0]))
            except TimeoutError:
                pass
            for item in [h for h in held if time.monotonic() - h[0] > self.hold]:
                item[1].close()
                held.remove(item)
        for _, conn in held:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    proxies = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
    for name in ("VOC_ROOT", "COURSE_DATA", *proxies):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    server = Mirror()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/voc/{TRAINVAL_FILENAME}"


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


PATH = f"/voc/{TRAINVAL_FILENAME}"


def assert_extracted(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2007"
    assert (voc / "JPEGImages" / "000005.jpg").read_bytes() == random.Random("000005").randbytes(6000)
    assert (voc / "Annotations" / "000005.xml").is_file()
    assert (voc / "ImageSets" / "Main" / "trainval.txt").read_text() == "000005\n"
    assert (root / TRAINVAL_FILENAME).read_bytes() == TRAINVAL_TAR
    assert extraction_marker(root, trainval_table()["trainval"]).is_file()
    assert not (root / f"{TRAINVAL_FILENAME}.part").exists()
    return voc


# ------------------------------------------------------------------------ tests


def test_default_table_has_the_official_files_mirrors_and_checksums() -> None:
    trainval, test = download.ARCHIVES["trainval"], download.ARCHIVES["test"]
    assert trainval.md5 == "c52e279531787c972589f7e41ab4ae64"
    assert test.md5 == "b6e924de25625d8de591ea690078ad9f"
    assert trainval.urls[0] == "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar"
    assert "https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar" in trainval.urls
    assert "https://pjreddie.com/media/files/VOCtrainval_06-Nov-2007.tar" in trainval.urls
    assert all(url.endswith("/VOCtest_06-Nov-2007.tar") for url in test.urls) and len(test.urls) >= 3


def test_download_extracts_writes_marker_and_is_not_repeated(mirror: Mirror, tmp_path: Path) -> None:
    table = trainval_table(mirror.serve(PATH, TRAINVAL_TAR))

    path = ensure_voc2007(tmp_path, archive_table=table, **FAST)

    assert path == tmp_path / "VOCdevkit" / "VOC2007"
    assert_extracted(tmp_path)
    assert leftovers(tmp_path) == []
    assert [(r.range, r.status) for r in mirror.requests] == [(None, 200)]

    assert ensure_voc2007(tmp_path, archive_table=table, **FAST) == path
    assert len(mirror.requests) == 1, "a complete extraction must not be downloaded again"


def test_checksum_mismatch_raises_and_leaves_nothing_usable(mirror: Mirror, tmp_path: Path) -> None:
    url = mirror.serve(PATH, TRAINVAL_TAR)
    wrong = "0123456789abcdef0123456789abcdef"

    with pytest.raises(DownloadError) as info:
        ensure_voc2007(tmp_path, archive_table=trainval_table(url, checksum=wrong), **FAST)

    message = str(info.value)
    for needed in (TRAINVAL_FILENAME, wrong, md5(TRAINVAL_TAR), url):
        assert needed in message
    assert not (tmp_path / TRAINVAL_FILENAME).exists()
    assert not (tmp_path / "VOCdevkit").exists()
    assert leftovers(tmp_path) == []


def test_interrupted_transfer_is_resumed_with_range(mirror: Mirror, tmp_path: Path) -> None:
    table = trainval_table(mirror.serve(PATH, TRAINVAL_TAR, drop_after=[2500]))

    ensure_voc2007(tmp_path, archive_table=table, **FAST)

    assert [(r.range, r.status) for r in mirror.requests] == [(None, 200), ("bytes=2500-", 206)]
    assert_extracted(tmp_path)


def test_retries_are_bounded_then_next_mirror_resumes_the_part_file(mirror: Mirror, tmp_path: Path) -> None:
    flaky = mirror.serve("/flaky" + PATH, TRAINVAL_TAR, drop_after=[1000] * 10)
    good = mirror.serve(PATH, TRAINVAL_TAR)

    ensure_voc2007(tmp_path, archive_table=trainval_table(flaky, good), **{**FAST, "retries": 2})

    assert [r.range for r in mirror.seen("/flaky" + PATH)] == [None, "bytes=1000-", "bytes=2000-"]
    assert [(r.range, r.status) for r in mirror.seen(PATH)] == [("bytes=3000-", 206)]
    assert_extracted(tmp_path)


def test_server_ignoring_range_restarts_from_zero(mirror: Mirror, tmp_path: Path) -> None:
    table = trainval_table(mirror.serve(PATH, TRAINVAL_TAR, drop_after=[2500], ignore_range=True))

    ensure_voc2007(tmp_path, archive_table=table, **FAST)

    assert [(r.range, r.status) for r in mirror.requests] == [(None, 200), ("bytes=2500-", 200)]
    assert_extracted(tmp_path)


@pytest.mark.parametrize("extra", [b"", b"junk"], ids=["part-complete", "part-too-long"])
def test_range_not_satisfiable_is_handled(mirror: Mirror, tmp_path: Path, extra: bytes) -> None:
    table = trainval_table(mirror.serve(PATH, TRAINVAL_TAR))
    (tmp_path / f"{TRAINVAL_FILENAME}.part").write_bytes(TRAINVAL_TAR + extra)

    ensure_voc2007(tmp_path, archive_table=table, **FAST)

    statuses = [(r.range, r.status) for r in mirror.requests]
    assert statuses[0] == (f"bytes={len(TRAINVAL_TAR) + len(extra)}-", 416)
    assert statuses[1:] == ([] if not extra else [(None, 200)])
    assert_extracted(tmp_path)


def test_dead_mirrors_are_skipped_and_redirects_followed(
    mirror: Mirror, tmp_path: Path, closed_port_url: str
) -> None:
    mirror.serve(PATH, TRAINVAL_TAR)
    mirror.routes["/moved" + PATH] = Route(redirect_to=PATH)
    urls = (closed_port_url, mirror.url("/missing" + PATH), mirror.url("/moved" + PATH))

    ensure_voc2007(tmp_path, archive_table=trainval_table(*urls), **FAST)

    assert [(r.path, r.status) for r in mirror.requests] == [
        ("/missing" + PATH, 404),
        ("/moved" + PATH, 302),
        (PATH, 200),
    ]
    assert_extracted(tmp_path)


def test_all_mirrors_down_fails_fast_listing_every_url(
    mirror: Mirror, tmp_path: Path, closed_port_url: str, silent_server: SilentServer
) -> None:
    urls = (closed_port_url, mirror.url("/missing" + PATH), silent_server.url(PATH))
    start = time.monotonic()

    with pytest.raises(DownloadError) as info:
        ensure_voc2007(tmp_path, archive_table=trainval_table(*urls), **{**FAST, "timeout": (1.0, 1.0)})

    assert time.monotonic() - start < 5.0
    message = str(info.value)
    for url in urls:
        assert url in message
    assert "404" in message and "refused" in message.lower() and "timed out" in message
    assert str(tmp_path / TRAINVAL_FILENAME) in message, "must say where to put the file by hand"
    assert "VOC_ROOT" in message
    assert not (tmp_path / "VOCdevkit").exists()


def test_offline_says_so_on_the_first_line_with_how_to_use_an_existing_copy(
    tmp_path: Path, closed_port_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No mirror answers: the first line alone must tell the user what to do (the details follow)."""
    monkeypatch.setattr(download, "ARCHIVES", trainval_table(closed_port_url, closed_port_url))

    assert main(["--data-root", str(tmp_path), "--no-progress"]) == 1

    first, *details = capsys.readouterr().err.splitlines()
    assert "offline" in first and "--voc-root" in first and "VOC_ROOT" in first
    assert str(tmp_path / TRAINVAL_FILENAME) in first
    assert sum(line.startswith(f"  - {closed_port_url}: ") for line in details) == 2, "every URL tried is listed"


def test_a_host_that_answers_is_not_called_offline(mirror: Mirror, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        ensure_voc2007(tmp_path, archive_table=trainval_table(mirror.url("/missing" + PATH)), **FAST)
    first = str(info.value).splitlines()[0]
    assert "offline" not in first and "--voc-root" in first


def test_a_body_slower_than_the_connect_timeout_is_not_cut_off(mirror: Mirror, tmp_path: Path) -> None:
    """``(connect, read)``: the first bounds reaching the host, the second each read of the body."""
    table = trainval_table(mirror.serve(PATH, TRAINVAL_TAR, body_delay=1.0))

    ensure_voc2007(tmp_path, archive_table=table, **{**FAST, "timeout": (0.3, 5.0)})

    assert [(r.range, r.status) for r in mirror.requests] == [(None, 200)]
    assert_extracted(tmp_path)


def test_a_single_number_timeout_bounds_a_stalled_body(mirror: Mirror, tmp_path: Path) -> None:
    url = mirror.serve(PATH, TRAINVAL_TAR, body_delay=3.0)
    start = time.monotonic()

    with pytest.raises(DownloadError, match="interrupted"):
        ensure_voc2007(tmp_path, archive_table=trainval_table(url), **{**FAST, "timeout": 0.5, "retries": 0})

    assert time.monotonic() - start < 2.5


def test_failed_extraction_leaves_no_complete_looking_tree(mirror: Mirror, tmp_path: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(TRAINVAL_TAR)) as tar:
        last = [m for m in tar.getmembers() if m.isfile()][-1]
    broken = TRAINVAL_TAR[: last.offset_data + 10]  # earlier members extract, the last one fails
    url = mirror.serve(PATH, broken)

    with pytest.raises(DatasetError, match="Could not extract"):
        ensure_voc2007(tmp_path, archive_table=trainval_table(url, checksum=md5(broken)), **FAST)

    assert not (tmp_path / "VOCdevkit").exists()
    assert not extraction_marker(tmp_path, trainval_table()["trainval"]).exists()
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []

    mirror.serve(PATH, TRAINVAL_TAR)
    ensure_voc2007(tmp_path, archive_table=trainval_table(url), **FAST)
    assert_extracted(tmp_path)
    assert (tmp_path / f"{TRAINVAL_FILENAME}.bad").read_bytes() == broken
    assert leftovers(tmp_path) == []


def test_tree_without_marker_is_extracted_again(mirror: Mirror, tmp_path: Path) -> None:
    make_tree(tmp_path)  # looks complete, but nothing says the extraction finished
    table = trainval_table(mirror.serve(PATH, TRAINVAL_TAR))

    ensure_voc2007(tmp_path, archive_table=table, **FAST)

    assert len(mirror.requests) == 1
    assert_extracted(tmp_path)


def test_archive_placed_by_hand_is_used_without_downloading(tmp_path: Path, closed_port_url: str) -> None:
    (tmp_path / TRAINVAL_FILENAME).write_bytes(TRAINVAL_TAR)

    path = ensure_voc2007(tmp_path, archive_table=trainval_table(closed_port_url), download=False, **FAST)

    assert path == assert_extracted(tmp_path)


def test_no_data_and_download_false_says_where_to_put_the_archive(tmp_path: Path, closed_port_url: str) -> None:
    with pytest.raises(DatasetError) as info:
        ensure_voc2007(tmp_path, archive_table=trainval_table(closed_port_url), download=False, **FAST)
    assert str(tmp_path / TRAINVAL_FILENAME) in str(info.value)
    assert "VOC_ROOT" in str(info.value)


@pytest.mark.parametrize("how", ["argument", "env"])
@pytest.mark.parametrize("level", ["VOCdevkit", "VOC2007"])
def test_existing_copy_is_used_as_vocdevkit_or_voc2007(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_port_url: str, how: str, level: str
) -> None:
    voc = make_tree(tmp_path / "elsewhere")
    given = voc if level == "VOC2007" else voc.parent
    root = tmp_path / "root"
    kwargs = {"voc_root": given} if how == "argument" else {}
    if how == "env":
        monkeypatch.setenv("VOC_ROOT", str(given))

    path = ensure_voc2007(root, archive_table=trainval_table(closed_port_url), **kwargs, **FAST)

    assert path == voc
    assert not root.exists(), "nothing may be downloaded or created when a copy is given"


def test_voc_root_argument_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    voc = make_tree(tmp_path / "good")
    monkeypatch.setenv("VOC_ROOT", str(tmp_path / "does-not-exist"))
    assert ensure_voc2007(voc_root=voc.parent, **FAST) == voc


@pytest.mark.parametrize("missing", ["JPEGImages", "Annotations", "ImageSets/Main"])
def test_incomplete_existing_copy_names_the_missing_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    voc = make_tree(tmp_path, without=missing)
    monkeypatch.setenv("VOC_ROOT", str(voc.parent))

    with pytest.raises(DatasetError) as info:
        ensure_voc2007(**FAST)

    message = str(info.value)
    assert f"{missing}/" in message and "VOC_ROOT" in message and str(voc) in message
    others = {"JPEGImages", "Annotations", "ImageSets/Main"} - {missing}
    assert not any(f"missing {name}/" in message for name in others)


def test_existing_copy_without_the_test_split_is_rejected_when_test_is_asked(tmp_path: Path) -> None:
    voc = make_tree(tmp_path)
    assert ensure_voc2007(voc_root=voc, **FAST) == voc
    with pytest.raises(DatasetError, match=r"ImageSets/Main/test\.txt"):
        ensure_voc2007(voc_root=voc, archives=("trainval", "test"), **FAST)


def test_default_root_is_course_data(mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "course"))
    table = trainval_table(mirror.serve(PATH, TRAINVAL_TAR))
    assert ensure_voc2007(archive_table=table, **FAST) == tmp_path / "course" / "VOCdevkit" / "VOC2007"


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_can_be_disabled(
    mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str], progress: bool
) -> None:
    table = trainval_table(mirror.serve(PATH, TRAINVAL_TAR))
    ensure_voc2007(tmp_path, archive_table=table, **{**FAST, "progress": progress})
    err = capsys.readouterr().err
    assert (TRAINVAL_FILENAME in err) is progress


def test_main_with_voc_root_prints_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    voc = make_tree(tmp_path)
    assert main(["--voc-root", str(voc.parent), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(voc)


def test_main_downloads_trainval_and_test(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    table = {
        "trainval": trainval_table(mirror.serve(PATH, TRAINVAL_TAR))["trainval"],
        "test": VocArchive(TEST_FILENAME, md5(TEST_TAR), (mirror.serve(f"/voc/{TEST_FILENAME}", TEST_TAR),), "test"),
    }
    monkeypatch.setattr(download, "ARCHIVES", table)

    assert main(["--data-root", str(tmp_path), "--test", "--no-progress"]) == 0

    voc = assert_extracted(tmp_path)
    assert capsys.readouterr().out.strip() == str(voc)
    assert (voc / "ImageSets" / "Main" / "test.txt").read_text() == "000001\n"
    assert (voc / "JPEGImages" / "000001.jpg").is_file() and (voc / "JPEGImages" / "000005.jpg").is_file()
    assert extraction_marker(tmp_path, table["test"]).is_file()
    assert sorted(r.path for r in mirror.requests) == sorted([PATH, f"/voc/{TEST_FILENAME}"])


def test_main_reports_failure_with_exit_status_1(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = mirror.url("/missing" + PATH)
    monkeypatch.setattr(download, "ARCHIVES", trainval_table(url))

    assert main(["--data-root", str(tmp_path), "--no-progress"]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert url in captured.err and "404" in captured.err


@pytest.mark.parametrize("value", ["~/course-data", ""])
def test_every_default_data_folder_is_under_the_one_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 value: str) -> None:
    """The download, the embedded dataset and the tensor cache default to one folder, ``~`` expanded
    (the cache used to take ``$COURSE_DATA`` literally, so ``~/course-data`` made a folder named ``~``)."""
    from data_utils.data.cache import default_cache_dir
    from data_utils.data.download import default_root
    from data_utils.data.synthetic import default_embedded_root

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("COURSE_DATA", value)
    root = tmp_path / "course-data" if value else tmp_path / ".cache" / "detection-course"
    assert default_root() == root
    assert default_embedded_root() == root / "embedded"
    assert default_cache_dir() == root / "cache"
