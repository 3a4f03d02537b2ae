"""RAG with citations a reader can check.

    from pipelines.rag import RAG, Index
    index = Index("~/.local/share/llamapipe/index")
    index.ingest(["docs/"])
    answer = RAG(model=backend.chat, index=index).invoke("처용가는 누가 지었나요?")
    for c in answer.citations:
        assert index.document_text(c.source)[c.start:c.end] == c.quote

Retrieval is `IndexRetriever`, a langchain-core `BaseRetriever` (BM25 with Korean
morphemes; dense vectors fused in when the index has an embeddings model).
"""

from pipelines.rag.citations import Citation
from pipelines.rag.documents import BadDocument, LoadedDocument, load_document
from pipelines.rag.index import FileStatus, Hit, Index, IngestReport
from pipelines.rag.pipeline import ABSTAIN, RAG, RAGAnswer, Retrieved
from pipelines.rag.retriever import IndexRetriever

__all__ = [
    "ABSTAIN",
    "RAG",
    "BadDocument",
    "Citation",
    "FileStatus",
    "Hit",
    "Index",
    "IndexRetriever",
    "IngestReport",
    "LoadedDocument",
    "RAGAnswer",
    "Retrieved",
    "load_document",
]
