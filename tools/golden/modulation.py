#!/usr/bin/env python3
"""Golden data for attention-head modulation (docs/modulation.md) on the tiny golden LLaVA.

A PyTorch reference (the f32 LLaVA of tools/golden/pruning.py, itself checked against transformers'
goldens) with PAI's attention intervention as LALBJ/PAI does it (attention/llama_attn.py's
llama_new_forward): in layers [start_layer, end_layer), for the LAST query row of every forward
(the last prompt row in prefill, the new token in decode), the pre-softmax logits of the image keys
become z + alpha * |z|. Writes tests/golden/tiny_llava_modulation.safetensors:
  <config>.logits_last  F32 [V]   logits of the last prompt row
  <config>.greedy       I32 [16]  greedy continuation (EOS masked), every step modulated
Runs with torch alone (Debian's python3-torch): /usr/bin/python3 tools/golden/modulation.py
"""
import argparse, json, os, sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pruning import KV, ROOT, Prompt, TinyLlava, read_safetensors, write_safetensors  # noqa: E402

N_NEW = 16
# (name, alpha, start_layer, end_layer): the tiny decoder has 2 layers
CONFIGS = [("pai_a02_l0", 0.2, 0, 2), ("pai_a05_l1", 0.5, 1, 2), ("pai_a3_l0", 3.0, 0, 2), ("pai_a0_l0", 0.0, 0, 2)]


class PaiLlava(TinyLlava):
    """TinyLlava whose layer() applies PAI to the last query row's image-key logits."""

    def __init__(self, model_dir, span, alpha, start, end):
        super().__init__(model_dir)
        self.span, self.alpha, self.start, self.end = span, alpha, start, end

    def layer(self, l, x, pos, cache):
        p = f"{self.lp}layers.{l}."
        q, k, v = self.qkv(l, x, pos)
        c0 = cache.k.shape[0]
        cache.k, cache.v, cache.pos = torch.cat([cache.k, k]), torch.cat([cache.v, v]), torch.cat([cache.pos, pos])
        s = self.attend(q, cache.k)  # [H, n, m]
        n, m = q.shape[0], cache.k.shape[0]
        s = s.masked_fill(torch.arange(m)[None, :] > (c0 + torch.arange(n))[:, None], float("-inf"))
        if self.start <= l < self.end:
            img = (cache.pos >= self.span[0]) & (cache.pos < self.span[1])  # image keys by original position
            last = s[:, -1, :]
            last[:, img] = last[:, img] + self.alpha * last[:, img].abs()
        a = torch.softmax(s, dim=-1)
        vr = cache.v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        o = (a @ vr.transpose(0, 1)).transpose(0, 1).reshape(n, self.heads * self.hd)
        x = x + self.lin(o, p + "self_attn.o_proj")
        h = self.rms(x, self.w[p + "post_attention_layernorm.weight"])
        h = torch.nn.functional.silu(self.lin(h, p + "mlp.gate_proj")) * self.lin(h, p + "mlp.up_proj")
        return x + self.lin(h, p + "mlp.down_proj"), a, k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_grad_enabled(False)
    gdir = args.out
    golden, _ = read_safetensors(os.path.join(gdir, "tiny_llava_golden.safetensors"))
    crops, _ = read_safetensors(os.path.join(gdir, "tiny_llava_preprocess.safetensors"))
    out, meta = {}, {}
    for name, alpha, start, end in CONFIGS:
        base = TinyLlava(os.path.join(gdir, "tiny_llava"))
        P = Prompt(base, golden["input_ids"][0], golden["pixel_values"], crops["clip_u8_extreme_ironing"])
        m = PaiLlava(os.path.join(gdir, "tiny_llava"), (P.S, P.S + P.N), alpha, start, end)
        logits, caches, _ = m.prefill(P.embeds(m, P.image))
        greedy = m.generate(logits[0], caches, N_NEW)
        if alpha == 0:  # no intervention: the transformers golden
            d = (logits[0] - golden["logits_last"][0, -1]).abs().max().item()
            assert d < 1e-3 and greedy == golden["greedy_ids"][0, :N_NEW].tolist(), "alpha 0 must equal no PAI"
        out[name + ".logits_last"] = logits[0].to(torch.float32)
        out[name + ".greedy"] = torch.tensor(greedy, dtype=torch.int32)
        meta[name] = {"method": "pai", "alpha": alpha, "start_layer": start, "end_layer": end}
        top = torch.topk(logits[0], 3)
        print("%-12s top-3 %s  greedy %s" % (name, [(int(i), round(float(v), 4)) for v, i in zip(top.values, top.indices)],
                                           greedy))
    path = os.path.join(gdir, "tiny_llava_modulation.safetensors")
    write_safetensors(path, out, {"meta": json.dumps({"configs": meta, "greedy": "%d tokens, EOS masked" % N_NEW,
                                                      "spec": "docs/modulation.md; tools/golden/modulation.py"},
                                                     sort_keys=True)})
    print("wrote %s (%d tensors)" % (path, len(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
