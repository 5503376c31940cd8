"""Atomic file output: write to a temporary file in the target folder, then rename over the
target, so a crash or interrupt never leaves a truncated file behind (a ``kill -9`` in the
middle of a write can leave the temporary ``.<name>.tmp-*`` file: `clean_stale_temporaries`
removes those). A failed write is a `WriteError` naming the file and the errno; `preflight`
checks a folder before a run writes to it."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


TEMPORARY_MARK = ".tmp-"  # in the names of atomic_write's temporary files


class WriteError(OSError):
    """A file could not be written: ``str()`` is one line naming the file, the reason and
    the errno (the file's previous version, if any, is untouched)."""

    def __init__(self, path: str | os.PathLike, code: int, reason: str) -> None:
        super().__init__(code, reason, str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        name = errno.errorcode.get(self.errno, "?") if self.errno else "?"
        return f"could not write {self.path}: {self.strerror} (errno {self.errno} {name})"


def _write_error(path: Path, e: BaseException) -> WriteError:
    """`e` (an OSError, or a library's error about a failed write) as a `WriteError`."""
    if isinstance(e, WriteError):
        return e
    if isinstance(e, OSError) and e.errno:
        return WriteError(path, e.errno, e.strerror or str(e))
    # libraries that wrap the OS error (torch.save: "PytorchStreamWriter failed writing
    # file"): the usual cause is a full disk; say so when the disk is (nearly) full
    try:
        full = shutil.disk_usage(path.parent).free < (1 << 20)
    except OSError:
        full = False
    if full:
        return WriteError(path, errno.ENOSPC, os.strerror(errno.ENOSPC))
    return WriteError(path, errno.EIO, f"{os.strerror(errno.EIO)}: {str(e).splitlines()[0]}")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Calls write(tmp_path) and renames tmp_path to `path` (creating parent folders); the
    file gets the permissions a plain open() would give it. Returns the path. A failure is a
    `WriteError` (the temporary file removed, `path` as it was); an interrupt removes the
    temporary file and propagates."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}{TEMPORARY_MARK}",
                                   suffix=p.suffix)
        os.close(fd)
    except OSError as e:
        raise _write_error(p, e) from e
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except Exception as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)):
            raise _write_error(p, e) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def clean_stale_temporaries(folder: str | os.PathLike) -> int:
    """Removes the temporary files that interrupted `atomic_write`s (``kill -9``) left in
    `folder` (not in its subfolders); returns how many. A missing folder has none."""
    d = Path(folder)
    if not d.is_dir():
        return 0
    n = 0
    for f in d.glob(f".*{TEMPORARY_MARK}*"):
        if f.is_file():
            try:
                f.unlink()
                n += 1
            except OSError:
                pass
    return n


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def preflight(folder: str | os.PathLike, needed: int, what: str = "the outputs") -> str:
    """Before a run writes to `folder`: makes it, checks that a file can be written there and
    that the disk has `needed` bytes free (an estimate of `what`). Returns a line saying so;
    `WriteError` naming the folder otherwise."""
    d = Path(folder)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(d, e) from e
    probe = d / f".write-probe{TEMPORARY_MARK}{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"fields")
    except OSError as e:
        raise _write_error(d, e) from e
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(d).free
    if free < needed:
        raise WriteError(d, errno.ENOSPC,
                         f"{os.strerror(errno.ENOSPC)}: the run needs about {_size(needed)} "
                         f"for {what}, {_size(free)} is free")
    return f"output {d}: writable, {_size(free)} free, about {_size(needed)} needed for {what}"


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes a text file atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_npy_atomic(path: str | os.PathLike, array: Any) -> Path:
    """Writes a numpy array as .npy atomically (no pickles)."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array), allow_pickle=False)

    return atomic_write(path, write)



def _video_frame(frame: Any, scale: int) -> Any:
    """One (H, W, 3) uint8 frame for H.264: enlarged `scale` times (nearest), then padded to
    even sides by repeating the last row and column (yuv420p needs even sides)."""
    import numpy as np

    if scale > 1:
        frame = np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(path: str | os.PathLike, frames: Sequence[Any], fps: int = 24) -> Path:
    """Writes frames ((H, W, 3) float tensors in [0, 1]) as a video, atomically. ``.mp4``
    goes through imageio's ffmpeg plugin (the imageio-ffmpeg package, a dependency; frames
    under 64 px are enlarged, odd sides padded, as H.264 needs); ``.gif`` needs imageio
    alone. A video the encoder left empty is an error, not a file."""
    import imageio
    import numpy as np

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"{p}: unknown video extension {p.suffix!r}; use .mp4 or .gif")
    if not frames:
        raise ValueError(f"{p}: no frames to write")
    arr = [(f.detach().cpu().clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8) for f in frames]
    if suffix == ".mp4":
        scale = max(1, -(-64 // max(1, min(arr[0].shape[:2]))))
        arr = [_video_frame(a, scale) for a in arr]

    def write(tmp: str) -> None:
        if suffix == ".gif":
            imageio.mimwrite(tmp, arr, format="GIF", duration=1000 / fps, loop=0)
        else:
            imageio.mimwrite(tmp, arr, format="FFMPEG", fps=fps, macro_block_size=1,
                             quality=8)
        if os.path.getsize(tmp) == 0:
            raise OSError(errno.EIO, "the video encoder wrote nothing")

    return atomic_write(p, write)


def _jsonable(obj: Any) -> Any:
    """`obj` with non-finite floats as None (strict JSON), tuples as lists, paths as str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return str(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        return _jsonable(obj.item())
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes `obj` as strict JSON (no NaN or Infinity: None), atomically."""
    return write_text_atomic(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def cache_root() -> Path:
    """Where fields keeps what it can make again (generated scenes, decoded downscaled
    images): $FIELDS_CACHE, else ~/.cache/fields."""
    return Path(os.environ.get("FIELDS_CACHE") or Path.home() / ".cache" / "fields")
