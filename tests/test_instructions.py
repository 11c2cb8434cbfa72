"""Per-model instructions: the shipped profile, matching, precedence and user files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_koembed.errors import KoembedError
from pytest_koembed.instructions import (
    SHIPPED_PROFILE,
    PromptPlan,
    build_prompt_plan,
    leaderboard_dtype,
    load_profile,
    shipped_profile,
)
from pytest_koembed.suite import TaskSpec, load_suite

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"

# The 20 rows of the leaderboard's overall table (seeds/000_*.txt).
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

# Qwen3-Embedding README (seeds/004_*.txt): f'Instruct: {task_description}\nQuery:{query}'.
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


def test_seed_table_rows_are_all_covered():
    """Every model named in the seed's instruction table matches an entry."""
    seed = next(SEEDS.glob("000_*.txt"), None)
    if seed is None:
        pytest.skip("shared/seeds is not next to this checkout")
    text = seed.read_text(encoding="utf-8")
    table = text[text.index("# Task별 Query_fix / Instruction") :]
    names = [
        m.group(1).strip()
        for m in re.finditer(r"^\| ([^|]+?)\s+\|", table, flags=re.MULTILINE)
        if "/" in m.group(1) or m.group(1).strip() == "Qwen3-Embedding"
    ]
    assert len(names) == 18
    profile = shipped_profile()
    for name in names:
        assert profile.find(name) is not None, name


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


class SpyEncoder:
    """Records which prompt reached which texts; returns deterministic unit vectors."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, tuple[str, ...]]] = []

    def encode(self, texts: list[str], *, prompt: str | None = None) -> np.ndarray:
        self.calls.append((prompt, tuple(texts)))
        out = np.ones((len(texts), 4), dtype=np.float32)
        return out / 2.0


def _drive(plan: PromptPlan, encoder: SpyEncoder, specs: dict[str, TaskSpec]) -> dict[Any, Any]:
    """What the evaluation adapter does per task and role: ask the plan, hand the prompt over."""
    used = {}
    for spec in specs.values():
        for role in _roles(spec):
            texts = [f"{spec.column}:{role}:{i}" for i in range(2)]
            prompt = plan.prompt_for(spec, role)
            encoder.encode(texts, prompt=prompt)
            used[(spec.column, role)] = prompt
    return used


def test_spy_encoder_sees_the_planned_prompt_for_every_task_and_role(v1_specs):
    spy = SpyEncoder()
    plan = build_prompt_plan(
        "Qwen/Qwen3-Embedding-8B-bf16",
        {"query": QWEN3_QUERY, "document": ""},  # Qwen3-Embedding's own ST prompts
        None,
        False,
    )
    used = _drive(plan, spy, v1_specs)
    assert len(spy.calls) == 3 + 3 + 3 + 6 * 2
    by_texts = {texts[0].rsplit(":", 1)[0]: prompt for prompt, texts in spy.calls}
    sts = "Instruct: retrieve semantically similar text.\nQuery:"
    for column in (
        "KLUE-STS",
        "Kor-STS",
        "STS17",
        "KLUE-NLI",
        "Kor-NLI",
        "PawsX-PairClassification",
    ):
        assert by_texts[f"{column}:symmetric"] == sts
    for column in (
        "sib200",
        "clustering_klue_mrc_context_domain",
        "clustering_klue_mrc_ynat_title",
    ):
        assert by_texts[f"{column}:symmetric"] == QWEN3_QUERY
    for spec in v1_specs.values():
        if spec.category == "Retrieval":
            assert by_texts[f"{spec.column}:query"] == QWEN3_QUERY
            assert by_texts[f"{spec.column}:document"] is None
    # The plan's answer (what the run record stores) is exactly what reached the encoder.
    assert len(used) == len(spy.calls)
    for (column, role), prompt in used.items():
        assert by_texts[f"{column}:{role}"] == prompt
