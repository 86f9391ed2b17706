"""Training throughput of the torch encoders on CPU, dense vs sparse (PyG) GCN included.

Builds one synthetic dense batch (``--batch-size`` graphs of ``--nodes`` nodes, FC of random time
series with a few correlated blocks, windows of ``--length`` time points), then times full
training steps (forward, cross-entropy, backward, AdamW step) of each encoder with a classifier
head, after ``--warmup`` untimed steps, as the best of ``--repeats`` runs of ``--steps`` steps (the
machine may be shared). The sparse GCN's time includes building ``edge_index`` from the dense
batch, as it does in training. Prints a table and, as the last line,
``gcn_dense=<x> gcn_sparse=<y> graph_transformer=<z> temporal_transformer=<w> (samples/s)``.

Run with ``brainfuse bench encoders`` (``brainfuse bench train`` times whole training stages).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from brainfuse.methods.torch.augment import pearson
from brainfuse.methods.torch.encoders import BrainClassifier, build_encoder, sparsify

#: Benchmark name -> (encoder name, extra keyword arguments).
VARIANTS: dict[str, tuple[str, dict]] = {
    "gcn_dense": ("gcn_dense", {}),
    "gcn_sparse": ("gcn", {}),
    "gat_sparse": ("gat", {}),
    "graph_transformer": ("graph_transformer", {}),
    "temporal_transformer": ("temporal_transformer", {}),
}
SUMMARY = ("gcn_dense", "gcn_sparse", "graph_transformer", "temporal_transformer")


def synthetic_batch(batch_size: int, n_nodes: int, length: int, seed: int = 0) -> dict:
    """A dense batch like :class:`~brainfuse.methods.torch.data.BrainDataset`'s: ``fc``,
    ``node_mask``, ``timeseries``, ``time_mask``, ``y``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, n_nodes, length, generator=gen)
    blocks = torch.randint(0, 7, (n_nodes,), generator=gen)  # seven "networks"
    shared = torch.randn(batch_size, 7, length, generator=gen)
    x = x + shared[:, blocks]
    x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)
    mask = torch.ones(batch_size, n_nodes, dtype=torch.bool)
    fc = torch.stack([pearson(s, m) for s, m in zip(x, mask, strict=True)])
    return {
        "fc": fc, "node_mask": mask, "timeseries": x,
        "time_mask": torch.ones(batch_size, length, dtype=torch.bool),
        "y": torch.arange(batch_size) % 2,
    }  # fmt: skip


def throughput(model: torch.nn.Module, batch: dict, steps: int, warmup: int, repeats: int) -> float:
    """Training samples per second (best of ``repeats``)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch), batch["y"]).backward()
        opt.step()

    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - start)
    return steps * len(batch["y"]) / best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--length", type=int, default=200, help="time window L")
    parser.add_argument("--hidden", type=int, default=64, help="GCN hidden / transformer d_model")
    parser.add_argument("--top-k", type=int, default=10, help="edges kept per node")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--encoders", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch = synthetic_batch(args.batch_size, args.nodes, args.length)
    edges = int(sparsify(batch["fc"], batch["node_mask"], args.top_k).sum())
    print(
        f"batch {args.batch_size} x {args.nodes} nodes, L={args.length}, top-k={args.top_k} "
        f"({edges / args.batch_size / args.nodes:.1f} directed edges/node), "
        f"{args.threads} thread(s), best of {args.repeats} x {args.steps} steps"
    )
    print(f"{'encoder':<22}{'parameters':>12}{'ms/step':>10}{'samples/s':>12}")
    rates: dict[str, float] = {}
    for name in args.encoders:
        encoder_name, extra = VARIANTS[name]
        torch.manual_seed(0)
        encoder = build_encoder(
            encoder_name, args.nodes, hidden=args.hidden, d_model=args.hidden,
            top_k=args.top_k, **extra,
        )  # fmt: skip
        model = BrainClassifier(encoder)
        n_params = sum(p.numel() for p in model.parameters())
        rate = throughput(model, batch, args.steps, args.warmup, args.repeats)
        rates[name] = rate
        print(f"{name:<22}{n_params:>12,}{1000 * args.batch_size / rate:>10.1f}{rate:>12.1f}")
    if "gcn_dense" in rates and "gcn_sparse" in rates:
        faster = "dense" if rates["gcn_dense"] >= rates["gcn_sparse"] else "sparse"
        ratio = max(rates["gcn_dense"], rates["gcn_sparse"]) / min(
            rates["gcn_dense"], rates["gcn_sparse"]
        )
        print(f"at N={args.nodes} the {faster} GCN is {ratio:.2f}x faster")
    print(" ".join(f"{k}={rates[k]:.1f}" for k in SUMMARY if k in rates) + " (samples/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
