"""Issue 16, part 2: the paper's feature update as a contrastive fine-tune of the encoder.

The paper's slow step retrains the feature extractor on the labels so far, then caches the
pool's features again. For text that is a SetFit-style fine-tune of MiniLM (pairs of
labelled texts, cosine of a pair pushed to 1 for the same class and to 0 otherwise) and a
re-embedding of the pool with the tuned encoder. On 2 cores that is minutes per update, so
this measures one update, not an update every few labels:

1. the default loop labels `--before` tasks (100) on the frozen embedding;
2. the encoder is fine-tuned on those labels (its positives against its human negatives);
3. the loop goes on for `--after` labels (200) from the same labels, once on the frozen
   embedding and once on the tuned one (each with the same pool's lexical columns).

It prints the finds of both continuations on the same pools, paired, and the cost of the
update (fine-tune, re-embedding) beside the loop's own time. The tuned encoder runs in
float (PyTorch); the frozen one is the service's int8 export (their recall differs by at
most 0.02: docs/benchmarks.md, "Embedding").

    python benchmarks/contrastive_update.py --sets dbpedia14_0.005 --states 1
    python benchmarks/contrastive_update.py --pools 1      # one update's cost
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness, heldout  # noqa: E402
from model.embedding import DEFAULT_MODEL, resolve_model  # noqa: E402
from model.features import pad_prototypes, pool_features  # noqa: E402
from model.prioritiser import RankerConfig, prototype_text  # noqa: E402
from model.simulate import run  # noqa: E402

PAIRS_PER_TEXT = 20  # SetFit's default number of pair iterations
EPOCHS, BATCH, LR = 1, 16, 2e-5


def pairs(pos: list[str], neg: list[str], rng: np.random.Generator) -> list[tuple[str, str, float]]:
    """For each labelled text, PAIRS_PER_TEXT partners: half of its own class, half not."""
    out = []
    for texts, other in ((pos, neg), (neg, pos)):
        for a in texts:
            for i in range(PAIRS_PER_TEXT):
                same = i % 2 == 0
                b = texts[rng.integers(len(texts))] if same else other[rng.integers(len(other))]
                out.append((a, b, 1.0 if same else 0.0))
    return [out[i] for i in rng.permutation(len(out))]


def fine_tune(pos: list[str], neg: list[str], seed: int):
    """A fresh float MiniLM fine-tuned on the pairs (cosine similarity loss, AdamW)."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    model = SentenceTransformer(resolve_model(DEFAULT_MODEL), device="cpu")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    data = pairs(pos, neg, np.random.default_rng(seed))
    for _ in range(EPOCHS):
        for s in range(0, len(data), BATCH):
            batch = data[s : s + BATCH]
            a = model(model.preprocess([x[0] for x in batch]))["sentence_embedding"]
            b = model(model.preprocess([x[1] for x in batch]))["sentence_embedding"]
            cos = torch.nn.functional.cosine_similarity(a, b)
            loss = torch.nn.functional.mse_loss(cos, torch.tensor([x[2] for x in batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model, len(data)


def run_pool(loaded, pool, args) -> dict:
    texts = [loaded.texts[i] for i in pool.rows]
    labels = loaded.labels[pool.rows]
    config = RankerConfig(random_state=pool.state)
    lexical = config.lexical_dims
    X, _ = pool_features(loaded.X[pool.rows], texts, lexical, pool.state)
    protos = pad_prototypes({pool.target: loaded.prototypes[pool.target]}, lexical)
    t0 = time.perf_counter()
    first = run(X, labels, [pool.target], pool.seeds, args.before, "system", config, protos)
    loop_seconds = time.perf_counter() - t0
    assert first.state is not None
    known = {int(r): str(labels[r]) for r in first.state.labels}
    pos = [texts[r] for r, lab in known.items() if lab == pool.target]
    neg = [texts[r] for r, lab in known.items() if lab != pool.target]
    out = {"key": pool.key, "before": first.found[-1], "positives": len(pos)}
    out |= {"negatives": len(neg), "loop_s": round(loop_seconds, 1)}
    if not neg:  # every pick a hit: nothing to contrast with, no update
        out["skipped"] = "no negative"
        return out
    t0 = time.perf_counter()
    model, n_pairs = fine_tune(pos, neg, pool.state)
    out["tune_s"], out["pairs"] = round(time.perf_counter() - t0, 1), n_pairs
    t0 = time.perf_counter()
    tuned = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    out["embed_s"] = round(time.perf_counter() - t0, 1)
    X_tuned = np.hstack([tuned.astype(np.float32), X[:, loaded.X.shape[1] :]])
    proto = model.encode([prototype_text(pool.target)], normalize_embeddings=True)
    protos_tuned = pad_prototypes({pool.target: proto[0].astype(np.float32)}, lexical)
    for name, Xs, ps in (("frozen", X, protos), ("tuned", X_tuned, protos_tuned)):
        res = run(Xs, labels, [pool.target], known, args.after, "system", config, ps)
        out[name] = res.found
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="dbpedia14_0.005")
    p.add_argument("--states", type=int, default=1)
    p.add_argument("--before", type=int, default=100)
    p.add_argument("--after", type=int, default=200)
    p.add_argument("--pools", type=int, default=None, help="the first N pools of each set")
    p.add_argument("--out", type=Path, default=heldout.OUT / "contrastive_update.json")
    args = p.parse_args(argv)
    names = heldout.parse_sets(p, args.sets)
    if min(args.states, args.before, args.after, args.pools or 1) < 1:
        p.error("--states, --before, --after and --pools must be >= 1")
    report = {"args": {**vars(args), "out": str(args.out)}, "sets": {}}
    for name in names:
        loaded = heldout.load(heldout.SETS[name])
        results = []
        for pool in heldout.pools(heldout.SETS[name], loaded, args.states)[: args.pools]:
            r = run_pool(loaded, pool, args)
            results.append(r)
            brief = {k: v for k, v in r.items() if k not in ("frozen", "tuned")}
            harness.log(f"{name} {pool.key}: {brief}")
            report["sets"][name] = results
            harness.write_json(args.out, report, indent=1)
        done = [r for r in results if "tuned" in r]
        for k in (50, 100, args.after):
            k = min(k, args.after)
            d = [r["tuned"][k - 1] - r["frozen"][k - 1] for r in done]
            more, fewer = sum(x > 0 for x in d), sum(x < 0 for x in d)
            p_value = harness.sign_test(more, fewer)
            print(
                f"{name}: by label {args.before} + {k}: tuned against frozen {sum(d):+d} "
                f"finds ({more}/{len(d) - more - fewer}/{fewer}, p {p_value:.2g})"
            )
        for f in ("loop_s", "tune_s", "embed_s"):
            print(f"{name}: {f} median {np.median([r[f] for r in done]):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
