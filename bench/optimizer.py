"""AdamW step on the query tower (all-MiniLM-L6-v2, 22.6M trainable parameters): fused kernel vs the loops.

    python bench/optimizer.py [--threads 2] [--steps 20]

The training loop (crops_ray/train/loop.py) and the discriminator's fine-tuning use ``fused=True``. Prints the mean
optimizer-step time of each implementation and its ratio to PyTorch's default (the per-tensor loop), all in this
process on the same gradients; also the largest difference of the updated weights against the default.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> list[dict]:
    import torch

    from crops_ray.encoder import Encoder
    from crops_ray.plumbing import model_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = Encoder.from_pretrained(model_path("minilm"), shared=False, max_length=64)
    base.freeze_docs()
    inputs = base.tokenize(["jaguar cubs wild slow motion", "slap bass technique for beginners"] * 16)
    rows, reference = [], None
    for name, kwargs in (("default (per-tensor loop)", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        enc = copy.deepcopy(base)
        params = [q for q in enc.parameters() if q.requires_grad]
        opt = torch.optim.AdamW(params, lr=5e-5, **kwargs)
        times = []
        for step in range(args.steps + 2):
            q, _ = enc(inputs, None)
            (q @ q.T).sum().backward()
            start = time.perf_counter()
            opt.step()
            if step >= 2:  # the first steps allocate the optimizer state
                times.append(time.perf_counter() - start)
            opt.zero_grad(set_to_none=True)
        weights = torch.cat([q.detach().flatten() for q in params])
        reference = weights if reference is None else reference
        rows.append(
            {
                "optimizer": name,
                "ms": 1000 * sum(times) / len(times),
                "max_weight_diff": float((weights - reference).abs().max()),
            }
        )
    for r in rows:
        r["ratio"] = r["ms"] / rows[0]["ms"]
    print(
        f"AdamW step, {sum(q.numel() for q in base.parameters() if q.requires_grad):,} parameters, {args.threads} "
        f"thread(s), mean of {args.steps} steps"
    )
    print("| optimizer | ms per step | vs default | max weight difference vs default |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['optimizer']} | {r['ms']:.1f} | {r['ratio']:.2f} | {r['max_weight_diff']:.1e} |")
    return rows


if __name__ == "__main__":
    main()
