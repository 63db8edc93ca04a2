"""The long-document benchmark's chunking (benchmarks/long_documents.py): a text that fits
is its own chunk, a longer one is cut into consecutive windows that cover it."""

from __future__ import annotations

from benchmarks.long_documents import WINDOW, chunk_texts
from model.embedding import DEFAULT_MODEL, Embedder, MemoryCache


def test_short_texts_stay_whole_and_long_ones_are_cut_in_windows():
    tokenizer = Embedder(model=DEFAULT_MODEL, cache=MemoryCache())._load().tokenizer
    short = "A short text about a company that builds trains."
    long = " ".join(f"word{i} sentence number {i} goes on." for i in range(300))
    n = len(tokenizer(long, add_special_tokens=False)["input_ids"])
    chunks, owner = chunk_texts([short, long], tokenizer)
    assert chunks[0] == short and owner.tolist().count(0) == 1
    assert owner.tolist().count(1) == -(-n // WINDOW) >= 2
    pieces = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in chunks[1:]]
    assert all(p <= WINDOW + 2 for p in pieces)  # a decoded window re-tokenises alike
    assert "word0" in chunks[1].replace(" ", "") and "word299" in chunks[-1].replace(" ", "")
    capped, owner = chunk_texts([short, long], tokenizer, max_chunks=2)
    assert owner.tolist() == [0, 1, 1] and capped[1] == chunks[1]
