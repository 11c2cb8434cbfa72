"""A toy "model-training repo": one small embedding model and nothing else."""

from toy_encoder.model import ToyNgramEncoder

__all__ = ["ToyNgramEncoder"]
