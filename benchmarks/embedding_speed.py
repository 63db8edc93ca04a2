"""Embedding throughput and its cost in recall: the ONNX int8 export against PyTorch.

Speed: the same texts embedded by sentence-transformers' default `encode` (the PyTorch
model, batch 32) and by our int8 backend, alternating, repeated; the median texts/s of each
and their ratio, in the same run. Quality: the default loop replayed on dbpedia14 and on two
held-out sets, with pools, seeds and targets fixed here, once on float and once on int8
vectors; recall@100 and @300 of each, and their difference.

    python benchmarks/embedding_speed.py                     # speed + quality (~25 min)
    python benchmarks/embedding_speed.py --skip-quality      # speed only (~3 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.data_dir import DBPEDIA14, data_file  # noqa: E402
from model.data import read_csv  # noqa: E402
from model.embedding import (  # noqa: E402
    Embedder,
    MemoryCache,
    SQLiteCache,
    default_cache_path,
    resolve_model,  # noqa: E402
)
from model.simulate import simulate_csv  # noqa: E402

# Targets fixed before any run: dbpedia14's are the development benchmark's; BANKING77's its
# first three labels in alphabetical order; TREC's the first three with 30-80 rows (0.6-1.5%
# of the file), at their natural prevalence.
QUALITY_SETS = {
    "dbpedia14": (DBPEDIA14, ["Company", "EducationalInstitution", "Artist"], 0.005),
    "banking77": (
        data_file("intents", "banking_train.csv.gz"),
        ["Refund_not_showing_up", "activate_my_card", "age_limit"],
        0.005,
    ),
    "trec-fine": (
        data_file("trec", "train.csv.gz"),
        ["ABBR:exp", "ENTY:color", "ENTY:event"],
        None,
    ),
}


def texts_per_second(encode, texts: list[str]) -> float:
    t0 = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - t0)


def speed(n: int, repeats: int) -> None:
    from sentence_transformers import SentenceTransformer

    texts = read_csv(DBPEDIA14, "text", "label").texts[:n]
    baseline = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RARELABEL_CACHE_DIR"] = tmp  # a fresh export, timed
        int8 = Embedder(cache=MemoryCache(), backend="onnx-int8")
        t0 = time.perf_counter()
        int8.warm_up()
        print(f"int8 export + load: {time.perf_counter() - t0:.1f} s ({int8.model_id})")
        baseline.encode(texts[:32])
        runs: dict[str, list[float]] = {"torch default encode": [], "onnx-int8": []}
        for r in range(repeats):
            int8.cache = MemoryCache()  # every repeat embeds every text
            runs["torch default encode"].append(texts_per_second(baseline.encode, texts))
            runs["onnx-int8"].append(texts_per_second(int8.encode, texts))
            print(f"  repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in runs.items()))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\n{n} dbpedia14 texts, {repeats} repeats, median texts/s:")
    for k, v in med.items():
        print(f"  {k:<22}{v:8.0f}")
    print(f"  ratio int8 / torch    {med['onnx-int8'] / med['torch default encode']:8.2f}x")


def quality(seeds: int, budget: int) -> None:
    cache = SQLiteCache(default_cache_path())
    print(f"\nrecall of the default loop, {budget} labels, random states 0-{seeds - 1}")
    print(f"{'set':<11}{'backend':<11}{'R@100':>7}{'R@300':>7}   per run R@300")
    for name, (path, targets, prevalence) in QUALITY_SETS.items():
        means: dict[str, tuple[float, float]] = {}
        for backend in ("torch", "onnx-int8"):
            embedder = Embedder(cache=cache, backend=backend)
            r100, r300 = [], []
            for state in range(seeds):
                rep = simulate_csv(
                    path,
                    targets,
                    budget,
                    prevalence=prevalence,
                    random_state=state,
                    embedder=embedder,
                    methods=("system",),
                    progress=False,
                )
                r100.append(rep.recall["system"][100])
                r300.append(rep.recall["system"][300])
            means[backend] = (float(np.mean(r100)), float(np.mean(r300)))
            runs = " ".join(f"{r:.2f}" for r in r300)
            print(
                f"{name:<11}{backend:<11}{means[backend][0]:7.3f}{means[backend][1]:7.3f}   {runs}"
            )
        d100 = means["onnx-int8"][0] - means["torch"][0]
        d300 = means["onnx-int8"][1] - means["torch"][1]
        print(f"{'':<11}{'int8-float':<11}{d100:+7.3f}{d300:+7.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=int, default=300)
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args()
    if not args.skip_speed:
        speed(args.texts, args.repeats)
    if not args.skip_quality:
        quality(args.seeds, args.budget)


if __name__ == "__main__":
    main()
