"""A langchain-core `BaseRetriever` over an `Index`: BM25, plus dense when there are vectors,
fused with reciprocal rank fusion; only hits that are plausibly relevant are returned.

Relevance, so that abstaining is possible: a BM25 hit must share at least a third of the
query's content tokens (at least one); a dense-only hit needs cosine >= `min_cosine`.
"""

from __future__ import annotations

import math
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from pipelines.rag.index import Hit, Index
from pipelines.rag.tokenize import query_terms

RRF_K = 60  # the constant from Cormack et al. (2009)


class IndexRetriever(BaseRetriever):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Index
    k: int = 5
    min_overlap: float = 0.34
    min_cosine: float = 0.5

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun | None = None,
        k: int | None = None,
    ) -> list[Document]:
        """`retriever.invoke(query, k=2)` asks for at most 2, as LangChain's retrievers allow."""
        return [self._to_document(hit, score) for hit, score in self.hits(query, k)]

    def hits(self, query: str, k: int | None = None) -> list[tuple[Hit, float]]:
        """(hit, fused score), best first, at most k (default: self.k), relevant ones only."""
        k = self.k if k is None else k
        if k < 1:
            return []
        pool = k * 4
        groups = query_terms(query)
        tokens = [t for group in groups for t in sorted(group)]
        needed = max(1, math.ceil(self.min_overlap * len(groups)))

        def overlap(hit: Hit) -> int:
            have = set(hit.chunk.tokens.split())  # stored at ingest
            return sum(1 for group in groups if group & have)

        lexical = [h for h in self.index.search(query, pool, terms=tokens) if overlap(h) >= needed]
        dense = [h for h in self.index.dense_search(query, pool) if h.score >= self.min_cosine]
        if not dense:
            return [(h, h.score) for h in lexical[:k]]
        fused: dict[int, float] = {}
        by_row: dict[int, Hit] = {}
        for ranking in (lexical, dense):
            for rank, hit in enumerate(ranking):
                fused[hit.chunk.row] = fused.get(hit.chunk.row, 0.0) + 1.0 / (RRF_K + rank + 1)
                by_row.setdefault(hit.chunk.row, hit)
        best = sorted(fused, key=lambda row: -fused[row])[:k]
        return [(by_row[row], fused[row]) for row in best]

    @staticmethod
    def _to_document(hit: Hit, score: float) -> Document:
        c = hit.chunk
        meta: dict[str, Any] = {
            "source": c.source, "chunk_id": c.chunk_id, "start": c.start, "end": c.end,
            "page": c.page, "score": score,
        }  # fmt: skip
        return Document(page_content=c.text, metadata=meta)
