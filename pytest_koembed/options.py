"""Checks of the plugin's options before anything runs: one line each, naming the fix.

The plugin turns a :class:`KoembedError` raised here into a pytest usage error (exit status 4) at
configure time, before a model is loaded or a task evaluated. Without these checks a bad output
path surfaced only after the whole run, and a bad device or pooling once per task.

Plain functions: no pytest; torch is imported only to check a ``cuda`` / ``mps`` device.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

from pytest_koembed.errors import KoembedError

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def positive_int(text: str) -> int:
    """An ``argparse`` type for counts and sizes: zero and negative values are usage errors."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number, got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {value}")
    return value


def _writable_dir(option: str, target: Path) -> None:
    """The directory ``target`` would be written in (or its nearest existing ancestor, since
    writers create missing parents) must be a directory we can create files in."""
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise KoembedError(f"{option} {target}: {ancestor} is not a directory")
    try:  # what the writers do (a temp file, renamed); os.access is wrong for root and /proc
        fd, probe = tempfile.mkstemp(prefix=".koembed-probe.", dir=ancestor)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise KoembedError(
            f"{option} {target}: cannot write in {ancestor} ({reason}); choose another path"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(option: str, path: Path) -> None:
    """``path`` can be written as a file: not a directory, in a directory we can write."""
    if path.is_dir():
        raise KoembedError(f"{option} {path}: is a directory; give a file path")
    _writable_dir(option, path)


def check_output_dir(option: str, path: Path) -> None:
    """``path`` is (or can be created as) a directory we can write in."""
    if path.exists() and not path.is_dir():
        raise KoembedError(f"{option} {path}: exists and is not a directory")
    _writable_dir(option, path / "x")


def check_device(device: str) -> None:
    """A device name the encoder loader accepts; a CUDA or MPS device must exist here."""
    value = (device or "auto").strip().lower()
    if not _DEVICE.fullmatch(value):
        raise KoembedError(
            f"--koembed-device {device!r} is not one of auto, cpu, cuda, cuda:N, mps"
        )
    if value.startswith(("cuda", "mps")):  # only then is torch worth importing now
        from pytest_koembed.models.dtypes import resolve_device

        resolve_device(value)


def check_pooling(pooling: str | None) -> None:
    if pooling is None:
        return
    from pytest_koembed.models.pooling import _normalise_pooling

    _normalise_pooling(pooling)


def check_model_type(model: str, model_type: str | None) -> None:
    """``--koembed-model-type dense|sparse`` agrees with a local model directory's own files
    (a Hub model is checked when it is loaded)."""
    from pytest_koembed.models.loading import check_model_type as check

    check(model, model_type or "auto")


def check_instructions(path: str | None) -> None:
    """A user's instruction profiles file exists and is well-formed (read again per session)."""
    if path is None:
        return
    from pytest_koembed.protocol.instructions import load_profile

    load_profile(Path(path))


def check_cache_dir(option: str, path: Path) -> None:
    """``--koembed-cache``: a directory, or a path where one can be made. One that cannot be
    written is no usage error: the run then goes on without storing (one warning)."""
    if path.exists() and not path.is_dir():
        raise KoembedError(f"{option} {path}: exists and is not a directory; give a directory")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise KoembedError(f"{option} {path}: {ancestor} is not a directory")


def check_devices(spec: str | None, model: str, *, xdist: bool) -> None:
    """``--koembed-devices``: devices this machine has, no xdist, a model the pool can encode.

    Under pytest-xdist every worker would start its own pool on the same devices (and the workers
    are pinned to one GPU each), so the two are refused together.
    """
    if spec is None:
        return
    from pytest_koembed.models.devices import resolve_devices

    resolve_devices(spec)
    if xdist:
        raise KoembedError(
            "--koembed-devices cannot be combined with -n/--dist: every xdist worker would start "
            "its own pool on the same devices; run the large task alone with --koembed-devices "
            "(-k TASK) and the rest with -n"
        )
    path = Path(model).expanduser()
    if path.is_dir() and not (path / "modules.json").is_file():
        from pytest_koembed.models.loading import devices_need_sentence_transformers

        raise KoembedError(devices_need_sentence_transformers(model))
