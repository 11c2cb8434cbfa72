"""The model backends ``load_encoder`` chooses between, one module each.

Each module holds a backend class (what :class:`~pytest_koembed.models.encoders.LoadedEncoder`
drives through the ``_Backend`` protocol: ``embed(texts, prompt)`` for one batch) and the function
that loads a model directory into it: ``sentence_transformers`` (a model with ``modules.json``),
``transformers`` (``AutoModel`` plus pooling) and ``sparse`` (a sentence-transformers
``SparseEncoder``).
"""
