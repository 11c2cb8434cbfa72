"""Device and dtype resolution: ``--koembed-device`` / ``--koembed-dtype`` to what torch runs.

``resolve_device`` turns ``auto`` into cuda / mps / cpu and checks that an explicit device
exists; ``resolve_dtype`` applies the leaderboard's dtype rule (half precision for LLM-based
models on a GPU, fp32 elsewhere) and ``check_dtype_supported`` tries a small computation in that
dtype on the device. Also the out-of-memory test and clean-up the batch back-off uses. torch is
imported inside the functions only.
"""

from __future__ import annotations

import gc
import os
import re
import sys
from typing import TYPE_CHECKING, Any

from pytest_koembed.errors import KoembedError

if TYPE_CHECKING:
    import torch


DTYPES = ("auto", "fp32", "fp16", "bf16")


def _one_line(text: str, limit: int = 300) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return "(no message)"


def resolve_device(requested: str) -> str:
    """``auto`` -> cuda / mps / cpu; checks that an explicit device exists."""
    import torch

    value = (requested or "auto").strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if _mps_available():
            return "mps"
        return "cpu"
    if value == "cpu":
        return "cpu"
    if value == "mps":
        if not _mps_available():
            raise KoembedError(
                "--koembed-device mps: the MPS backend is not available on this machine; use "
                "--koembed-device cpu or auto"
            )
        return "mps"
    match = re.fullmatch(r"cuda(?::(\d+))?", value)
    if match is None:
        raise KoembedError(
            f"--koembed-device {requested!r} is not one of auto, cpu, cuda, cuda:N, mps"
        )
    if not torch.cuda.is_available():
        build = torch.version.cuda
        why = f"torch {torch.__version__} is a CPU-only build" if build is None else "no GPU found"
        raise KoembedError(
            f"--koembed-device {requested}: CUDA is not available ({why}); use "
            "--koembed-device cpu or auto"
        )
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        extra = f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else ""
        raise KoembedError(
            f"--koembed-device {requested}: only {count} GPU(s) visible{extra}; under "
            "pytest-xdist each worker sees one GPU, so use --koembed-device cuda"
        )
    return f"cuda:{index}"


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _bf16_supported(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # pragma: no cover - older torch
            return bool(torch.cuda.is_bf16_supported())
    return True


def resolve_dtype(
    requested: str,
    *,
    device_type: str,
    llm: bool,
    bf16_supported: bool = True,
    leaderboard: str | None = None,
    checkpoint: str | None = None,
) -> str:
    """The dtype to run in. ``auto``: half precision for LLM-based models on a GPU, else fp32.

    The half dtype is the one the leaderboard row used (``leaderboard``), else the checkpoint's
    own half dtype, else bf16; bf16 falls back to fp16 on a GPU without bf16.
    """
    if requested != "auto":
        return requested
    if not llm or device_type not in ("cuda", "mps"):
        return "fp32"
    for choice in (leaderboard, checkpoint):
        if choice in ("fp16", "bf16"):
            want = choice
            break
    else:
        want = "bf16"
    if device_type == "mps" and want == "bf16":
        want = "fp16"
    if want == "bf16" and not bf16_supported:
        want = "fp16"
    return want


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def check_dtype_supported(dtype: str, device: str) -> None:
    """One-line KoembedError when ``device`` cannot run ``dtype``."""
    if dtype == "fp32":
        return
    import torch

    if device.startswith("cuda") and dtype == "bf16" and not _bf16_supported(device):
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        raise KoembedError(
            f"--koembed-dtype bf16: {name} (compute capability {major}.{minor}) has no bf16 "
            "support; use --koembed-dtype fp16 or fp32"
        )
    try:
        dt = torch_dtype(dtype)
        x = torch.ones(4, 8, dtype=dt, device=device)
        w = torch.ones(8, 8, dtype=dt, device=device)
        y = torch.nn.functional.layer_norm(x @ w, (8,))
        torch.softmax(y, dim=-1).float().sum().item()
    except Exception as exc:
        raise KoembedError(
            f"--koembed-dtype {dtype} does not run on {device} ({type(exc).__name__}: "
            f"{_one_line(str(exc), 120)}); use --koembed-dtype fp32"
        ) from None


def _dtype_kwargs(dtype: str) -> dict[str, Any]:
    """``dtype=`` for transformers >= 4.56, ``torch_dtype=`` before."""
    import transformers

    major, minor = (int(p) for p in re.findall(r"\d+", transformers.__version__)[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return {key: torch_dtype(dtype)}


def _is_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None:
        oom = getattr(torch, "OutOfMemoryError", None) or getattr(
            torch.cuda, "OutOfMemoryError", None
        )
        if oom is not None and isinstance(exc, oom):
            return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "CUDA out of memory" in text or "MPS backend out of memory" in text
    )


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and _mps_available():
        mps.empty_cache()
