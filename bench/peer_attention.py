#!/usr/bin/env python3
"""PyTorch SDPA peer numbers for bench_attention (same shapes, same GPU, same run): writes
bench/results/attention_dense_peer.json as {"rows": {case: median ms}}."""
import argparse, json, os

import torch
import torch.nn.functional as F


def median_ms(fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize()
        t.append(a.elapsed_time(b))
    t.sort()
    return t[len(t) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    rows = {}
    dt = torch.bfloat16
    # SDPA takes [B, H, L, D]; ours [B, L, H, D]: the same tensors transposed (no copy).
    for name, h, lq, lk, causal in [("noncausal h24 d128 n4096", 24, 4096, 4096, False),
                                    ("noncausal h24 d128 n16384", 24, 16384, 16384, False),
                                    ("noncausal h24 d128 n65536", 24, 65536, 65536, False),
                                    ("causal h32 d128 n4096", 32, 4096, 4096, True),
                                    ("decode h32 d128 k4096", 32, 1, 4096, False),
                                    ("decode h32 d128 k32768", 32, 1, 32768, False)]:
        q = torch.randn(1, lq, h, 128, device="cuda", dtype=dt).transpose(1, 2)
        k = torch.randn(1, lk, h, 128, device="cuda", dtype=dt).transpose(1, 2)
        v = torch.randn(1, lk, h, 128, device="cuda", dtype=dt).transpose(1, 2)
        reps = 5 if lq >= 65536 else 20
        rows[name] = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), reps=reps)
        print(f"sdpa {name:36s} {rows[name]:.4f} ms")
        del q, k, v
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "attention_dense_peer.json"), "w") as f:
        json.dump({"peer": f"torch {torch.__version__} sdpa", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
