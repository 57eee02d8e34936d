"""Sentence-embedding models (issue 37): their quality, speed and plan, measured as for generators.

``evaluate_embeddings`` (`edgeq eval embeddings`): cosine and retrieval agreement of each GGUF against
sentence-transformers fp32; ``bench_embeddings`` (`edgeq bench` on an embedding model): embeddings/s, latency,
peak RSS and load time on llama.cpp and sentence-transformers; ``plan_embeddings`` (`edgeq plan`): RAM at the
model's context, speed and a pick by the decision rule, quality being the cosine.  The models, their head and
their reference come from ``models``; every embedder runs in a worker process (``worker``).
"""
from __future__ import annotations

from .models import EmbeddingModels, is_embedding_model, resolve_models
from .quality import EmbeddingEval, EmbeddingQuality, evaluate_embeddings

__all__ = ["EmbeddingEval", "EmbeddingModels", "EmbeddingQuality", "evaluate_embeddings", "is_embedding_model",
           "resolve_models"]
