"""The Hugging Face Hub: downloading a model's snapshot, and the cached-snapshot fallback.

``_hub_snapshot`` downloads (or finds in the local cache) a Hub model, skipping other
runtimes' weights. When the Hub is online but its metadata call fails, the cached snapshot is
used with one :class:`HubFallbackWarning` line, and the reason goes into the run record.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
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
    reason is appended to ``hub_failures`` for the run record's model block.
    """
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.constants import HF_HUB_OFFLINE

    errors = _hub_errors()
    cache = fingerprint._hub_cache_dir()
    unreachable = (
        f"--koembed-model {model!r} is not a local directory, the Hugging Face Hub is "
        f"unreachable and the model is not in the local cache ({cache}); pass a "
        f"local model directory instead, or download it first where the Hub is reachable "
        f"(hf download {model})"
    )
    offline = bool(HF_HUB_OFFLINE)
    ignore = list(_HUB_IGNORE)
    failure: str | None = None
    if not offline:
        try:
            info = HfApi().model_info(model, revision=revision)
            names = [s.rfilename for s in info.siblings or []]
            ignore += _redundant_bins(names)
        except (errors.RepositoryNotFoundError, errors.GatedRepoError) as exc:
            raise KoembedError(
                f"--koembed-model {model!r}: no such model on the Hub, or it is gated "
                f"({type(exc).__name__}); check the id, or log in (hf auth login)"
            ) from None
        except errors.RevisionNotFoundError:
            raise KoembedError(
                f"--koembed-model {model!r}: revision {revision!r} does not exist on the Hub"
            ) from None
        except Exception as exc:
            offline = True  # unreachable: fall back to the local cache, and say so below
            failure = _one_line(f"{type(exc).__name__}: {exc}".rstrip(": "), 200)
    try:
        folder = snapshot_download(
            model, revision=revision, ignore_patterns=ignore, local_files_only=offline
        )
    except (errors.RepositoryNotFoundError, errors.GatedRepoError):
        raise KoembedError(
            f"--koembed-model {model!r}: no such model on the Hub, or it is gated; check the id, "
            "or log in (hf auth login)"
        ) from None
    except errors.RevisionNotFoundError:
        raise KoembedError(
            f"--koembed-model {model!r}: revision {revision!r} does not exist on the Hub"
        ) from None
    except Exception as exc:
        if isinstance(exc, KoembedError):
            raise
        if failure is not None:
            unreachable += f"; the Hub's metadata call failed: {failure}"
        raise KoembedError(unreachable) from None
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
