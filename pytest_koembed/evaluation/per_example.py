"""Per-example results: what mteb scored for every pair, query and clustering run of a task.

Each evaluated task keeps a pandas DataFrame with one row per example, enough to recompute the
task's leaderboard value exactly without the model (:func:`recompute_value`). The numbers are
mteb's own: :class:`ExampleCapture` wraps the metric step of the injected mteb task object and
records the per-example scores mteb computes its aggregate metrics from.

The frames, by task kind (:func:`task_kind`); every frame has ``key``, a 32-hex-digit BLAKE2b hash
of the example's content (:func:`example_key`), so that two runs pair up on the same rows in any
order (:func:`pair_examples`):

- ``sts``: ``key``, ``gold`` (the score in the data), ``similarity`` (the model's similarity
  function), ``cosine`` (1 - cosine distance), ``manhattan``, ``euclidean`` (NEGATIVE distances):
  exactly what mteb correlates with the gold scores. Key: the two sentences in sorted order (the
  pair (A, B) is the pair (B, A), as de-duplication treats them) and the gold score.
- ``pairs``: ``key``, ``label`` (0/1), ``similarity``, ``cosine``, ``manhattan``, ``euclidean``,
  ``dot``, each oriented so that higher means more similar (distances times -1, as mteb passes them
  to ``average_precision_score``). Key: the sorted sentences and the label.
- ``retrieval``: one row per query mteb scored: ``key``, ``query_id``, the per-query pytrec_eval
  values ``ndcg_at_K``, ``map_at_K``, ``recall_at_K``, ``precision_at_K``, ``hit_rate_at_K`` for
  every K of the task (1, 3, 5, 10, 20, 100, 1000) and mteb's ``mrr_at_K`` for K <= 100,
  ``top_ids`` and ``top_scores`` (the :data:`RETRIEVAL_DEPTH` best documents, ranked as
  pytrec_eval ranks them: score descending, ties by document id descending), ``relevant_ids`` and
  ``relevant_grades`` (the query's qrels). Key: the query text and its qrels, sorted.
- ``classification``: one row per text scored: ``key``, ``true_label`` (the label, as text),
  ``predicted`` (the label mteb's classifier predicted in each of its experiments, as text; mteb
  trains 10 logistic regressions on different samples of the training split), ``accuracy`` (the
  fraction of those experiments that got it right). Key: the text and its label. Reranking tasks
  (mteb scores them as retrieval over each query's candidates) have ``retrieval`` frames.
- ``clustering``: one row per mteb evaluation unit: ``key``, ``v_measure``, ``level``, ``run``,
  ``n_texts``. Fast clustering (SIB200-like) gives one row per bootstrap run (mteb runs 10) and
  hierarchy level; legacy clustering (one clustering set per dataset row, KLUE-like, and local data
  with a ``set`` column) one row per set (``run`` 0). ``n_texts``: the texts of the set (fast
  clustering samples each run from them). Key: the set's (text, label) items, sorted, with the
  level and run index. These rows have ``centroid_correct`` NaN. Then one row per document mteb
  embedded (``run`` -1, ``v_measure`` NaN): ``centroid_correct``, its leave-one-out
  nearest-gold-centroid correctness on the model's embeddings (:func:`centroid_correct`), the
  statistic the paired gate tests for clustering (``stats``); key: the text, label and level.

Values (:func:`recompute_value`): STS, the mean of pearson and spearman of ``gold`` against each
score column; pair classification, sklearn's average precision (or mteb's threshold search for
accuracy / f1 / precision / recall) of a column, ``max_*`` the best of the five; retrieval, the
mean over queries of the per-query values, rounded to 5 decimals as mteb rounds them (MRR is not
rounded; ``stats`` applies the same rounding to the observed and every resampled value; a
``main_score`` task's statistics resample the column of its own main score, ``map_at_1000``,
``mrr_at_5``, ..., named by the run record's ``main_score``; mteb's retrieval ``accuracy`` is
``recall_at_1``); clustering, the mean of ``v_measure`` over mteb's
rows; classification, mteb's accuracy of each
experiment (sklearn's ``accuracy_score`` of its predictions) averaged over the experiments. Other
classification scores (macro F1, ...) are not means over texts: a task valued by one keeps no
per-example results. All x100, as ``TaskScore.value``.

The sidecar file (:func:`write_run_files`): ``<record stem>.examples.parquet`` next to the run
record, one file for all tasks with the columns ``column`` (the suite column) and ``kind`` followed
by the union of the kinds' columns; the record's ``"examples"`` block names it and holds its
SHA-256 (:func:`load_examples` checks it). The plugin rewrites both after every finished task, the
sidecar first: a run killed between the two writes (milliseconds) leaves a sidecar one task ahead
of its record, which :func:`load_examples` refuses by its checksum.

The code lives in four modules, and this one names their public API (import from here):
``evaluation.frames`` (kinds, keys, the frame of each kind), ``evaluation.capture``
(:class:`ExampleCapture`), ``evaluation.recompute`` (:func:`recompute_value`) and
``evaluation.sidecar`` (the sidecar file, its transport between processes, reading it back, and
:func:`pair_examples`). None imports pytest or (at import time) mteb; they touch mteb only through
the task object ``evaluation.run`` hands them, and borrow mteb's MRR and pair-classification
threshold search rather than re-implementing them.
"""

from __future__ import annotations

from pytest_koembed.evaluation.capture import ExampleCapture
from pytest_koembed.evaluation.frames import (
    EXAMPLES_SUFFIX,
    KINDS,
    RETRIEVAL_DEPTH,
    example_key,
    frame_kind,
    task_kind,
)
from pytest_koembed.evaluation.frames import centroid_correct as centroid_correct
from pytest_koembed.evaluation.frames import clustering_frame as clustering_frame
from pytest_koembed.evaluation.recompute import recompute_value
from pytest_koembed.evaluation.sidecar import (
    examples_path,
    frame_from_text,
    frame_to_text,
    load_examples,
    pair_examples,
    read_examples_file,
    write_examples,
    write_run_files,
)
from pytest_koembed.evaluation.sidecar import file_sha256 as file_sha256

__all__ = [
    "EXAMPLES_SUFFIX",
    "KINDS",
    "RETRIEVAL_DEPTH",
    "ExampleCapture",
    "example_key",
    "examples_path",
    "frame_from_text",
    "frame_kind",
    "frame_to_text",
    "load_examples",
    "pair_examples",
    "read_examples_file",
    "recompute_value",
    "task_kind",
    "write_examples",
    "write_run_files",
]
