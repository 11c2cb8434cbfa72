"""Loading encoders: loader choice, pooling, EOS, prompts, dtype/device, OOM back-off, pinning.

Every pooled embedding is checked against a direct reference computation written out here
(the model cards' own recipes), on tiny random-weight models built in ``conftest.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pytest_koembed.errors import KoembedError
from pytest_koembed.models import dtypes, fingerprint, naming, pooling
from pytest_koembed.models.dtypes import resolve_dtype
from pytest_koembed.models.encoders import EncoderOptions, LoadedEncoder
from pytest_koembed.models.fingerprint import model_fingerprint
from pytest_koembed.models.loading import load_encoder
from pytest_koembed.models.pinning import pin_worker_gpu

TEXTS = [
    "오늘 서울의 날씨는 맑고 따뜻합니다.",
    "고양이",
    "검색 질의에 답하는 문서를 찾습니다. 아주 긴 문장은 패딩이 많이 필요합니다.",
    "The capital of Korea is Seoul.",
    "이 영화는 정말 재미있었어요!",
]
TOL = 1e-5
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _max_diff(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


# ---------------------------------------------------------------------------------------------
# reference computations (written out as the model cards do it)


def card_last_token_pool(last_hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> Any:
    """Verbatim from the Qwen3-Embedding README (Qwen/Qwen3-Embedding-8B on the Hub)."""
    left_padding = attention_mask[:, -1].sum() == attention_mask.shape[0]
    if left_padding:
        return last_hidden_states[:, -1]
    sequence_lengths = attention_mask.sum(dim=1) - 1
    batch_size = last_hidden_states.shape[0]
    return last_hidden_states[
        torch.arange(batch_size, device=last_hidden_states.device), sequence_lengths
    ]


def reference_mean(model_dir: Path, texts: list[str], prompt: str = "") -> np.ndarray:
    """One text at a time (no padding at all): mean of all token states, L2-normalised."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            batch = tok(prompt + text, return_tensors="pt")
            hidden = model(**batch).last_hidden_state[0]
            rows.append(F.normalize(hidden.mean(dim=0), dim=-1))
    return torch.stack(rows).numpy()


def reference_cls(model_dir: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        rows = [model(**tok(t, return_tensors="pt")).last_hidden_state[0, 0] for t in texts]
    return F.normalize(torch.stack(rows), dim=-1).numpy()


def reference_last_token_card(model_dir: Path, texts: list[str]) -> tuple[np.ndarray, Any]:
    """The Qwen3-Embedding README's transformers recipe: left padding, last token, normalise."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    batch_dict = tokenizer(
        texts, padding=True, truncation=True, max_length=8192, return_tensors="pt"
    )
    with torch.no_grad():
        outputs = model(**batch_dict)
    embeddings = card_last_token_pool(outputs.last_hidden_state, batch_dict["attention_mask"])
    return F.normalize(embeddings, p=2, dim=1).numpy(), batch_dict


def reference_last_token_with_eos(model_dir: Path, texts: list[str], eos: str) -> np.ndarray:
    """One text at a time: the tokenizer's ids plus ``eos`` appended, last token, normalise."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    eos_id = tok.convert_tokens_to_ids(eos)
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = [*tok(text)["input_ids"], eos_id]
            hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            rows.append(F.normalize(hidden, dim=-1))
    return torch.stack(rows).numpy()


# ---------------------------------------------------------------------------------------------
# loaders and pooling


@pytest.fixture(scope="module")
def minilm(minilm_dir: Path) -> LoadedEncoder:
    return load_encoder(EncoderOptions(model=str(minilm_dir), device="cpu"))


@pytest.fixture(scope="module")
def tiny_bert(tiny_bert_dir: Path) -> LoadedEncoder:
    return load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="cpu"))


@pytest.fixture(scope="module")
def tiny_qwen3(tiny_qwen3_dir: Path) -> LoadedEncoder:
    return load_encoder(EncoderOptions(model=str(tiny_qwen3_dir), device="cpu"))


def test_minilm_takes_the_sentence_transformers_path(minilm: LoadedEncoder, minilm_dir: Path):
    from sentence_transformers import SentenceTransformer

    info = minilm.info
    assert info.loader == "sentence-transformers"
    assert (info.pooling, info.normalize, info.dimension) == ("mean", True, 384)
    assert (info.dtype, info.device, info.max_length) == ("fp32", "cpu", 256)
    assert info.fingerprint == model_fingerprint(str(minilm_dir), None)
    assert info.fingerprint.startswith("sha256:")
    reference = SentenceTransformer(str(minilm_dir), device="cpu")
    got = minilm.encode(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
    assert _max_diff(got, reference.encode(TEXTS)) < TOL
    # The prompt goes through sentence-transformers' own encode(prompt=...).
    prompted = minilm.encode(TEXTS, prompt="query: ")
    assert _max_diff(prompted, reference.encode(TEXTS, prompt="query: ")) < TOL
    assert _max_diff(prompted, got) > 1e-3
    record = info.to_dict()
    assert json.loads(json.dumps(record)) == record


def test_plain_bert_checkpoint_is_mean_pooled(tiny_bert: LoadedEncoder, tiny_bert_dir: Path):
    assert not (tiny_bert_dir / "modules.json").exists()
    info = tiny_bert.info
    assert (info.loader, info.pooling, info.normalize) == ("transformers", "mean", True)
    assert info.is_decoder is False and info.dimension == 32
    got = tiny_bert.encode(TEXTS, batch_size=3)  # padded batches, sorted by length
    want = reference_mean(tiny_bert_dir, TEXTS)
    assert _max_diff(got, want) < TOL
    assert _max_diff(got, reference_cls(tiny_bert_dir, TEXTS)) > 1e-2
    # A transformers model gets the prompt prepended to the text.
    got = tiny_bert.encode(TEXTS, prompt="query: ")
    assert _max_diff(got, reference_mean(tiny_bert_dir, TEXTS, prompt="query: ")) < TOL


def test_qwen3_is_last_token_pooled_with_left_padding(tiny_qwen3: LoadedEncoder, tiny_qwen3_dir):
    info = tiny_qwen3.info
    assert (info.loader, info.pooling, info.padding_side) == ("transformers", "last-token", "left")
    assert info.is_decoder and info.normalize
    # Its tokenizer appends <|endoftext|> itself (as Qwen3-Embedding's does): nothing added.
    assert info.append_eos is False and info.eos_token == "<|endoftext|>"
    want, card_batch = reference_last_token_card(tiny_qwen3_dir, TEXTS)
    got = tiny_qwen3.encode(TEXTS)
    assert _max_diff(got, want) < TOL
    # Padding changes nothing: one text at a time gives the same vectors.
    single = np.concatenate([tiny_qwen3.encode([t]) for t in TEXTS])
    assert _max_diff(single, got) < TOL
    batch = tiny_qwen3.backend.tokenize(TEXTS)
    endoftext = tiny_qwen3.backend.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert bool((batch["attention_mask"][:, -1] == 1).all())  # left padded
    assert bool((batch["input_ids"][:, -1] == endoftext).all())
    assert torch.equal(batch["input_ids"], card_batch["input_ids"])


def test_qwen3_tokenizer_without_eos_gets_endoftext_appended(
    tiny_qwen3: LoadedEncoder, tiny_qwen3_noeos_dir: Path
):
    enc = load_encoder(EncoderOptions(model=str(tiny_qwen3_noeos_dir), device="cpu"))
    # Qwen-family embedders pool on <|endoftext|>, not on the chat eos (<|im_end|>).
    assert enc.info.append_eos is True and enc.info.eos_token == "<|endoftext|>"
    got = enc.encode(TEXTS)
    want = reference_last_token_with_eos(tiny_qwen3_noeos_dir, TEXTS, "<|endoftext|>")
    assert _max_diff(got, want) < TOL
    # Same weights (same seed and vocabulary) as the model whose tokenizer appends it.
    assert _max_diff(got, tiny_qwen3.encode(TEXTS)) < TOL
    off = load_encoder(
        EncoderOptions(model=str(tiny_qwen3_noeos_dir), device="cpu", append_eos=False)
    )
    assert off.info.append_eos is False
    assert _max_diff(off.encode(TEXTS), got) > 1e-3


def test_llama_gets_eos_and_a_pad_token(tiny_llama_dir: Path):
    enc = load_encoder(EncoderOptions(model=str(tiny_llama_dir), device="cpu"))
    info = enc.info
    assert (info.pooling, info.padding_side, info.append_eos, info.eos_token) == (
        "last-token",
        "left",
        True,
        "</s>",
    )
    got = enc.encode(TEXTS, batch_size=2)
    assert _max_diff(got, reference_last_token_with_eos(tiny_llama_dir, TEXTS, "</s>")) < TOL
    batch = enc.backend.tokenize(TEXTS)
    assert bool((batch["input_ids"][:, -1] == enc.backend.tokenizer.eos_token_id).all())
    assert bool((batch["attention_mask"][:, -1] == 1).all())


def test_max_length_keeps_the_eos(tiny_llama_dir: Path):
    enc = load_encoder(EncoderOptions(model=str(tiny_llama_dir), device="cpu", max_length=6))
    batch = enc.backend.tokenize(TEXTS)
    assert batch["input_ids"].shape[1] == 6
    assert bool((batch["input_ids"][:, -1] == enc.backend.tokenizer.eos_token_id).all())
    assert enc.info.max_length == 6


def test_pooling_override(tiny_bert_dir: Path, tiny_qwen3_dir: Path, minilm: LoadedEncoder):
    cls = load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="cpu", pooling="cls"))
    assert cls.info.pooling == "cls"
    assert _max_diff(cls.encode(TEXTS), reference_cls(tiny_bert_dir, TEXTS)) < TOL
    mean = load_encoder(EncoderOptions(model=str(tiny_qwen3_dir), device="cpu", pooling="mean"))
    assert mean.info.pooling == "mean"
    assert _max_diff(mean.encode(TEXTS), reference_mean(tiny_qwen3_dir, TEXTS)) < TOL
    st_cls = load_encoder(EncoderOptions(model=minilm.info.path, device="cpu", pooling="cls"))
    assert (st_cls.info.loader, st_cls.info.pooling) == ("sentence-transformers", "cls")
    assert _max_diff(st_cls.encode(TEXTS), minilm.encode(TEXTS)) > 1e-2
    with pytest.raises(KoembedError, match="--koembed-pooling 'median' is not one of"):
        load_encoder(EncoderOptions(model=str(tiny_bert_dir), pooling="median"))


def test_declared_pooling_is_used(tiny_bert_dir: Path, tmp_path: Path):
    model_dir = tmp_path / "declared"
    shutil.copytree(tiny_bert_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["pooling"] = "cls"
    (model_dir / "config.json").write_text(json.dumps(config))
    enc = load_encoder(EncoderOptions(model=str(model_dir), device="cpu"))
    assert enc.info.pooling == "cls"
    assert _max_diff(enc.encode(TEXTS), reference_cls(tiny_bert_dir, TEXTS)) < TOL


def test_pool_handles_left_and_right_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(pooling.pool(hidden, right, "last-token"), hidden[[0, 1], [1, 3]])
    assert torch.equal(pooling.pool(hidden, left, "last-token"), hidden[[0, 1], [3, 3]])
    assert torch.allclose(pooling.pool(hidden, right, "mean")[0], hidden[0, :2].mean(0))
    assert torch.equal(pooling.pool(hidden, right, "max")[0], hidden[0, 1])


# ---------------------------------------------------------------------------------------------
# prompts reach the texts


class _TokenizerSpy:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[str] = []

    def __call__(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self.seen.extend(texts)
        return self.inner(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_transformers_path_prepends_the_prompt(tiny_bert: LoadedEncoder):
    spy = _TokenizerSpy(tiny_bert.backend.tokenizer)
    backend = tiny_bert.backend
    original = backend.tokenizer
    backend.tokenizer = spy
    try:
        tiny_bert.encode(["가", "나다"], prompt="Instruct: x\nQuery:")
        tiny_bert.encode(["라"])
    finally:
        backend.tokenizer = original
    assert sorted(spy.seen[:2]) == ["Instruct: x\nQuery:가", "Instruct: x\nQuery:나다"]
    assert spy.seen[2:] == ["라"]


def test_sentence_transformers_path_hands_the_prompt_over(
    minilm: LoadedEncoder, monkeypatch: pytest.MonkeyPatch
):
    calls: list[tuple[list[str], Any]] = []
    st = minilm.backend.model
    real = st.encode

    def spy(texts: list[str], **kwargs: Any) -> Any:
        calls.append((list(texts), kwargs.get("prompt")))
        return real(texts, **kwargs)

    monkeypatch.setattr(st, "encode", spy)
    minilm.encode(["가", "나"], prompt="query: ")
    minilm.encode(["다"])
    assert calls[0] == (["가", "나"], "query: ")
    # No prompt is "" (never None), so a model's default_prompt_name cannot slip in.
    assert calls[1] == (["다"], "")


def test_encode_keeps_order_and_shapes(tiny_bert: LoadedEncoder):
    got = tiny_bert.encode(TEXTS, batch_size=2)
    one_by_one = np.concatenate([tiny_bert.encode([t]) for t in TEXTS])
    assert _max_diff(got, one_by_one) < TOL
    assert tiny_bert.encode([]).shape == (0, 32)
    with pytest.raises(TypeError):
        tiny_bert.encode("not a list")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# dtype, device, batch size


def test_dtype_flag_on_cpu(tiny_bert_dir: Path, tiny_bert: LoadedEncoder):
    enc = load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="cpu", dtype="bf16"))
    assert enc.info.dtype == "bf16" and enc.info.requested_dtype == "bf16"
    assert enc.info.row_name == f"{tiny_bert_dir.name}-bf16"
    assert next(enc.backend.model.parameters()).dtype == torch.bfloat16
    got = enc.encode(TEXTS)
    assert got.dtype == np.float32
    cosine = np.sum(got * tiny_bert.encode(TEXTS), axis=1)
    assert cosine.min() > 0.98
    assert tiny_bert.info.row_name == tiny_bert_dir.name  # fp32: no suffix


def test_dtype_flag_on_sentence_transformers(minilm: LoadedEncoder):
    enc = load_encoder(EncoderOptions(model=minilm.info.path, device="cpu", dtype="bf16"))
    assert enc.info.dtype == "bf16" and enc.info.row_name.endswith("-bf16")
    assert next(enc.backend.model.parameters()).dtype == torch.bfloat16
    cosine = np.sum(enc.encode(TEXTS) * minilm.encode(TEXTS), axis=1)
    assert cosine.min() > 0.98


def test_auto_dtype_is_fp32_on_cpu_even_for_llms(tiny_qwen3: LoadedEncoder):
    assert tiny_qwen3.info.requested_dtype == "auto"
    assert tiny_qwen3.info.dtype == "fp32"
    assert next(tiny_qwen3.backend.model.parameters()).dtype == torch.float32
    assert not tiny_qwen3.info.row_name.endswith(("-bf16", "-fp16"))


@pytest.mark.parametrize(
    ("requested", "device", "llm", "bf16", "board", "ckpt", "expected"),
    [
        ("auto", "cuda", True, True, None, None, "bf16"),
        ("auto", "cuda", True, False, None, None, "fp16"),
        ("auto", "cuda", True, True, "fp16", "bf16", "fp16"),  # the leaderboard row's dtype
        ("auto", "cuda", True, True, None, "fp16", "fp16"),  # the checkpoint's half dtype
        ("auto", "cuda", False, True, None, None, "fp32"),  # encoders stay fp32
        ("auto", "cpu", True, True, "bf16", None, "fp32"),
        ("auto", "mps", True, True, None, None, "fp16"),
        ("fp16", "cpu", False, True, None, None, "fp16"),
    ],
)
def test_resolve_dtype(requested, device, llm, bf16, board, ckpt, expected):
    got = resolve_dtype(
        requested,
        device_type=device,
        llm=llm,
        bf16_supported=bf16,
        leaderboard=board,
        checkpoint=ckpt,
    )
    assert got == expected


def test_row_names_follow_the_leaderboard():
    assert naming._row_name("Qwen/Qwen3-Embedding-8B", "bf16") == "Qwen/Qwen3-Embedding-8B-bf16"
    assert naming._row_name("facebook/drama-1b", "fp16") == "facebook/drama-1b-fp16"
    assert naming._row_name("nlpai-lab/KURE-v1", "fp32") == "nlpai-lab/KURE-v1"
    assert naming._row_name("x-bf16", "bf16") == "x-bf16"


def test_device_flags_on_cpu(tiny_bert_dir: Path, tiny_bert: LoadedEncoder):
    assert tiny_bert.info.device == "cpu"
    assert next(tiny_bert.backend.model.parameters()).device.type == "cpu"
    with pytest.raises(KoembedError, match="not one of auto, cpu, cuda"):
        load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(KoembedError, match=r"CUDA is not available.*--koembed-device cpu"):
            load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="cuda"))
        with pytest.raises(KoembedError, match="CUDA is not available"):
            load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="cuda:1"))
    if not dtypes._mps_available():
        with pytest.raises(KoembedError, match="MPS backend is not available"):
            load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="mps"))


def test_unrunnable_dtype_is_one_line(monkeypatch: pytest.MonkeyPatch):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'\nmore")

    monkeypatch.setattr(torch.nn.functional, "layer_norm", broken)
    with pytest.raises(KoembedError) as err:
        dtypes.check_dtype_supported("fp16", "cpu")
    assert "--koembed-dtype fp16 does not run on cpu" in str(err.value)
    assert "\n" not in str(err.value)


def _oom_when_batch_over(limit: int, forward: Any) -> Any:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        tensor = kwargs.get("input_ids")
        if tensor is None:
            features = args[0] if args else kwargs.get("features") or kwargs.get("input")
            tensor = features["input_ids"]
        if tensor.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(*args, **kwargs)

    return guarded


def test_oom_halves_the_batch_size(tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch):
    enc = load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="cpu", batch_size=16))
    texts = [f"{t} {i}" for i, t in enumerate(TEXTS * 3)]  # 15 texts
    want = enc.encode(texts)
    model = enc.backend.model
    monkeypatch.setattr(model, "forward", _oom_when_batch_over(4, model.forward))
    got = enc.encode(texts)
    assert _max_diff(got, want) < TOL
    assert enc.info.batch_size == 4 and enc.info.oom_retries == 2  # 16 -> 8 -> 4
    enc.encode(texts, batch_size=32)  # the ceiling holds for later calls
    assert enc.info.batch_size == 4 and enc.info.oom_retries == 2


def test_oom_back_off_on_sentence_transformers(minilm_dir: Path, monkeypatch: pytest.MonkeyPatch):
    enc = load_encoder(EncoderOptions(model=str(minilm_dir), device="cpu", batch_size=8))
    want = enc.encode(TEXTS * 2)
    st = enc.backend.model
    monkeypatch.setattr(st, "forward", _oom_when_batch_over(3, st.forward))
    assert _max_diff(enc.encode(TEXTS * 2), want) < TOL
    assert enc.info.batch_size == 2


def test_oom_at_batch_size_one_is_a_clear_error(tiny_bert: LoadedEncoder, monkeypatch):
    model = tiny_bert.backend.model
    monkeypatch.setattr(model, "forward", _oom_when_batch_over(0, model.forward))
    with pytest.raises(KoembedError, match="out of memory on cpu even at batch size 1"):
        tiny_bert.encode(TEXTS, batch_size=2)
    monkeypatch.undo()
    tiny_bert._ceiling = None
    tiny_bert.info.batch_size = 32


# ---------------------------------------------------------------------------------------------
# pytest-xdist GPU pinning (pure: runs without a GPU)


@pytest.mark.parametrize(
    ("worker", "outer", "count", "expected"),
    [
        ("gw0", None, 4, "0"),
        ("gw3", None, 4, "3"),
        ("gw5", None, 4, "1"),  # more workers than GPUs: wrap around
        ("gw0", "2,3", 8, "2"),  # an outer CUDA_VISIBLE_DEVICES is honoured
        ("gw1", "2,3", 8, "3"),
        ("gw2", "2,3", 8, "2"),
        ("gw1", "GPU-aaaa,GPU-bbbb", 0, "GPU-bbbb"),
        ("gw1", "1,-1,3", 8, "1"),  # CUDA stops reading at the first invalid id
    ],
)
def test_pin_worker_gpu(worker, outer, count, expected):
    env: dict[str, str] = {} if outer is None else {"CUDA_VISIBLE_DEVICES": outer}
    assert pin_worker_gpu(worker, env, gpu_count=count) == expected
    assert env["CUDA_VISIBLE_DEVICES"] == expected


@pytest.mark.parametrize(
    ("worker", "outer", "count"),
    [(None, None, 4), ("master", None, 4), ("gw0", None, 0), ("gw0", "", 4), ("gw1", "-1", 4)],
)
def test_pin_worker_gpu_leaves_things_alone(worker, outer, count):
    env: dict[str, str] = {} if outer is None else {"CUDA_VISIBLE_DEVICES": outer}
    assert pin_worker_gpu(worker, env, gpu_count=count) is None
    assert env.get("CUDA_VISIBLE_DEVICES") == outer


def test_pin_worker_gpu_does_not_compound():
    env = {"CUDA_VISIBLE_DEVICES": "4,5,6"}
    assert pin_worker_gpu("gw1", env) == "5"
    assert pin_worker_gpu("gw1", env) == "5"  # reads the outer value it kept, not "5"
    assert env["KOEMBED_OUTER_CUDA_VISIBLE_DEVICES"] == "4,5,6"


def test_pin_worker_gpu_imports_no_cuda():
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from pytest_koembed.models.pinning import pin_worker_gpu\n"
        "env = {'CUDA_VISIBLE_DEVICES': '0,1'}\n"
        "print(pin_worker_gpu('gw1', env), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]


# ---------------------------------------------------------------------------------------------
# fingerprints


def test_fingerprint_of_a_local_directory(tiny_bert_dir: Path, tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert_dir, copy)
    first = model_fingerprint(str(copy), None)
    assert first == model_fingerprint(str(tiny_bert_dir), None)  # content, not location
    (copy / "README.md").write_text("a model card does not change the weights")
    assert model_fingerprint(str(copy), None) == first
    config = json.loads((copy / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    second = model_fingerprint(str(copy), None)
    assert second != first
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_fingerprint(str(copy), None) not in (first, second)


def test_fingerprint_of_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert model_fingerprint("org/model", None) == "hub:org/model@main"
    assert model_fingerprint("org/model", "v1.0") == "hub:org/model@v1.0"
    assert model_fingerprint("org/model", sha) == f"hub:org/model@{sha}"
    refs = tmp_path / "models--org--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(sha)
    monkeypatch.setattr(fingerprint, "_hub_cache_dir", lambda: tmp_path)
    assert model_fingerprint("org/model", None) == f"hub:org/model@{sha}"


def test_hub_snapshot_directory_reads_as_its_repo_id(tiny_bert_dir: Path, tmp_path: Path):
    sha = "89abcdef0123456789abcdef0123456789abcdef"
    snapshot = tmp_path / "models--acme--tiny-bert" / "snapshots" / sha
    shutil.copytree(tiny_bert_dir, snapshot)
    enc = load_encoder(EncoderOptions(model=str(snapshot), device="cpu", dtype="bf16"))
    assert enc.info.row_name == "acme/tiny-bert-bf16"


# ---------------------------------------------------------------------------------------------
# one-line errors


def _one_line_error(options: EncoderOptions) -> str:
    with pytest.raises(KoembedError) as err:
        load_encoder(options)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_directory_that_is_not_a_model(tmp_path: Path):
    (tmp_path / "weights.txt").write_text("nothing")
    message = _one_line_error(EncoderOptions(model=str(tmp_path)))
    assert "modules.json" in message and "config.json" in message
    assert "sentence-transformers" in message and "transformers model directory" in message
    message = _one_line_error(EncoderOptions(model=str(tmp_path / "weights.txt")))
    assert "not a model directory" in message


def test_a_path_that_does_not_exist(tmp_path: Path):
    message = _one_line_error(EncoderOptions(model=str(tmp_path / "nope" / "ckpt")))
    assert "no such directory" in message
    message = _one_line_error(EncoderOptions(model="./ckpt-missing"))
    assert "no such directory" in message


def test_a_hub_id_offline_and_not_cached():
    """HF_HUB_OFFLINE=1 here (conftest): offline on purpose, not "the Hub is unreachable"."""
    message = _one_line_error(EncoderOptions(model="koembed-tests/definitely-not-cached"))
    assert "HF_HUB_OFFLINE is set" in message and "unreachable" not in message
    assert "run once with the Hub reachable" in message and "local model directory" in message


def _write_custom_model(path: Path, tiny_bert_dir: Path) -> None:
    shutil.copytree(tiny_bert_dir, path)
    (path / "configuration_koembed.py").write_text(
        "from transformers import BertConfig\n\n"
        "class KoembedTestConfig(BertConfig):\n"
        "    model_type = 'koembed-test-custom'\n"
    )
    (path / "modeling_koembed.py").write_text(
        "from transformers import BertModel\n"
        "from .configuration_koembed import KoembedTestConfig\n\n"
        "class KoembedTestModel(BertModel):\n"
        "    config_class = KoembedTestConfig\n"
    )
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "koembed-test-custom"
    config["architectures"] = ["KoembedTestModel"]
    config["auto_map"] = {
        "AutoConfig": "configuration_koembed.KoembedTestConfig",
        "AutoModel": "modeling_koembed.KoembedTestModel",
    }
    (path / "config.json").write_text(json.dumps(config))


def test_remote_code_needs_the_flag(tiny_bert_dir: Path, tmp_path: Path):
    model_dir = tmp_path / "custom-code"
    _write_custom_model(model_dir, tiny_bert_dir)
    message = _one_line_error(EncoderOptions(model=str(model_dir)))
    assert "--koembed-trust-remote-code" in message
    enc = load_encoder(EncoderOptions(model=str(model_dir), device="cpu", trust_remote_code=True))
    assert enc.info.trust_remote_code is True
    assert type(enc.backend.model).__name__ == "KoembedTestModel"
    assert _max_diff(enc.encode(TEXTS), reference_mean(tiny_bert_dir, TEXTS)) < TOL


def test_custom_sentence_transformers_module_needs_the_flag(minilm_dir: Path, tmp_path: Path):
    model_dir = tmp_path / "st-custom"
    shutil.copytree(minilm_dir, model_dir)
    modules = json.loads((model_dir / "modules.json").read_text())
    modules[1]["type"] = "my_package.MyPooling"
    (model_dir / "modules.json").write_text(json.dumps(modules))
    message = _one_line_error(EncoderOptions(model=str(model_dir)))
    assert "my_package.MyPooling" in message and "--koembed-trust-remote-code" in message


def test_bad_option_values(tiny_bert_dir: Path):
    assert "--koembed-dtype 'fp8'" in _one_line_error(
        EncoderOptions(model=str(tiny_bert_dir), dtype="fp8")
    )
    assert "--koembed-batch-size" in _one_line_error(
        EncoderOptions(model=str(tiny_bert_dir), batch_size=0)
    )


# ---------------------------------------------------------------------------------------------
# GPU only (skipped cleanly without CUDA)


@needs_cuda
def test_gpu_half_precision(tiny_bert_dir: Path, tiny_qwen3_dir: Path, tiny_bert: LoadedEncoder):
    fp16 = load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="cuda", dtype="fp16"))
    assert fp16.info.device == "cuda:0" and fp16.info.dtype == "fp16"
    got = fp16.encode(TEXTS)
    assert np.isfinite(got).all()
    assert np.sum(got * tiny_bert.encode(TEXTS), axis=1).min() > 0.98
    auto = load_encoder(EncoderOptions(model=str(tiny_qwen3_dir), device="cuda"))
    assert auto.info.dtype in ("bf16", "fp16")
    assert auto.info.row_name.endswith(f"-{auto.info.dtype}")
    cpu = load_encoder(EncoderOptions(model=str(tiny_qwen3_dir), device="cpu"))
    assert np.sum(auto.encode(TEXTS) * cpu.encode(TEXTS), axis=1).min() > 0.98


@needs_cuda
def test_gpu_device_index_out_of_range(tiny_bert_dir: Path):
    count = torch.cuda.device_count()
    message = _one_line_error(EncoderOptions(model=str(tiny_bert_dir), device=f"cuda:{count}"))
    assert f"only {count} GPU(s) visible" in message


@needs_cuda
def test_gpu_oom_back_off_keeps_results(tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch):
    enc = load_encoder(EncoderOptions(model=str(tiny_bert_dir), device="cuda", batch_size=8))
    want = enc.encode(TEXTS * 2)
    model = enc.backend.model
    monkeypatch.setattr(model, "forward", _oom_when_batch_over(2, model.forward))
    assert _max_diff(enc.encode(TEXTS * 2), want) < 1e-4
    assert enc.info.batch_size == 2


def test_a_hub_id_found_in_the_local_cache(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import huggingface_hub.constants

    sha = "fedcba9876543210fedcba9876543210fedcba98"
    repo = tmp_path / "models--acme--tiny-bert"
    shutil.copytree(tiny_bert_dir, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(fingerprint, "_hub_cache_dir", lambda: tmp_path)
    enc = load_encoder(EncoderOptions(model="acme/tiny-bert", device="cpu"))
    assert (enc.info.name, enc.info.row_name, enc.info.revision) == (
        "acme/tiny-bert",
        "acme/tiny-bert",
        sha,
    )
    assert enc.info.fingerprint == f"hub:acme/tiny-bert@{sha}"
    assert enc.info.fingerprint == model_fingerprint("acme/tiny-bert", None)
    assert enc.info.loader == "transformers" and enc.info.pooling == "mean"
