"""Run one task of a suite through ``mteb.evaluate`` and turn the result into a ``TaskScore``.

This, ``data.py`` and ``sparse.py`` are the only modules that talk to mteb. Any encoder object
works: a ``LoadedEncoder`` from ``encoders.py``, a user's own class with ``encode(list[str])``, or a
``SentenceTransformer``. ``make_adapter`` gives it the mteb ``AbsEncoder`` interface, applies the
prompt chosen for the task and role, and checks every batch of embeddings before mteb scores it.
A sparse encoder (SPLADE) goes through ``sparse.make_sparse_adapter`` (mteb's
``SparseEncoderWrapper``) instead.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_koembed.errors import KoembedError
from pytest_koembed.evaluation.roles import prompt_role
from pytest_koembed.models.store import EmbeddingStore, MemoryStore, StoreKey
from pytest_koembed.protocol.scoring import round_half_up, task_value
from pytest_koembed.protocol.spec import TaskSpec
from pytest_koembed.records import TaskScore

if TYPE_CHECKING:
    from pytest_koembed.evaluation.progress import TaskProgress

# Resolves the exact prompt for a task and a role ("query", "document" or "symmetric").
PromptResolver = Callable[[TaskSpec, str], "str | None"]
# Told how many texts the encoder has just finished (see evaluation.progress.TaskProgress).
ProgressCallback = Callable[[int], None]


def _no_prompts(spec: TaskSpec, role: str) -> str | None:
    return None


def _declares_parameter(func: Callable[..., Any], name: str) -> bool:
    """``func`` has a parameter called ``name`` (not merely ``**kwargs``, which a
    SentenceTransformer would forward to its modules)."""
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


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


def _accepts_keyword(func: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def check_embeddings(array: Any, n_texts: int, where: str) -> np.ndarray:
    """Return the encoder output as a float32 matrix, or raise a one-line KoembedError."""
    if hasattr(array, "detach"):  # torch tensor, possibly bf16 on a GPU
        array = array.detach().float().cpu().numpy()
    try:
        matrix = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise KoembedError(f"{where}: encoder output is not a numeric array ({exc})") from None
    if matrix.ndim != 2:
        raise KoembedError(
            f"{where}: encoder returned an array of shape {matrix.shape}; expected "
            f"({n_texts}, dim), one row per text"
        )
    if matrix.shape[0] != n_texts:
        raise KoembedError(f"{where}: encoder returned {matrix.shape[0]} rows for {n_texts} texts")
    bad = ~np.isfinite(matrix)
    if bad.any():
        rows = int(bad.any(axis=1).sum())
        raise KoembedError(
            f"{where}: encoder returned NaN or inf values in {rows} of {n_texts} embeddings "
            "(check the dtype: fp16 overflows are a common cause; try --koembed-dtype fp32)"
        )
    zero = ~matrix.any(axis=1)
    if zero.any():
        raise KoembedError(
            f"{where}: encoder returned {int(zero.sum())} all-zero embeddings of {n_texts}; "
            "cosine similarity is undefined for them"
        )
    return matrix


def make_adapter(
    encoder: Any,
    spec: TaskSpec,
    prompts: PromptResolver,
    *,
    model_name: str,
    revision: str | None,
    similarity: str = "cosine",
    progress: ProgressCallback | None = None,
    store: EmbeddingStore | None = None,
    reused: ProgressCallback | None = None,
) -> Any:
    """Wrap any encoder in mteb's ``AbsEncoder`` interface for one task.

    The adapter records the exact prompt used per role (``used_prompts``) for the run record,
    and counts the texts encoded (``texts_encoded``, ``encode_seconds``). ``progress`` is told
    of every finished batch when the encoder's ``encode`` takes a ``progress`` callback (a
    ``LoadedEncoder`` does), else of every finished call: the encoder's batching, and so its
    embeddings, are never changed for it.

    With a ``store`` (``embedding_store``), each distinct (method, prompt, text) missing from it
    is encoded once, stored, and every other text is served from it (``texts_from_store``);
    ``reused`` is told how many texts of each call were served, so a progress total can shrink
    to the texts actually encoded. The encoder's own output is checked before it is stored.
    A store with a persistent cache behind it (``disk_reads``, ``embedding_cache.LayeredStore``)
    also counts the distinct rows read from disk (``texts_from_disk``).
    """
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    class _Adapter(AbsEncoder):
        def __init__(self) -> None:
            self.model = encoder
            self.used_prompts: dict[str, str | None] = {}
            self.dimension: int | None = None
            self.texts_encoded = 0
            self.encode_seconds = 0.0
            self.texts_total = 0  # texts mteb asked embeddings for
            self.texts_from_store = 0  # of them, served by the store
            # of the distinct rows served, those read from the persistent cache (None: no
            # persistent cache behind the store; ``embedding_cache.LayeredStore``)
            self.texts_from_disk: int | None = 0 if hasattr(store, "disk_reads") else None
            self.distinct_keys: set[StoreKey] = set()
            self.mteb_model_meta = ModelMeta.create_empty(
                overwrites={
                    "name": model_name,
                    "revision": revision or "no_revision_available",
                    "similarity_fn_name": ScoringFunction.from_str(similarity),
                    "languages": ["kor-Hang"],
                    "modalities": ["text"],
                }
            )

        def _method(self, role: str) -> tuple[str, Callable[..., Any]]:
            """The encoder method for a role: ``encode_query`` / ``encode_document`` if it has
            them, else ``encode``; with its name (part of a store key)."""
            if role == "query" and callable(getattr(self.model, "encode_query", None)):
                return "encode_query", self.model.encode_query
            if role == "document" and callable(getattr(self.model, "encode_document", None)):
                return "encode_document", self.model.encode_document
            return "encode", self.model.encode

        def _call(self, texts: list[str], role: str) -> Any:
            prompt = prompts(spec, role)
            self.used_prompts[role] = prompt
            _, method = self._method(role)
            started = time.perf_counter()
            by_batch = progress is not None and _declares_parameter(method, "progress")
            extra: dict[str, Any] = {"progress": progress} if by_batch else {}
            if prompt is None:
                out = method(texts, **extra)
            elif _accepts_keyword(method, "prompt"):
                out = method(texts, prompt=prompt, **extra)
            else:
                # The encoder takes no prompt argument: prepend it, as sentence-transformers does.
                out = method([prompt + text for text in texts], **extra)
            self.encode_seconds += time.perf_counter() - started
            self.texts_encoded += len(texts)
            if progress is not None and not by_batch:
                progress(len(texts))
            return out

        def _encoded(self, texts: list[str], role: str, where: str) -> np.ndarray:
            """The encoder's checked float32 embeddings of ``texts``, one row per text."""
            try:
                raw = self._call(texts, role)
            except KoembedError:
                raise
            except Exception as exc:  # a user's encoder: name it, keep it to one line
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise KoembedError(
                    f"{where}: the encoder raised {type(exc).__name__}: {message}"
                ) from exc
            return check_embeddings(raw, len(texts), where)

        def _through_store(self, texts: list[str], role: str, where: str) -> np.ndarray:
            """Encode only the distinct texts the store lacks; the rest come from the store.

            The result has one row per input text, in input order, as without the store."""
            assert store is not None
            name, _ = self._method(role)
            prompt = prompts(spec, role)
            keys = [StoreKey(name, prompt, text) for text in texts]
            self.distinct_keys.update(keys)
            rows: dict[StoreKey, np.ndarray] = {}
            disk_before = getattr(store, "disk_reads", 0)
            for key, row in zip(keys, store.get_many(keys), strict=True):
                if row is not None:
                    rows[key] = row
            if self.texts_from_disk is not None:
                self.texts_from_disk += getattr(store, "disk_reads", 0) - disk_before
            missing = list(dict.fromkeys(key for key in keys if key not in rows))
            self.used_prompts[role] = prompt  # also when every text came from the store
            served = len(texts) - len(missing)
            self.texts_from_store += served
            if served and reused is not None:  # before encoding: the total is right meanwhile
                reused(served)
            if missing:
                encoded = self._encoded([key.text for key in missing], role, where)
                store.put_many(missing, encoded)
                rows.update(zip(missing, encoded, strict=True))
            try:
                return np.stack([rows[key] for key in keys])
            except ValueError:  # rows of an earlier task and of this call differ in length
                raise KoembedError(
                    f"{where}: encoder returned embeddings of another dimension than earlier "
                    "in this run; dimensions must not change"
                ) from None

        def encode(
            self,
            inputs: Iterable[dict[str, Any]],
            *,
            task_metadata: Any,
            hf_split: str,
            hf_subset: str,
            prompt_type: Any = None,
            **kwargs: Any,
        ) -> np.ndarray:
            role = prompt_role(prompt_type)
            texts = [text for batch in inputs for text in batch["text"]]
            where = f"{spec.column} ({role} texts)"
            self.texts_total += len(texts)
            if store is None or not texts:
                name, _ = self._method(role)
                prompt = prompts(spec, role)
                self.distinct_keys.update(StoreKey(name, prompt, text) for text in texts)
                matrix = self._encoded(texts, role, where)
            else:
                matrix = self._through_store(texts, role, where)
            if self.dimension is None:
                self.dimension = matrix.shape[1]
            elif matrix.shape[1] != self.dimension:
                raise KoembedError(
                    f"{where}: encoder returned {matrix.shape[1]}-dim embeddings after "
                    f"{self.dimension}-dim ones in the same task; dimensions must not change"
                )
            return matrix

    return _Adapter()


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
) -> TaskScore:
    """Evaluate one task and score it by the leaderboard's rule.

    ``progress`` (``evaluation.progress.TaskProgress``) is started with the number of texts
    to encode once the data is ready, told of every finished batch, and of the texts served
    from the store (its total shrinks by them).
    Encode once: ``store`` (the run's ``embedding_store.MemoryStore``) serves texts met before
    and keeps the ones encoded here; without one, a store for this task alone still encodes each
    repeated text once. ``reuse=False`` encodes every text mteb asks for, every time.
    Raises KoembedError (one line) when the data, the encoder or the scores are unusable.
    """
    import mteb

    from pytest_koembed.data.layout import prepare_task

    started = time.perf_counter()
    if progress is not None:
        progress.reading_data()
    prepared = prepare_task(spec, data_dir)
    if progress is not None:
        progress.begin(expected_texts(prepared.sizes))
    from pytest_koembed.evaluation.sparse import is_sparse_encoder, make_sparse_adapter

    if is_sparse_encoder(encoder):  # mteb's SparseEncoderWrapper; no embedding store
        adapter = make_sparse_adapter(
            encoder,
            spec,
            prompts or _no_prompts,
            model_name=model_name,
            revision=revision,
            progress=progress,
        )
    else:
        adapter = make_adapter(
            encoder,
            spec,
            prompts or _no_prompts,
            model_name=model_name,
            revision=revision,
            similarity=similarity,
            progress=progress,
            store=(store if store is not None else MemoryStore()) if reuse else None,
            reused=progress.reused if progress is not None else None,
        )
    capture = _capture_examples(prepared.task, spec) if len(spec.cells) == 1 else None
    try:
        # cache=None: mteb's result cache keys only by model, revision and task, so it would
        # silently hand back scores computed on other data.
        with warnings.catch_warnings():
            # classification: sklearn warns of a label no classifier predicted (its precision
            # is 0 by definition); the scores are mteb's as they are
            warnings.filterwarnings("ignore", message=".* is ill-defined and being set to 0")
            result = mteb.evaluate(
                adapter,
                prepared.task,
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
    if len(spec.cells) == 1:
        examples, examples_error = _checked_examples(
            capture, spec, value, prepared.task.metadata.main_score
        )
    else:  # the value is a mean over cells; per-example results are kept for one cell only
        examples = None
        examples_error = (
            f"scored on {len(spec.cells)} (subset, split) cells; per-example results are kept "
            "for single-cell tasks only"
        )
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
        texts={
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
        },
        encode_seconds=adapter.encode_seconds,
        sparsity=getattr(adapter, "sparsity", None),
        source=prepared.source,
        **task_metadata_info(prepared.task),
        mteb_result=mteb_result_json(result.task_results[0]),
        examples=examples,
        examples_error=examples_error,
    )


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
