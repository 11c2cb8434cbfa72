"""The Hugging Face Hub: downloading a model's snapshot, and the cached-snapshot fallback.

``_hub_snapshot`` downloads (or finds in the local cache) a Hub model, skipping other
runtimes' weights. When the Hub is online but its metadata call fails, the cached snapshot is
used with one :class:`HubFallbackWarning` line, and the reason goes into the run record.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.models import fingerprint
from pytest_koembed.models.dtypes import _one_line

# Files a Hub download never needs: other runtimes' copies of the weights.
_HUB_IGNORE = [
    "*.onnx", "*.onnx_data", "onnx/*", "openvino/*", "*.msgpack", "*.h5", "tf_model*",
    "flax_model*", "rust_model*", "*.ot", "*.gguf", "coreml/*", "*.mlmodel", "*.tflite",
]  # fmt: skip


def _hub_errors() -> Any:
    try:
        from huggingface_hub import errors
    except ImportError:  # pragma: no cover - huggingface_hub < 0.23
        from huggingface_hub import utils as errors
    return errors


class HubFallbackWarning(UserWarning):
    """The Hub's metadata call failed and a cached snapshot of the model was used instead."""


# ``fingerprint._hub_cache_dir`` is looked up on its module, so that one patch of it (tests)
# reaches both the fingerprint and the message below, as when both lived in one module.


def _hub_snapshot(model: str, revision: str | None, hub_failures: list[str] | None = None) -> Path:
    """Download (or find in the local cache) a Hub model; return its snapshot directory.

    When the Hub is online but its metadata call fails (a server error, a rate limit, a network
    error), the local cache is used: one :class:`HubFallbackWarning` line says so, and the
    reason is appended to ``hub_failures`` for the run record's model block. Every other
    failure is one :class:`KoembedError` line naming the problem and the fix.
    """
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.constants import HF_HUB_OFFLINE

    errors = _hub_errors()
    refused = (errors.RepositoryNotFoundError, errors.GatedRepoError, errors.RevisionNotFoundError)
    offline = bool(HF_HUB_OFFLINE)
    ignore = list(_HUB_IGNORE)
    failure: str | None = None
    if not offline:
        try:
            info = HfApi().model_info(model, revision=revision)
            names = [s.rfilename for s in info.siblings or []]
            ignore += _redundant_bins(names)
        except refused as exc:
            raise KoembedError(_refusal(model, revision, exc)) from None
        except Exception as exc:
            offline = True  # unreachable: fall back to the local cache, and say so below
            failure = _one_line(f"{type(exc).__name__}: {exc}".rstrip(": "), 200)
    try:
        with _quiet_hub():
            folder = snapshot_download(
                model, revision=revision, ignore_patterns=ignore, local_files_only=offline
            )
    except refused as exc:
        raise KoembedError(_refusal(model, revision, exc)) from None
    except Exception as exc:
        if isinstance(exc, KoembedError):
            raise
        raise KoembedError(_not_had(model, revision, exc, bool(HF_HUB_OFFLINE), failure)) from None
    snapshot = Path(str(folder))
    if failure is not None:
        if hub_failures is not None:
            hub_failures.append(failure)
        warnings.warn(
            HubFallbackWarning(
                f"--koembed-model {model!r}: the Hub's metadata call failed ({failure}); using "
                f"the cached snapshot {snapshot.name}, which may not be the newest revision"
            ),
            stacklevel=2,
        )
    return snapshot


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """No progress bars and no retry warnings of huggingface_hub: a failure is one line."""
    import logging

    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    logger = logging.getLogger("huggingface_hub")
    level, bars_off = logger.level, are_progress_bars_disabled()
    logger.setLevel(logging.ERROR)
    disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if not bars_off:
            enable_progress_bars()


def _refusal(model: str, revision: str | None, exc: BaseException) -> str:
    """The Hub refused: no such repository (or a private one), a gated one, no such revision."""
    from huggingface_hub.constants import ENDPOINT

    errors = _hub_errors()
    page = f"{ENDPOINT.rstrip('/')}/{model}"
    if isinstance(exc, errors.GatedRepoError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 403:
            return (
                f"--koembed-model {model!r} is a gated model and the Hub refused the token in "
                f"use (403); accept its conditions on {page} with that token's account, or set "
                "HF_TOKEN to a token that has access"
            )
        return (
            f"--koembed-model {model!r} is a gated model and no token was sent (401); accept its "
            f"conditions on {page}, then log in (hf auth login) or set HF_TOKEN"
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return (
            f"--koembed-model {model!r}: revision {revision or 'main'!r} does not exist on the "
            "Hub; pass one of its branches, tags or commit shas to --koembed-revision, or drop "
            "the option for main"
        )
    return (
        f"--koembed-model {model!r}: no such model on the Hub, or a private one the token in use "
        "cannot read (RepositoryNotFoundError); check the id, or log in (hf auth login) or set "
        "HF_TOKEN"
    )


def _not_had(
    model: str, revision: str | None, exc: BaseException, offline: bool, failure: str | None
) -> str:
    """Why the snapshot could not be had: offline (on purpose or not) without it in the cache,
    or a download that failed halfway."""
    cache = fingerprint._hub_cache_dir()
    at = f" at revision {revision!r}" if revision else ""
    if offline:
        return (
            f"--koembed-model {model!r}: HF_HUB_OFFLINE is set and the model{at} is not in the "
            f"local Hugging Face cache ({cache}); run once with the Hub reachable "
            f"(HF_HUB_OFFLINE unset) or download it first (hf download {model}), or pass a local "
            "model directory"
        )
    if failure is None:  # the Hub answered, then a file's download broke off
        reason = _one_line(f"{type(exc).__name__}: {exc}".rstrip(": "), 200)
        return (
            f"--koembed-model {model!r}: downloading the model from the Hub failed ({reason}); "
            f"run again to finish the download (the files already complete stay in {cache}), "
            "or pass a local model directory"
        )
    return (
        f"--koembed-model {model!r} is not a local directory, the Hugging Face Hub is "
        f"unreachable and the model{at} is not in the local cache ({cache}); pass a local model "
        f"directory instead, or download it first where the Hub is reachable (hf download "
        f"{model}); the Hub's metadata call failed: {failure}"
    )


def _redundant_bins(names: Sequence[str]) -> list[str]:
    """``*.bin`` / ``*.pt`` weights that sit next to safetensors weights: skip downloading them."""
    dirs_with_safetensors = {os.path.dirname(n) for n in names if n.endswith(".safetensors")}
    return [
        n
        for n in names
        if n.endswith((".bin", ".pt", ".pth"))
        and os.path.dirname(n) in dirs_with_safetensors
        and "model" in os.path.basename(n)
    ]
