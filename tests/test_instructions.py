"""Per-model instructions: the shipped profile, matching, precedence and user files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_koembed.errors import KoembedError
from pytest_koembed.protocol.instructions import (
    SHIPPED_PROFILE,
    build_prompt_plan,
    leaderboard_dtype,
    load_profile,
    shipped_profile,
)
from pytest_koembed.protocol.leaderboards import load_leaderboard
from pytest_koembed.protocol.spec import TaskSpec
from pytest_koembed.protocol.suite import load_suite

# The 20 rows of the leaderboard's overall table (baselines/ko-leaderboard-v1.csv).
LEADERBOARD_ROWS = [
    "Qwen/Qwen3-Embedding-8B-bf16",
    "Alibaba-NLP/gte-Qwen2-7B-instruct-fp16",
    "intfloat/multilingual-e5-large-instruct",
    "telepix/PIXIE-Rune-Preview",
    "telepix/PIXIE-Spell-Preview-1.7B-fp16",
    "Qwen/Qwen3-Embedding-4B-bf16",
    "dragonkue/snowflake-arctic-embed-l-v2.0-ko",
    "nlpai-lab/KURE-v1",
    "kakaocorp/kanana-nano-2.1b-embedding-fp16",
    "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised-bf16",
    "BAAI/bge-multilingual-gemma2-fp16",
    "nlpai-lab/KoE5",
    "Qwen/Qwen3-Embedding-0.6B-bf16",
    "BAAI/bge-m3",
    "Snowflake/snowflake-arctic-embed-l-v2.0",
    "dragonkue/BGE-m3-ko",
    "FronyAI/frony-embed-medium-arctic-ko-v2.5",
    "facebook/drama-1b-fp16",
    "FronyAI/frony-embed-medium-ko-v2",
    "upskyy/bge-m3-korean",
]

# The 18 model names of the leaderboard's instruction table ("Task별 Query_fix / Instruction", at
# the end of its v1 page; docs/protocol.md), as printed there: Qwen3-Embedding is one line for all
# sizes, PIXIE-Spell without its dtype suffix.
INSTRUCTION_TABLE_ROWS = [
    "BAAI/bge-m3",
    "dragonkue/BGE-m3-ko",
    "upskyy/bge-m3-korean",
    "nlpai-lab/KoE5",
    "nlpai-lab/KURE-v1",
    "FronyAI/frony-embed-medium-ko-v2",
    "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised-bf16",
    "FronyAI/frony-embed-medium-arctic-ko-v2.5",
    "Snowflake/snowflake-arctic-embed-l-v2.0",
    "dragonkue/snowflake-arctic-embed-l-v2.0-ko",
    "kakaocorp/kanana-nano-2.1b-embedding-fp16",
    "Alibaba-NLP/gte-Qwen2-7B-instruct-fp16",
    "BAAI/bge-multilingual-gemma2-fp16",
    "intfloat/multilingual-e5-large-instruct",
    "facebook/drama-1b-fp16",
    "Qwen3-Embedding",
    "telepix/PIXIE-Rune-Preview",
    "telepix/PIXIE-Spell-Preview-1.7B",
]

# The Qwen3-Embedding model card: f'Instruct: {task_description}\nQuery:{query}'.
QWEN3_TASK = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_QUERY = f"Instruct: {QWEN3_TASK}\nQuery:"


@pytest.fixture(scope="module")
def v1_specs() -> dict[str, TaskSpec]:
    return {spec.column: spec for spec in load_suite("ko-leaderboard-v1").tasks}


def _spec(category: str, column: str = "T", task: str = "Task") -> TaskSpec:
    return TaskSpec(
        column=column, task=task, split="test", subset="default", category=category,
        value_rule={"STS": "sts-mean8", "NLI": "cosine_ap", "Clustering": "v_measure",
                    "Retrieval": "ndcg-5-10"}[category],
    )  # fmt: skip


def _roles(spec: TaskSpec) -> tuple[str, ...]:
    return ("query", "document") if spec.category == "Retrieval" else ("symmetric",)


def test_every_leaderboard_row_has_a_profile_entry():
    profile = shipped_profile()
    assert profile.path == SHIPPED_PROFILE
    assert SHIPPED_PROFILE.is_relative_to(Path(__file__).resolve().parents[1] / "pytest_koembed")
    for row in LEADERBOARD_ROWS:
        assert profile.find(row) is not None, row
    assert set(LEADERBOARD_ROWS) == set(load_leaderboard("ko-leaderboard-v1").rows)


def test_instruction_table_rows_are_all_covered():
    """Every model named in the leaderboard's instruction table matches an entry."""
    profile = shipped_profile()
    for name in INSTRUCTION_TABLE_ROWS:
        assert profile.find(name) is not None, name
    # and the shipped file's entries are not catch-alls that would match anything
    assert profile.find("someone/unknown-model") is None


def test_qwen3_prompts_follow_the_table_and_the_model_card(v1_specs: dict[str, TaskSpec]):
    for size in ("0.6B", "4B", "8B"):
        plan = build_prompt_plan(f"Qwen/Qwen3-Embedding-{size}-bf16", None, None, False)
        sts = "Instruct: retrieve semantically similar text.\nQuery:"
        assert plan.prompt_for(v1_specs["Kor-STS"], "symmetric") == sts
        assert plan.prompt_for(v1_specs["KLUE-NLI"], "symmetric") == sts
        assert plan.prompt_for(v1_specs["sib200"], "symmetric") == QWEN3_QUERY
        assert plan.prompt_for(v1_specs["Ko-StrategyQA"], "query") == QWEN3_QUERY
        assert plan.prompt_for(v1_specs["Ko-StrategyQA"], "document") is None  # "No need ..."


@pytest.mark.parametrize(
    ("row", "column", "role", "expected"),
    [
        ("Snowflake/snowflake-arctic-embed-l-v2.0", "KLUE-STS", "symmetric", "query: "),
        ("dragonkue/snowflake-arctic-embed-l-v2.0-ko", "AutoRAGRetrieval", "query", "query: "),
        ("telepix/PIXIE-Rune-Preview", "sib200", "symmetric", "query: "),
        (
            "intfloat/multilingual-e5-large-instruct",
            "Kor-NLI",
            "symmetric",
            "Instruct: Determine whether the two given sentences express the same meaning or "
            "not.\nQuery: ",
        ),
        (
            "BAAI/bge-multilingual-gemma2-fp16",
            "clustering_klue_mrc_ynat_title",
            "symmetric",
            "<instruct>Identify the topic or theme of the given texts\n<query>",
        ),
        ("facebook/drama-1b-fp16", "STS17", "symmetric", "Query: "),
        ("kakaocorp/kanana-nano-2.1b-embedding-fp16", "KLUE-NLI", "symmetric", None),
        ("nlpai-lab/KURE-v1", "KLUE-STS", "symmetric", None),
        ("nlpai-lab/KURE-v1", "PublicHealthQA", "query", None),
        ("someone/unknown-model", "KLUE-STS", "symmetric", None),
    ],
)
def test_shipped_prompts(v1_specs, row, column, role, expected):
    plan = build_prompt_plan(row, None, None, False)
    assert plan.prompt_for(v1_specs[column], role) == expected


def test_matching_ignores_dtype_suffix_case_and_takes_local_directory_names():
    profile = shipped_profile()
    entry = profile.find("Qwen/Qwen3-Embedding-8B")
    assert entry is not None and entry is profile.find("qwen/qwen3-embedding-8b-BF16")
    assert profile.find("Qwen3-Embedding-0.6B") is entry  # a local directory of that name
    assert profile.find("telepix/PIXIE-Spell-Preview-1.7B-fp16") is not None
    assert profile.find("telepix/PIXIE-Spell-Preview-1.7B") is not None
    assert profile.find("Qwen/Qwen3-Reranker-8B") is None
    assert profile.find("model") is None


def test_leaderboard_dtype():
    assert leaderboard_dtype("Qwen/Qwen3-Embedding-0.6B") == "bf16"
    assert leaderboard_dtype("Alibaba-NLP/gte-Qwen2-7B-instruct") == "fp16"
    assert leaderboard_dtype("anything-bf16") == "bf16"
    assert leaderboard_dtype("nlpai-lab/KURE-v1") is None
    assert leaderboard_dtype("someone/else") is None


def test_model_prompts_win_for_retrieval_only(v1_specs: dict[str, TaskSpec]):
    own = {"query": "model query: ", "document": "model doc: ", "Ko-StrategyQA-query": "special: "}
    plan = build_prompt_plan("Qwen/Qwen3-Embedding-0.6B", own, None, False)
    assert plan.prompt_for(v1_specs["AutoRAGRetrieval"], "query") == "model query: "
    assert plan.prompt_for(v1_specs["AutoRAGRetrieval"], "document") == "model doc: "
    assert plan.prompt_for(v1_specs["Ko-StrategyQA"], "query") == "special: "
    assert plan.source_for(v1_specs["AutoRAGRetrieval"], "query") == "model prompts['query']"
    # STS / NLI / Clustering prompts come from the profile, never from the model.
    assert plan.prompt_for(v1_specs["KLUE-STS"], "symmetric") == (
        "Instruct: retrieve semantically similar text.\nQuery:"
    )


def test_empty_model_prompts_fall_back_to_the_profile(v1_specs: dict[str, TaskSpec]):
    # sentence-transformers 6 fills in {"query": "", "document": ""} for every model.
    st_defaults = {"query": "", "document": ""}
    plan = build_prompt_plan("Snowflake/snowflake-arctic-embed-l-v2.0", st_defaults, None, False)
    assert plan.prompt_for(v1_specs["XPQARetrieval"], "query") == "query: "
    # A model with only a query prompt: its documents get none.
    plan = build_prompt_plan("x/y", {"query": "q: "}, None, False)
    assert plan.prompt_for(v1_specs["XPQARetrieval"], "document") is None
    assert plan.prompt_for(v1_specs["XPQARetrieval"], "query") == "q: "
    # "passage" is the document prompt of e5-style models.
    plan = build_prompt_plan("x/y", {"query": "query: ", "passage": "passage: "}, None, False)
    assert plan.prompt_for(v1_specs["XPQARetrieval"], "document") == "passage: "


def test_disabled_turns_everything_off(v1_specs: dict[str, TaskSpec]):
    plan = build_prompt_plan("Qwen/Qwen3-Embedding-8B-bf16", {"query": "q"}, None, True)
    for spec in v1_specs.values():
        for role in _roles(spec):
            assert plan.prompt_for(spec, role) is None
    assert plan.source_for(v1_specs["KLUE-STS"], "symmetric").startswith("disabled")


USER_PROFILE = """\
format = 1
name = "mine"

[[profile]]
match = "my-org/*"
STS = "sts<br>prompt: "
NLI = ""
query = "find: "
document = "doc: "

[profile.tasks]
"KorSTS" = "korsts: "
"Ko-StrategyQA-query" = "strategy: "
"facebook/belebele-document" = "belebele doc: "
"""


def test_a_user_profile_replaces_the_shipped_one(tmp_path: Path, v1_specs):
    path = tmp_path / "mine.toml"
    path.write_text(USER_PROFILE, encoding="utf-8")
    plan = build_prompt_plan("my-org/model-fp16", {"query": "model: "}, path, False)
    assert plan.user_profile and plan.profile_path == path
    assert plan.prompt_for(v1_specs["KLUE-STS"], "symmetric") == "sts\nprompt: "  # <br>
    assert plan.prompt_for(v1_specs["Kor-STS"], "symmetric") == "korsts: "  # by mteb task
    assert plan.prompt_for(v1_specs["KLUE-NLI"], "symmetric") is None  # "" is no prompt
    assert plan.prompt_for(v1_specs["sib200"], "symmetric") is None  # not set
    # The user's file beats the model's own prompts.
    assert plan.prompt_for(v1_specs["AutoRAGRetrieval"], "query") == "find: "
    assert plan.prompt_for(v1_specs["Ko-StrategyQA"], "query") == "strategy: "
    assert plan.prompt_for(v1_specs["facebook/belebele"], "document") == "belebele doc: "
    # A model the user's file does not name: its own prompts, and nothing from the shipped file.
    other = build_prompt_plan("Qwen/Qwen3-Embedding-8B", {"query": "own: "}, path, False)
    assert other.entry is None
    assert other.prompt_for(v1_specs["AutoRAGRetrieval"], "query") == "own: "
    assert other.prompt_for(v1_specs["KLUE-STS"], "symmetric") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[profile]\nmatch = 'x'", "is not valid TOML"),
        ("[[profile]]\nSTS = 'x'", "'match' must be"),
        ("[[profile]]\nmatch = []", "'match' must be"),
        ("[[profile]]\nmatch = 'x'\nSTS = 3", "'STS' must be a string"),
        ("[[profile]]\nmatch = 'x'\nRetrieval = 'q'", "unknown key(s) Retrieval"),
        ("[[profile]]\nmatch = 'x'\ndtype = 'fp8'", "dtype 'fp8'"),
        ("[[profile]]\nmatch = 'x'\ntasks = 'KorSTS'", "'tasks' must be a table"),
        ("format = 2\n", "format 2 is not supported"),
        ("models = []\n", "unknown top-level key(s) models"),
        ("profile = 'x'\n", "array of tables"),
    ],
)
def test_a_malformed_user_profile_is_one_line(tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(KoembedError) as err:
        build_prompt_plan("x", None, path, False)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(KoembedError):  # checked even when instructions are off
        build_prompt_plan("x", None, path, True)


def test_a_missing_user_profile(tmp_path: Path):
    with pytest.raises(KoembedError, match="does not exist"):
        build_prompt_plan("x", None, tmp_path / "nope.toml", False)
    with pytest.raises(KoembedError, match="is a directory"):
        load_profile(tmp_path)


def test_roles_are_checked(v1_specs: dict[str, TaskSpec]):
    plan = build_prompt_plan("Qwen/Qwen3-Embedding-8B", None, None, False)
    with pytest.raises(ValueError, match="role must be one of"):
        plan.prompt_for(v1_specs["KLUE-STS"], "passage")
    with pytest.raises(ValueError, match="roles query and document"):
        plan.prompt_for(v1_specs["Ko-StrategyQA"], "symmetric")
    # A symmetric task asked with a retrieval role still gets its category prompt.
    assert plan.prompt_for(v1_specs["KLUE-STS"], "query") == plan.prompt_for(
        v1_specs["KLUE-STS"], "symmetric"
    )


def test_custom_tasks_are_prompted_by_category():
    plan = build_prompt_plan("intfloat/multilingual-e5-large-instruct", None, None, False)
    assert plan.prompt_for(_spec("Clustering", "my-clusters", "MyClustering"), "symmetric") == (
        "Instruct: Identify the topic or theme of the given texts\nQuery: "
    )


# ---------------------------------------------------------------------------------------------
# End to end: the prompts the run record names are the ones the encoder received
# ---------------------------------------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parents[1] / "suites" / "sample-data"

# A user profile for every model, one distinct prompt per category and role, so that what the
# encoder received tells which prompt it came with. Retrieval is left to the model's own
# prompts where it has some (variant a) and to this file otherwise (variants b and c).
PROFILE = """\
format = 1
[[profile]]
match = "*"
STS = "sts> "
NLI = "nli> "
Clustering = "clu> "
"""
PROFILE_RETRIEVAL = 'query = "q> "\ndocument = "d> "\n'
ST_OWN_PROMPTS = {"query": "own query> ", "document": "own doc> "}


def _jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _sample_texts() -> dict[tuple[str, str], set[str]]:
    """(column, role) -> every distinct text the sample suite encodes for it."""
    sts = _jsonl(SAMPLE / "KoembedSampleSTS/default/test/pairs.jsonl")
    pairs = _jsonl(SAMPLE / "KoembedSamplePairClassification/default/test/pairs.jsonl")
    texts = _jsonl(SAMPLE / "KoembedSampleClustering/default/test/texts.jsonl")
    retrieval = SAMPLE / "KoembedSampleRetrieval/default/test"
    return {
        ("sample-sts", "symmetric"): {r[k] for r in sts for k in ("sentence1", "sentence2")},
        ("sample-pairs", "symmetric"): {r[k] for r in pairs for k in ("sentence1", "sentence2")},
        ("sample-clustering", "symmetric"): {r["text"] for r in texts},
        ("sample-retrieval", "query"): {r["text"] for r in _jsonl(retrieval / "queries.jsonl")},
        ("sample-retrieval", "document"): {r["text"] for r in _jsonl(retrieval / "corpus.jsonl")},
    }


def _received_by_prompt(
    received: list[str], prompts: dict[tuple[str, str], str | None]
) -> dict[tuple[str, str], set[str]]:
    """Sort the strings an encoder received by the (distinct) prompt each starts with."""
    out: dict[tuple[str, str], set[str]] = {key: set() for key in prompts}
    for text in received:
        keys = [key for key, p in prompts.items() if p and text.startswith(p)]
        assert len(keys) == 1, f"{text!r} starts with no expected prompt, or with several"
        out[keys[0]].add(text[len(prompts[keys[0]] or "") :])
    return out


def _check_documents(got: set[str], texts: set[str]) -> None:
    """mteb hands documents over as "title text"; each text must arrive, once per document."""
    assert len(got) == len(texts)
    assert all(any(g.endswith(t) for g in got) for t in texts)


def _run_sample(
    pytester: pytest.Pytester, model: str, retrieval_in_profile: bool, *args: str
) -> dict:
    profile = pytester.path / "prompts.toml"
    profile.write_text(PROFILE + (PROFILE_RETRIEVAL if retrieval_in_profile else ""), "utf-8")
    record_path = pytester.path / "run.json"
    result = pytester.runpytest(
        f"--koembed-model={model}",
        "--koembed-suite=sample",
        f"--koembed-instructions={profile}",
        f"--koembed-json={record_path}",
        *args,
    )
    result.assert_outcomes(passed=2 if "-k" in args else 4)
    tasks = json.loads(record_path.read_text(encoding="utf-8"))["tasks"]
    return {(t["column"], role): p for t in tasks for role, p in t["prompts"].items()}


EXPECTED = {
    ("sample-sts", "symmetric"): "sts> ",
    ("sample-pairs", "symmetric"): "nli> ",
    ("sample-clustering", "symmetric"): "clu> ",
    ("sample-retrieval", "query"): "q> ",
    ("sample-retrieval", "document"): "d> ",
}


def test_a_sentence_transformers_model_with_prompts(
    pytester: pytest.Pytester, minilm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own prompts for retrieval, the profile's for the rest; what its tokenizer saw."""
    from sentence_transformers import SentenceTransformer

    model = pytester.path / "st-with-prompts"
    shutil.copytree(minilm_dir, model)
    config = json.loads((model / "config_sentence_transformers.json").read_text("utf-8"))
    config["prompts"] = ST_OWN_PROMPTS
    (model / "config_sentence_transformers.json").write_text(json.dumps(config), "utf-8")

    # What the model is handed to tokenize: sentence-transformers >= 6 takes the texts and the
    # prompt in ``preprocess`` (and prepends it there); older versions prepend it in ``encode``
    # and call ``tokenize`` with the joined strings.
    received: list[str] = []
    hook = "preprocess" if hasattr(SentenceTransformer, "preprocess") else "tokenize"
    original = getattr(SentenceTransformer, hook)

    def spy(self: SentenceTransformer, inputs: list[str], *args: object, **kwargs: object):
        prompt = kwargs.get("prompt") if hook == "preprocess" else None
        received.extend((prompt or "") + text for text in inputs)
        return original(self, inputs, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformer, hook, spy)
    # one symmetric task and the retrieval task (the real model is slow on the other two)
    recorded = _run_sample(pytester, str(model), False, "-k", "sample-sts or sample-retrieval")
    expected = {
        ("sample-sts", "symmetric"): "sts> ",
        ("sample-retrieval", "query"): "own query> ",
        ("sample-retrieval", "document"): "own doc> ",
    }
    assert recorded == expected
    got = _received_by_prompt(received, recorded)
    texts = _sample_texts()
    for key in expected:
        if key[1] == "document":
            _check_documents(got[key], texts[key])
        else:
            assert got[key] == texts[key], key


ENCODER_CONFTEST = """
import json
import zlib

import numpy as np
import pytest

LOG = {log!r}


def vectors(texts):
    out = np.zeros((len(texts), 64), dtype="float32")
    for i, text in enumerate(texts):
        for j in range(max(1, len(text) - 1)):
            out[i, zlib.crc32(text[j : j + 2].encode()) % 64] += 1.0
    return out + 1e-3


def log(texts, prompt):
    with open(LOG, "a", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({{"prompt": prompt, "text": text}}, ensure_ascii=False) + "\\n")


class {name}:
    {method}


@pytest.fixture(scope="session")
def koembed_encoder():
    return {name}()
"""
TAKES_PROMPT = """def encode(self, texts, prompt=None):
        log(texts, prompt)
        return vectors([(prompt or "") + t for t in texts])"""
NO_PROMPT = """def encode(self, texts):
        log(texts, None)
        return vectors(texts)"""


@pytest.mark.parametrize(
    ("name", "method"), [("TakesPrompt", TAKES_PROMPT), ("NoPrompt", NO_PROMPT)]
)
def test_a_custom_encoder_gets_the_prompt_as_it_can_take_it(
    pytester: pytest.Pytester, name: str, method: str
) -> None:
    """With ``prompt=``: handed over, texts untouched. Without: prepended to every text."""
    log = pytester.path / "received.jsonl"
    pytester.makeconftest(ENCODER_CONFTEST.format(log=str(log), name=name, method=method))
    # the four tasks whose texts _sample_texts knows (classification and reranking deselected)
    recorded = _run_sample(
        pytester, "my-encoder", True, "-m", "not classification and not reranking"
    )
    assert recorded == EXPECTED
    calls = _jsonl(log)
    if name == "TakesPrompt":
        # every text arrived bare, with its prompt as the keyword
        assert all(c["prompt"] in EXPECTED.values() for c in calls)
        received = [c["prompt"] + c["text"] for c in calls]
    else:
        assert all(c["prompt"] is None for c in calls)
        received = [c["text"] for c in calls]
    got = _received_by_prompt(received, recorded)
    texts = _sample_texts()
    for key in EXPECTED:
        if key[1] == "document":
            _check_documents(got[key], texts[key])
        else:
            assert got[key] == texts[key], key
