"""GPU pinning for pytest-xdist workers: worker ``gwN`` gets its own GPU.

``pin_worker_gpu`` sets ``CUDA_VISIBLE_DEVICES`` in a worker before anything initialises CUDA,
so nothing here imports torch: it counts the GPUs from ``/proc/driver/nvidia`` or
``nvidia-smi`` and honours an outer ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import MutableMapping
from pathlib import Path

_OUTER_CUDA_ENV = "KOEMBED_OUTER_CUDA_VISIBLE_DEVICES"


_UNSET = "<unset>"


def pin_worker_gpu(
    worker_id: str | None,
    environ: MutableMapping[str, str],
    *,
    gpu_count: int | None = None,
) -> str | None:
    """Give xdist worker ``gwN`` its own GPU by setting ``CUDA_VISIBLE_DEVICES``.

    Worker i gets the i-th visible GPU (wrapping around when there are more workers than GPUs),
    where "visible" honours an outer ``CUDA_VISIBLE_DEVICES`` (kept in
    ``KOEMBED_OUTER_CUDA_VISIBLE_DEVICES`` so that a second call does not compound). Returns
    the value set, or None when nothing was set (not a worker, no GPU). Imports no torch: call
    it before anything initialises CUDA. ``gpu_count`` overrides the GPU count (tests).
    """
    index = _worker_index(worker_id)
    if index is None:
        return None
    if _OUTER_CUDA_ENV in environ:
        outer: str | None = environ[_OUTER_CUDA_ENV]
        if outer == _UNSET:
            outer = None
    else:
        outer = environ.get("CUDA_VISIBLE_DEVICES")
        environ[_OUTER_CUDA_ENV] = _UNSET if outer is None else outer
    if outer is not None:
        devices = _parse_visible_devices(outer)
    else:
        count = _count_gpus() if gpu_count is None else gpu_count
        devices = [str(i) for i in range(count)]
    if not devices:
        return None
    chosen = devices[index % len(devices)]
    torch_mod = sys.modules.get("torch")
    cuda = getattr(torch_mod, "cuda", None) if torch_mod is not None else None
    if cuda is not None and getattr(cuda, "is_initialized", lambda: False)():
        warnings.warn(
            f"pytest-koembed: CUDA was initialised before worker {worker_id} could be pinned to "
            f"GPU {chosen}; CUDA_VISIBLE_DEVICES has no effect in this process",
            RuntimeWarning,
            stacklevel=2,
        )
    environ["CUDA_VISIBLE_DEVICES"] = chosen
    return chosen


def _worker_index(worker_id: str | None) -> int | None:
    if not worker_id:
        return None
    match = re.fullmatch(r"gw(\d+)", worker_id.strip())
    return int(match.group(1)) if match else None


def _parse_visible_devices(value: str) -> list[str]:
    """CUDA's own reading: comma-separated ids, cut at the first invalid (negative) one."""
    devices: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item or item.startswith("-"):
            break
        devices.append(item)
    return devices


def _count_gpus() -> int:
    """NVIDIA GPUs on this machine, found without touching CUDA in this process."""
    proc = Path("/proc/driver/nvidia/gpus")
    try:
        if proc.is_dir():
            count = sum(1 for _ in proc.iterdir())
            if count:
                return count
    except OSError:
        pass
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
