"""A tiny embedding model: hashed character n-grams summed through a torch ``EmbeddingBag``.

It stands in for whatever model class your own repo trains. What pytest-koembed needs from it
is only ``encode(list[str]) -> array`` (here also ``encode_query`` / ``encode_document``).
"""

from __future__ import annotations

import json
import unicodedata
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn


class ToyNgramEncoder(nn.Module):
    def __init__(
        self,
        dim: int = 256,
        buckets: int = 1 << 15,
        ngrams: tuple[int, ...] = (1, 2, 3),
        seed: int = 0,
        max_chars: int | None = None,
    ):
        super().__init__()
        self.config = {
            "dim": dim,
            "buckets": buckets,
            "ngrams": list(ngrams),
            "seed": seed,
            "max_chars": max_chars,
        }
        self.ngrams = tuple(ngrams)
        # reads only the first max_chars characters of a text: a damage easy to explain
        self.max_chars = max_chars
        self.buckets = buckets
        generator = torch.Generator().manual_seed(seed)
        self.bag = nn.EmbeddingBag(buckets, dim, mode="sum")
        with torch.no_grad():
            self.bag.weight.copy_(torch.randn(buckets, dim, generator=generator))

    # -- the model ------------------------------------------------------------------------------

    def _features(self, text: str) -> list[int]:
        text = unicodedata.normalize("NFC", text).lower()[: self.max_chars]
        ids = []
        for n in self.ngrams:
            padded = f"<{text}>" if n > 1 else text
            for i in range(len(padded) - n + 1):
                gram = padded[i : i + n]
                if gram.strip():
                    ids.append(zlib.crc32(gram.encode("utf-8")) % self.buckets)
        return ids or [0]  # an empty text still gets a (fixed) non-zero vector

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        features = [self._features(t) for t in texts]
        flat = torch.tensor([i for f in features for i in f], dtype=torch.long)
        offsets = torch.tensor([0, *np.cumsum([len(f) for f in features])[:-1]], dtype=torch.long)
        return nn.functional.normalize(self.bag(flat, offsets), dim=-1)

    # -- what pytest-koembed calls --------------------------------------------------------------

    @property
    def info(self) -> dict[str, object]:
        """Optional: what the run record and the summary say about this encoder."""
        return {
            "name": "toy-char-ngram",
            "row_name": "toy-char-ngram",
            "loader": "custom (toy_encoder.ToyNgramEncoder)",
            "pooling": "sum of hashed character n-grams"
            + (f" of the first {self.max_chars} characters" if self.max_chars else ""),
            "normalize": True,
            "dtype": "fp32",
            "device": "cpu",
            "max_length": None,
            "dimension": self.config["dim"],
        }

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        self.eval()
        parts = [self(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        if not parts:
            return np.zeros((0, self.config["dim"]), dtype=np.float32)
        return torch.cat(parts).numpy().astype(np.float32)

    def encode_query(self, texts: list[str]) -> np.ndarray:
        # A real two-tower model would run its query tower here; the toy has one tower.
        return self.encode(texts)

    def encode_document(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts)

    # -- checkpoints ------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(self.config), encoding="utf-8")
        torch.save(self.state_dict(), directory / "weights.pt")

    @classmethod
    def load(cls, directory: str | Path) -> ToyNgramEncoder:
        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        model = cls(
            dim=config["dim"],
            buckets=config["buckets"],
            ngrams=tuple(config["ngrams"]),
            seed=config["seed"],
            max_chars=config.get("max_chars"),
        )
        model.load_state_dict(torch.load(directory / "weights.pt", weights_only=True))
        return model
