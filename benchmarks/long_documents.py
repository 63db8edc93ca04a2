"""Issue 16, part 4: long documents embedded whole, as the mean of their chunks.

MiniLM reads 256 wordpieces (254 of text): the rest of a longer document never reaches the
embedding, only the lexical columns, which are fitted on the whole text. Here a document
longer than that is cut into consecutive 254-wordpiece chunks (at most `--max-chunks`),
each chunk embedded through the project's embedder and cache, and the document's vector is
the normalised mean of its chunks'. A document that fits is embedded as it is, so its
vector is unchanged.

The default and tropel run on the same pools of `benchmarks/heldout.py` twice: on the
embedding as the service computes it (truncated) and on the whole-document embedding.

    python benchmarks/long_documents.py --sets reuters
    python benchmarks/long_documents.py --sets reuters,20newsgroups_0.005 --max-chunks 2
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness, heldout  # noqa: E402

WINDOW = 254  # wordpieces of text per chunk: MiniLM's 256 less [CLS] and [SEP]
METHODS = ("default", "tropel")


def chunk_texts(
    texts: list[str], tokenizer, window: int = WINDOW, max_chunks: int | None = None
) -> tuple[list[str], np.ndarray]:
    """Every text's chunks, and for each chunk the text it belongs to. A text that fits in
    one window is its own chunk, word for word."""
    chunks, owner = [], []
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for i, (text, pieces) in enumerate(zip(texts, ids, strict=True)):
        if len(pieces) <= window:
            parts = [text]
        else:
            starts = range(0, len(pieces), window)
            parts = [tokenizer.decode(pieces[s : s + window]) for s in starts][:max_chunks]
        parts = [p for p in parts if p.strip()] or [text]
        chunks += parts
        owner += [i] * len(parts)
    return chunks, np.array(owner)


def whole_document_embedding(texts: list[str], max_chunks: int | None) -> np.ndarray:
    """(n, d): each text's chunks embedded (the shared cache), averaged, normalised."""
    embedder = harness.shared_embedder()
    chunks, owner = chunk_texts(texts, embedder._load().tokenizer, max_chunks=max_chunks)
    harness.log(f"{len(texts)} texts -> {len(chunks)} chunks of <= {WINDOW} wordpieces")
    _, C = harness.embed(chunks, with_embedder=embedder)  # the model loaded once
    X = np.zeros((len(texts), C.shape[1]), dtype=np.float64)
    np.add.at(X, owner, C)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="reuters", help="comma-separated sets of heldout.py")
    p.add_argument("--states", type=int, default=3)
    p.add_argument("--budget", type=int, default=300)
    p.add_argument("--max-chunks", type=int, default=None, help="chunks per text (default all)")
    p.add_argument("--out", type=Path, default=heldout.OUT / "long_documents.json")
    args = p.parse_args(argv)
    names = heldout.parse_sets(p, args.sets)
    if min(args.states, args.budget, args.max_chunks or 1) < 1:
        p.error("--states, --budget and --max-chunks must be >= 1")
    methods = [*METHODS, *(f"{m}_whole" for m in METHODS)]
    report = {"args": {**vars(args), "out": str(args.out)}, "sets": {}}
    for name in names:
        t0 = time.perf_counter()
        truncated = heldout.load(heldout.SETS[name])
        whole = replace(truncated, X=whole_document_embedding(truncated.texts, args.max_chunks))
        todo = heldout.pools(heldout.SETS[name], truncated, args.states)
        runs = []
        for suffix, loaded in (("", truncated), ("_whole", whole)):
            heldout.LOADED = loaded
            for pool in todo:
                for m in METHODS:
                    r = heldout.run_ours((pool, m, args.budget))
                    runs.append({**r, "method": m + suffix})
                    harness.log(f"  {m + suffix} {pool.key}: {r['found'][-1]} found")
        pools = [heldout.pool_record(pool) for pool in todo]
        summary = heldout.summarise(pools, runs, methods, args.budget, against="default")
        lines = heldout.heading(name, pools, args.budget)
        lines += heldout.table(summary, methods, {}, args.budget, against="default")
        print("\n" + "\n".join(lines) + "\n", flush=True)
        seconds = round(time.perf_counter() - t0, 1)
        record = {"pools": pools, "runs": runs, "summary": summary, "seconds": seconds}
        report["sets"][name] = record
        harness.write_json(args.out, report, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
