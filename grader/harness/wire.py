"""The harness's wire format: length-prefixed frames, ``torch.save`` payloads and the checks
that keep decoded (untrusted) data small and plain.

Framing on every pipe: an 8-byte big-endian length, then the payload.
Zygote -> parent: a JSON header frame (:func:`send_header`), then (for ``done``/``oracle``)
one payload frame.  Parent -> zygote: a ``torch.save`` frame holding the job or an oracle
reply.  Both sides (the grader in :mod:`grader.sandbox`, the zygote in
:mod:`grader.harness.zygote`) use this one module, so the format cannot drift.

Standard library + torch only (torch imported lazily): the sandbox runs this module.
"""

from __future__ import annotations

import io
import json
import os
import struct

FRAME = struct.Struct(">Q")
#: Largest frame either side accepts (a full FCOS state dict is ~25 MB).
MAX_FRAME = 1 << 30


def write_frame(fd: int, data: bytes) -> None:
    view = memoryview(FRAME.pack(len(data)) + data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_exact(fd: int, n: int) -> bytes:
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, limit: int = MAX_FRAME) -> bytes:
    (length,) = FRAME.unpack(read_exact(fd, FRAME.size))
    if length > limit:
        raise ValueError(f"frame of {length} bytes exceeds the limit of {limit}")
    return read_exact(fd, length)


def dumps(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def loads(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


class BadReturn(TypeError):
    """A submission returned something that is not plain data."""


class Unbounded(ValueError):
    """A decoded message is too deep, too large or expands too much through shared references."""


def check_bounded(obj, max_depth: int = 32, max_nodes: int = 1_000_000, max_bytes: int = 2 << 30) -> None:
    """Raise :class:`Unbounded` unless ``obj`` (decoded from untrusted bytes) is a small tree.

    Every container and tensor is counted each time it is reached, so a
    structure sharing references (a 2 KB pickle of a list holding the same
    list twice, 48 levels deep, has 2^48 paths) fails after ``max_nodes``
    steps instead of expanding when the grader walks it; tensors count their
    bytes at every visit.  Iterative: a deep structure cannot overflow the stack.
    """
    import torch

    nodes, nbytes = 0, 0
    stack = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise Unbounded(f"more than {max_nodes} elements")
        if depth > max_depth:
            raise Unbounded(f"nested deeper than {max_depth} levels")
        if isinstance(item, torch.Tensor):
            nbytes += item.element_size() * item.numel()
            if nbytes > max_bytes:
                raise Unbounded(f"more than {max_bytes >> 20} MiB of tensors")
        elif isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            stack.extend((k, depth + 1) for k in item.keys())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str) and len(item) > max_bytes:
            raise Unbounded("a string too long")


def safe_text(error: BaseException, limit: int = 500) -> str:
    """``str(error)`` truncated to ``limit`` characters; never raises (a hostile ``__str__``)."""
    try:
        text = str(error)
    except BaseException:  # noqa: BLE001 - a hostile __str__ can raise anything
        return f"<{type(error).__name__} that cannot be printed>"
    if not isinstance(text, str):
        return ""
    return text if len(text) <= limit else text[:limit] + " ..."


def to_plain(obj, devices: list | None = None, _depth: int = 0):
    """Copy ``obj`` into plain tensors (on the CPU) and containers.

    Device types of the tensors are appended to ``devices`` in traversal
    order.  Named tuples become tuples; anything that is not a tensor, number,
    string, None, dtype, device or a list/tuple/dict of those raises
    :class:`BadReturn`.
    """
    import torch

    if _depth > 20:
        raise BadReturn("the returned value is nested too deeply")
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided:
            raise BadReturn(f"a returned tensor has layout {obj.layout}; return dense tensors")
        tensor = obj.detach()
        if type(tensor) is not torch.Tensor:
            tensor = tensor.as_subclass(torch.Tensor)
        if devices is not None:
            devices.append(tensor.device.type)
        try:
            return tensor.to("cpu", copy=True).contiguous()
        except Exception as error:  # noqa: BLE001 - e.g. a tensor on the meta device
            raise BadReturn(f"a returned tensor on device {tensor.device.type!r} could not be read back "
                            f"({type(error).__name__}); return tensors on the input's device") from None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (torch.dtype, torch.device)):
        return obj
    if isinstance(obj, torch.Size):
        return tuple(int(v) for v in obj)
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise BadReturn(f"a returned dict has a key of type {type(key).__name__}")
            out[key] = to_plain(value, devices, _depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, devices, _depth + 1) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    raise BadReturn(f"returned an object of type {type(obj).__name__}; expected tensors, numbers or lists/tuples/dicts of them")


def to_device(obj, device):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_device(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_device(v, device) for v in obj)
    return obj


def clone_data(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: clone_data(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone_data(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(clone_data(v) for v in obj)
    return obj


def send_header(fd: int, header: dict, payload: bytes | None = None) -> None:
    write_frame(fd, json.dumps(header).encode())
    if payload is not None:
        write_frame(fd, payload)


class FrameBuffer:
    """Accumulates bytes from a non-blocking pipe and yields complete frames."""

    def __init__(self, limit: int):
        self.data = bytearray()
        self.limit = limit
        self.overflow = False

    def feed(self, chunk: bytes):
        self.data += chunk
        frames = []
        while len(self.data) >= FRAME.size:
            (length,) = FRAME.unpack(self.data[:FRAME.size])
            if length > self.limit:
                self.overflow = True
                self.data.clear()
                break
            if len(self.data) < FRAME.size + length:
                break
            frames.append(bytes(self.data[FRAME.size:FRAME.size + length]))
            del self.data[:FRAME.size + length]
        return frames
