#!/usr/bin/env python3
"""PyTorch peer numbers for bench_core (same shapes, same GPU, same run): writes
bench/results/core_ops_peer.json as {"rows": {case: median ms}}. Run by tools/gpu/run.sh before bench_core."""
import argparse, json, os

import torch
import torch.nn.functional as F


def median_ms(fn, warmup=5, reps=30):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    dev, dt = "cuda", torch.bfloat16
    rnd = lambda *s: torch.rand(*s, device=dev, dtype=dt) * 2 - 1
    rows = {}
    for m, n, k, bias in [(4096, 4096, 4096, False), (8192, 8192, 8192, False), (640, 4096, 4096, True),
                          (640, 11008, 4096, False), (4096, 3072, 3072, True), (1, 11008, 4096, False), (2, 11008, 4096, False),
                          (8, 11008, 4096, False), (104, 12288, 4096, False), (104, 4096, 4096, False),
                          (104, 22016, 4096, False), (104, 4096, 11008, False), (577, 3072, 1024, True),
                          (577, 4096, 1024, True), (577, 1024, 4096, True)]:
        x, w = rnd(m, k), rnd(n, k)
        b = rnd(n) if bias else None
        rows[f"linear bf16 M{m} N{n} K{k}" + (" +bias" if bias else "")] = median_ms(lambda: F.linear(x, w, b))
    # the fused decode projections of bench_core (unfused in torch: what HF transformers runs)
    for form, m, n, k in [("rms_norm_linear", 1, 12288, 4096), ("linear_add_", 1, 4096, 4096),
                          ("rms_norm_linear", 1, 22016, 4096), ("swiglu_linear_add_", 1, 4096, 11008),
                          ("rms_norm_linear", 8, 12288, 4096), ("swiglu_linear_add_", 8, 4096, 11008),
                          ("linear_add_", 8, 4096, 4096), ("rms_norm_linear", 8, 22016, 4096),
                          ("rms_norm_linear", 104, 12288, 4096), ("linear_add_", 104, 4096, 4096),
                          ("rms_norm_linear", 104, 22016, 4096), ("swiglu_linear_add_", 104, 4096, 11008)]:
        w, nw, y = rnd(n, k), rnd(k), rnd(m, n)
        if form == "rms_norm_linear":
            x = rnd(m, k)
            fn = lambda: F.linear(F.rms_norm(x, (k,), nw, 1e-6), w)
        elif form == "linear_add_":
            x = rnd(m, k)
            fn = lambda: y.add_(F.linear(x, w))
        else:
            x = rnd(m, 2 * k)
            fn = lambda: y.add_(F.linear(F.silu(x[:, :k]) * x[:, k:], w))
        rows[f"{form} bf16 M{m} N{n} K{k}"] = median_ms(fn)
    for op, shape, groups in [("rms_norm", (16384, 4096), 0), ("rms_norm", (640, 4096), 0),
                              ("layer_norm", (16384, 4096), 0), ("layer_norm", (577, 1024), 0),
                              ("layer_norm", (4096, 3072), 0), ("group_norm", (1, 512, 128, 128), 32),
                              ("group_norm", (1, 128, 512, 512), 32)]:
        x = rnd(*shape)
        ch = shape[1] if op == "group_norm" else shape[-1]
        w, b = rnd(ch), rnd(ch)
        if op == "rms_norm":
            fn = lambda: F.rms_norm(x, (ch,), w, 1e-6)
        elif op == "layer_norm":
            fn = lambda: F.layer_norm(x, (ch,), w, b, 1e-5)
        else:
            fn = lambda: F.group_norm(x, groups, w, b, 1e-6)
        rows[f"{op} bf16 [{', '.join(map(str, shape))}]"] = median_ms(fn)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "core_ops_peer.json"), "w") as f:
        json.dump({"peer": f"torch {torch.__version__}", "rows": rows}, f, indent=1)
    for k, v in rows.items():
        print(f"torch {k:44s} {v:.4f} ms")


if __name__ == "__main__":
    main()
