"""Run one task of a suite through ``mteb.evaluate`` and turn the result into a ``TaskScore``.

This module, ``data`` and the adapters are the only ones that talk to mteb. Any encoder object
works: a ``LoadedEncoder`` from ``models.encoders``, a user's own class with
``encode(list[str])``, or a ``SentenceTransformer``. ``adapter.make_adapter`` gives it the mteb
``AbsEncoder`` interface, applies the prompt chosen for the task and role, and checks every
batch of embeddings before mteb scores it. A sparse encoder (SPLADE) goes through
``sparse_adapter.make_sparse_adapter`` (mteb's ``SparseEncoderWrapper``) instead.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.threads import CLUSTERING_THREADS, clustering_cap, is_clustering
from pytest_koembed.models.store import EmbeddingStore, MemoryStore
from pytest_koembed.protocol.scoring import round_half_up, task_value
from pytest_koembed.protocol.spec import TaskSpec
from pytest_koembed.records import TaskScore

if TYPE_CHECKING:
    from pytest_koembed.evaluation.adapter import PromptResolver
    from pytest_koembed.evaluation.progress import TaskProgress


def _no_prompts(spec: TaskSpec, role: str) -> str | None:
    return None


def expected_texts(sizes: dict[str, int]) -> int:
    """How many texts mteb encodes for a task of these sizes (``PreparedTask.sizes``): both
    sides of each pair, every clustering text, every query and document, every text scored by a
    classifier and the training texts it learns from."""
    if "train_encoded" in sizes:
        return sizes.get("texts", 0) + sizes["train_encoded"]
    if "pairs" in sizes:
        return 2 * sizes["pairs"]
    if "texts" in sizes:
        return sizes["texts"]
    return sizes.get("queries", 0) + sizes.get("documents", 0)


def _split_scores(result: Any, spec: TaskSpec) -> dict[str, Any]:
    """Pick the one scores dict of the spec's split and subset out of mteb's TaskResult."""
    entries = result.scores.get(spec.split)
    if not entries:
        raise KoembedError(
            f"{spec.column}: mteb returned no scores for split {spec.split!r} "
            f"(got {', '.join(result.scores) or 'none'})"
        )
    for entry in entries:
        if entry.get("hf_subset") == spec.subset:
            return dict(entry)
    subsets = ", ".join(str(e.get("hf_subset")) for e in entries)
    raise KoembedError(
        f"{spec.column}: mteb returned no scores for subset {spec.subset!r} (got {subsets})"
    )


def _numeric_scores(entry: dict[str, Any]) -> dict[str, float | None]:
    """Keep the metric values; drop bookkeeping keys and nested per-run lists.

    Non-finite values (mteb's ``nauc_*`` are NaN on small data) become None, as JSON has no NaN.
    """
    scores: dict[str, float | None] = {}
    for key, value in entry.items():
        if key in {"hf_subset", "languages", "mteb_version"}:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        scores[key] = float(value) if math.isfinite(value) else None
    return scores


def evaluate_task(
    spec: TaskSpec,
    encoder: Any,
    *,
    data_dir: Path | None = None,
    prompts: PromptResolver | None = None,
    model_name: str = "koembed-model",
    revision: str | None = None,
    similarity: str = "cosine",
    batch_size: int = 32,
    progress: TaskProgress | None = None,
    store: EmbeddingStore | None = None,
    reuse: bool = True,
    clustering_threads: int | None = CLUSTERING_THREADS,
) -> TaskScore:
    """Evaluate one task and score it by the leaderboard's rule.

    ``progress`` (``evaluation.progress.TaskProgress``) is started with the number of texts to
    encode once the data is ready, and told of every finished batch and of the texts the store
    served. ``store`` (the run's ``MemoryStore``; by default one for this task) serves texts met
    before and keeps those encoded here; ``reuse=False`` encodes every text, every time.
    ``clustering_threads``: ``evaluation.threads``. Raises a one-line KoembedError on bad data.
    """
    from pytest_koembed.data.prepare import prepare_task

    started = time.perf_counter()
    if progress is not None:
        progress.reading_data()
    prepared = prepare_task(spec, data_dir)
    if progress is not None:
        progress.begin(expected_texts(prepared.sizes))
    adapter = _adapter(
        encoder,
        spec,
        prompts or _no_prompts,
        model_name=model_name,
        revision=revision,
        similarity=similarity,
        progress=progress,
        store=store,
        reuse=reuse,
    )
    capture = _capture_examples(prepared.task, spec) if len(spec.cells) == 1 else None
    result = _run_mteb(adapter, prepared.task, spec, batch_size, clustering_threads)
    if not result.task_results:
        raise KoembedError(f"{spec.column}: mteb returned no result")
    if spec.benchmark is not None:  # scored as mteb scores the task in its benchmark
        from pytest_koembed.protocol.mteb_suites import task_score

        entry = task_score(result.task_results[0], prepared.task)
    else:
        entry = _split_scores(result.task_results[0], spec)
    scores = _numeric_scores(entry)
    value = task_value(spec.value_rule, scores)
    if not math.isfinite(value):
        raise KoembedError(f"{spec.column}: the {spec.value_rule} value is {value}")
    examples, examples_error = _examples(capture, spec, value, prepared.task.metadata.main_score)
    return TaskScore(
        **_identity(spec),
        status="ok",
        value=value,
        shown=round_half_up(value, 2),
        scores=scores,
        main_score=prepared.task.metadata.main_score,
        n_examples=prepared.n_examples,
        sizes=dict(prepared.sizes),
        duplicates_dropped=prepared.duplicates_dropped,
        seconds=time.perf_counter() - started,
        prompts=dict(adapter.used_prompts),
        texts_encoded=adapter.texts_encoded,
        texts=_texts(adapter),
        encode_seconds=adapter.encode_seconds,
        sparsity=getattr(adapter, "sparsity", None),
        source=prepared.source,
        **task_metadata_info(prepared.task),
        mteb_result=mteb_result_json(result.task_results[0]),
        examples=examples,
        examples_error=examples_error,
    )


def _adapter(
    encoder: Any,
    spec: TaskSpec,
    prompts: PromptResolver,
    *,
    model_name: str,
    revision: str | None,
    similarity: str,
    progress: TaskProgress | None,
    store: EmbeddingStore | None,
    reuse: bool,
) -> Any:
    """The mteb adapter of ``encoder`` for one task: mteb's ``SparseEncoderWrapper`` for a sparse
    encoder (no embedding store), else :class:`~pytest_koembed.evaluation.adapter.EncoderAdapter`
    with the run's store (or one for this task alone; none when ``reuse`` is off)."""
    from pytest_koembed.evaluation.sparse import is_sparse_encoder
    from pytest_koembed.evaluation.sparse_adapter import make_sparse_adapter

    if is_sparse_encoder(encoder):  # mteb's SparseEncoderWrapper; no embedding store
        return make_sparse_adapter(
            encoder,
            spec,
            prompts,
            model_name=model_name,
            revision=revision,
            progress=progress,
        )
    from pytest_koembed.evaluation.adapter import make_adapter

    return make_adapter(
        encoder,
        spec,
        prompts,
        model_name=model_name,
        revision=revision,
        similarity=similarity,
        progress=progress,
        store=(store if store is not None else MemoryStore()) if reuse else None,
        reused=progress.reused if progress is not None else None,
    )


def _run_mteb(
    adapter: Any, task: Any, spec: TaskSpec, batch_size: int, clustering_threads: int | None
) -> Any:
    """``mteb.evaluate`` of one prepared task (a clustering task's thread pools capped at
    ``clustering_threads``); our one-line errors pass through mteb's wrapping, anything else
    becomes one line naming the task."""
    import mteb

    cap = clustering_threads if is_clustering(task) else None
    try:
        # cache=None: mteb's result cache keys only by model, revision and task, so it would
        # silently hand back scores computed on other data.
        with warnings.catch_warnings(), clustering_cap(cap):
            # classification: sklearn warns of a label no classifier predicted (its precision
            # is 0 by definition); the scores are mteb's as they are
            warnings.filterwarnings("ignore", message=".* is ill-defined and being set to 0")
            result = mteb.evaluate(
                adapter,
                task,
                cache=None,
                overwrite_strategy="always",
                show_progress_bar=False,
                encode_kwargs={"batch_size": batch_size, "show_progress_bar": False},
                raise_error=True,
            )
    except KoembedError:
        raise
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None:  # mteb may wrap our one-line errors
            if isinstance(cause, KoembedError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise KoembedError(f"{spec.column}: mteb failed: {type(exc).__name__}: {message}") from exc
    return result


def _examples(
    capture: Any, spec: TaskSpec, value: float, main_score: str | None
) -> tuple[Any, str | None]:
    """The per-example frame to keep and why none is kept (one of them None)."""
    if len(spec.cells) == 1:
        examples, examples_error = _checked_examples(capture, spec, value, main_score)
    else:  # the value is a mean over cells; per-example results are kept for one cell only
        examples = None
        examples_error = (
            f"scored on {len(spec.cells)} (subset, split) cells; per-example results are kept "
            "for single-cell tasks only"
        )
    return examples, examples_error


def _texts(adapter: Any) -> dict[str, int]:
    """The run record's ``texts`` block: what mteb asked for, and how it was served."""
    return {
        "total": adapter.texts_total,
        "distinct": len(adapter.distinct_keys),
        "encoded": adapter.texts_encoded,
        "from_cache": adapter.texts_from_store,
        # the sparse adapter has no store, so no persistent cache behind it
        **(
            {"from_disk": adapter.texts_from_disk}
            if getattr(adapter, "texts_from_disk", None) is not None
            else {}
        ),
    }


# How far the value recomputed from the per-example results may be from mteb's (x100 scale):
# float noise only (they agree to ~1e-13); anything more means they are not what mteb scored.
_RECOMPUTE_TOLERANCE = 1e-7


def _capture_examples(task: Any, spec: TaskSpec) -> Any:
    """An installed ``per_example.ExampleCapture`` on the task, or None if it cannot be."""
    from pytest_koembed.evaluation.per_example import ExampleCapture

    try:
        return ExampleCapture(task, split=spec.split, subset=spec.subset).install()
    except (KoembedError, AttributeError):
        return None


def _checked_examples(
    capture: Any, spec: TaskSpec, value: float, main_score: str | None
) -> tuple[Any, str | None]:
    """The per-example frame if it recomputes mteb's value, else None and why not."""
    from pytest_koembed.evaluation.per_example import recompute_value

    if capture is None or capture.frame is None:
        why = capture.error if capture is not None else None
        return None, f"mteb gave no per-example scores{f' ({why})' if why else ''}"
    try:
        again = recompute_value(capture.frame, spec.value_rule, main_score)
    except Exception as exc:  # the task's score stands; only its examples are not kept
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not isinstance(exc, KoembedError):
            message = f"{type(exc).__name__}: {message}"
        return None, message
    if not abs(again - value) <= _RECOMPUTE_TOLERANCE:
        return None, f"the per-example results give {again!r}, mteb {value!r}; not kept"
    return capture.frame, None


def task_metadata_info(task: Any) -> dict[str, str | None]:
    """What the run record keeps of an mteb task's metadata: its type and dataset id/revision.

    Works on any task object (``mteb.get_task(name)`` or a prepared task); model cards and mteb
    result files name the dataset by these.
    """
    metadata = task.metadata
    dataset = metadata.dataset if isinstance(metadata.dataset, dict) else {}
    path, revision = dataset.get("path"), dataset.get("revision")
    return {
        "task_type": str(metadata.type) if metadata.type else None,
        "dataset_path": str(path) if path else None,
        "dataset_revision": str(revision) if revision else None,
    }


def _json_safe(value: Any) -> Any:
    """Nested data with non-finite floats replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def mteb_result_json(task_result: Any) -> dict[str, Any]:
    """mteb's ``TaskResult`` as JSON-able data (what ``--koembed-results-dir`` writes back)."""
    return _json_safe(task_result.model_dump(mode="json"))


def _identity(spec: TaskSpec) -> dict[str, str]:
    """The fields of a TaskScore that say which task of which suite it is."""
    return {
        "column": spec.column,
        "task": spec.task,
        "split": spec.split,
        "subset": spec.subset,
        "category": spec.category,
        "value_rule": spec.value_rule,
    }


def failed_score(spec: TaskSpec, error: str, seconds: float) -> TaskScore:
    """The record of a task that could not be evaluated."""
    return TaskScore(
        **_identity(spec),
        status="error",
        seconds=seconds,
        error=error,
    )
