"""Which checkpoint of a training run a model is: its name, its step (a number, for ordering)
and its epoch, from ``--koembed-checkpoint NAME``, the model path or the HF Trainer's
``trainer_state.json``.

The record's ``checkpoint`` block: ``{"name", "step", "epoch", "from"}``; ``from`` says where
the name and step came from (``--koembed-checkpoint``, ``trainer_state.json``, ``model path``,
``model name``). Plain module: no pytest.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TRAINER_STATE = "trainer_state.json"

# checkpoint-5000, step_5000, step-5000, global_step5000, ckpt-12, iter_300, 5000 (a bare number)
_STEP = re.compile(
    r"(?:^|[-_.])(?:checkpoint|ckpt|global[-_]?step|steps?|iter(?:ation)?)[-_]?(\d+)(?=$|[-_.])",
    re.IGNORECASE,
)
_EPOCH = re.compile(r"(?:^|[-_.])epochs?[-_]?(\d+(?:\.\d+)?)(?=$|[-_])", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")


def parse_name(name: str) -> tuple[int | None, float | None]:
    """(step, epoch) a checkpoint's name says: ``checkpoint-5000`` -> (5000, None),
    ``epoch-3`` -> (None, 3.0), ``5000`` -> (5000, None), ``final`` -> (None, None)."""
    text = name.strip()
    if _NUMBER.fullmatch(text):
        return int(text), None
    step = _STEP.search(text)
    epoch = _EPOCH.search(text)
    return (int(step.group(1)) if step else None, float(epoch.group(1)) if epoch else None)


def trainer_state(directory: Path) -> tuple[int | None, float | None]:
    """(global_step, epoch) from an HF Trainer checkpoint's ``trainer_state.json``; (None, None)
    when there is none or it cannot be read (a checkpoint is named without it)."""
    try:
        data = json.loads((directory / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None, None
    if not isinstance(data, Mapping):
        return None, None
    step, epoch = data.get("global_step"), data.get("epoch")
    step_ok = isinstance(step, int) and not isinstance(step, bool) and step >= 0
    epoch_ok = isinstance(epoch, int | float) and not isinstance(epoch, bool)
    return (
        step if step_ok else None,
        float(epoch) if epoch_ok and math.isfinite(epoch) else None,
    )


def _from_path(model: str) -> tuple[str, int | None, float | None] | None:
    """The nearest path component (from the end) that names a step or an epoch."""
    parts = [p for p in Path(model).parts if p not in ("/", "")]
    for part in reversed(parts):
        step, epoch = parse_name(part) if not _NUMBER.fullmatch(part) else (None, None)
        if step is not None or epoch is not None:
            return part, step, epoch
    return None


def identify(model: str, name: str | None = None) -> dict[str, Any]:
    """The ``checkpoint`` block of a run of ``model`` (a local path or a Hub id).

    ``name`` (``--koembed-checkpoint``) wins for the name; its step is what the name says,
    else the trainer state's. Without it: the trainer state of a local model directory gives
    the step and epoch, the nearest path component naming a step or epoch gives the name
    (``runs/x/checkpoint-5000`` -> ``checkpoint-5000``); else the model's last path part.
    """
    directory = Path(model).expanduser()
    state_step, state_epoch = trainer_state(directory) if directory.is_dir() else (None, None)
    if name:
        step, epoch = parse_name(name)
        return {
            "name": name,
            "step": step if step is not None else state_step,
            "epoch": epoch if epoch is not None else state_epoch,
            "from": "--koembed-checkpoint",
        }
    found = _from_path(model)
    if state_step is not None or state_epoch is not None:
        label = found[0] if found else directory.name or model
        return {"name": label, "step": state_step, "epoch": state_epoch, "from": TRAINER_STATE}
    if found is not None:
        label, step, epoch = found
        return {"name": label, "step": step, "epoch": epoch, "from": "model path"}
    label = directory.name or model
    return {"name": label, "step": None, "epoch": None, "from": "model name"}


def of_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A run record's checkpoint block; for a record without one (written before it, or a
    plain ``--koembed-json`` record), what its model name says."""
    block = record.get("checkpoint")
    if isinstance(block, Mapping) and block.get("name"):
        return dict(block)
    model = record.get("model") or {}
    name = str(model.get("name") or model.get("row_name") or "model")
    found = _from_path(name)
    if found is not None:
        return {"name": found[0], "step": found[1], "epoch": found[2], "from": "model path"}
    return {"name": Path(name).name or name, "step": None, "epoch": None, "from": "model name"}


def order_key(block: Mapping[str, Any]) -> tuple[int, float]:
    """Rows by step, then (without a step) by epoch, then the rest; time breaks ties."""
    if block.get("step") is not None:
        return 0, float(block["step"])
    if block.get("epoch") is not None:
        return 1, float(block["epoch"])
    return 2, 0.0
