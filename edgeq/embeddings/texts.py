"""The texts embeddings are measured on: queries and passages from a play edgeq's other jobs never read.

Every speech of three lines or more in *As You Like It* (``sources.texts``, offline) is cut in two: its first
line is a query, the rest (at most ``PASSAGE_LINES`` lines) a passage.  A query's own passage is then a
natural neighbour without being its copy, so the neighbours a file finds are a real retrieval, whose agreement
with full precision's says what the quantization changed in the ranking.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..sources.texts import SOURCE, speeches

PLAY = "comedies/as-you-like-it"  # in none of eval's, choice's or calibration's plays
PASSAGE_LINES = 8  # ~100 tokens: under every model's max_seq_length, so no text is cut
DEFAULT_QUERIES = 64
DEFAULT_PASSAGES = 256
DEFAULT_K = 10


@dataclass(frozen=True)
class Corpus:
    queries: list[str]
    passages: list[str]
    source: str

    @property
    def texts(self) -> list[str]:
        """Every text, queries first: what cosine similarity is measured on."""
        return [*self.queries, *self.passages]


def corpus(n_queries: int = DEFAULT_QUERIES, n_passages: int = DEFAULT_PASSAGES) -> Corpus:
    """``n_queries`` queries and ``n_passages`` passages (at most the play's 286 speeches of 3+ lines each).

    The queries are spread evenly through the play, and their own passages are always among the passages."""
    runs = speeches(PLAY)
    n_passages = min(n_passages, len(runs))
    step = len(runs) / n_passages
    chosen = [runs[int(i * step)] for i in range(n_passages)]
    n_queries = min(n_queries, n_passages)
    qstep = n_passages / n_queries
    queries = [chosen[int(i * qstep)][0] for i in range(n_queries)]
    passages = [" ".join(r[1: 1 + PASSAGE_LINES]) for r in chosen]
    return Corpus(queries, passages, f"{PLAY}: {n_queries} first lines of speeches as queries, {n_passages} speeches "
                                     f"as passages — {SOURCE}")


__all__ = ["DEFAULT_K", "DEFAULT_PASSAGES", "DEFAULT_QUERIES", "Corpus", "corpus"]
