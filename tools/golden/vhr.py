#!/usr/bin/env python3
"""Golden data for VHR (vision-aware head reinforcement, He et al., ACL 2025) on the tiny golden LLaVA.

A PyTorch reference of the method as the paper states it (ACL 2025 version, "Cracking the Code of
Hallucination in LVLMs with Vision-aware Head Divergence", arXiv 2412.13949, Sec. 3 and Algorithm 1;
the official code, jinghan1he/VHR, could not be fetched here):
  * at the first decoding step, for each decoder layer l in order, the per-head attention output
    before o_proj of the prompt's last row is taken with the image (the request's prompt) and
    without it (the same prompt with its image tokens removed);
    VHD[l, h] = || o_img[h] - o_txt[h] ||_2;
  * outlier filter (Eq. 6): a head whose VHD and whose text-only output energy
    TA[l, h] = || o_txt[h] ||_2^2 both lie above their layer's mean + standard deviation (over the
    layer's heads; torch.std, unbiased) gets VHD 0 for the selection ("negatively vision-sensitive"
    heads: their output surges when the image is removed);
  * in the VHR layers, the heads with (filtered) VHD above the layer's median (Eq. 7; torch.median:
    the lower middle for an even count) have their outputs multiplied by gain (2) — in both
    branches, before the next layer is measured (layer-by-layer: earlier layers are already
    reinforced);
  * the selection is kept for the whole generation (every row of the prompt and every decoded
    token), one extra text-only pass in total.
Writes tests/golden/tiny_llava_vhr.safetensors:
  vhr.logits_last F32 [V], vhr.greedy I32 [16], vhr.gain F32 [1],
  vhr.heads_l<l> I32 [k] (heads reinforced in layer l), vhr.vhd_l<l> F32 [H] (before the filter),
  vhr.ta_l<l> F32 [H], vhr.filtered_l<l> I32 [f] (heads the filter zeroed)
Runs with torch alone: /usr/bin/python3 tools/golden/vhr.py
"""
import os, sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pruning import KV, Prompt, TinyLlava, golden_inputs, write_golden  # noqa: E402

N_NEW = 16


class VhrLlava(TinyLlava):
    def __init__(self, model_dir):
        super().__init__(model_dir)
        self.gains = {}  # layer -> [H] gains
        self.captured = None

    def head_outputs(self, l, o):
        if self.captured is not None:
            self.captured.append(o[-1].clone())  # the last row's heads [H, d]
        g = self.gains.get(l)
        return o if g is None else o * g[None, :, None]

    def select(self, e_img, e_txt, layers, gain):
        """Lockstep prefill of both branches; fills self.gains; returns {layer: (heads, vhd)}."""
        x = [e_img, e_txt]
        pos = [torch.arange(e_img.shape[0]), torch.arange(e_txt.shape[0])]
        caches = [[KV(self.kv_heads, self.hd) for _ in range(self.layers)] for _ in range(2)]
        out = {}
        for l in range(self.layers):
            if l in layers:
                # the prefill's layer-l cache is empty before the layer: a throwaway run gives o
                self.captured = []
                for b in range(2):
                    self.layer(l, x[b], pos[b], KV(self.kv_heads, self.hd))
                o_img, o_txt = self.captured
                self.captured = None
                vhd = (o_img - o_txt).pow(2).sum(-1).sqrt()
                ta = o_txt.pow(2).sum(-1)
                outlier = (vhd > vhd.mean() + vhd.std()) & (ta > ta.mean() + ta.std())
                kept = torch.where(outlier, torch.zeros_like(vhd), vhd)
                heads = (kept > kept.median()).nonzero().flatten()
                g = torch.ones(self.heads)
                g[heads] = gain
                self.gains[l] = g
                out[l] = (heads, vhd, ta, outlier.nonzero().flatten())
            for b in range(2):
                x[b], _, _ = self.layer(l, x[b], pos[b], caches[b][l])
        return out


def main():
    gdir, golden, crops = golden_inputs()
    m = VhrLlava(os.path.join(gdir, "tiny_llava"))
    ids = golden["input_ids"][0]
    P = Prompt(m, ids, golden["pixel_values"], crops["clip_u8_extreme_ironing"])
    e_img = P.embeds(m, P.image)
    e_txt = m.embed(ids[ids != m.image_token])
    gain, layers = 2.0, list(range(m.layers))  # every layer of the tiny model
    sel = m.select(e_img, e_txt, layers, gain)
    logits, caches, _ = m.prefill(e_img)  # the request with the selection fixed
    greedy = m.generate(logits[0], caches, N_NEW)
    out = {"vhr.logits_last": logits[0].float(), "vhr.greedy": torch.tensor(greedy, dtype=torch.int32),
           "vhr.gain": torch.tensor([gain], dtype=torch.float32)}
    for l, (heads, vhd, ta, filtered) in sel.items():
        out["vhr.heads_l%d" % l] = heads.to(torch.int32)
        out["vhr.vhd_l%d" % l] = vhd.float()
        out["vhr.ta_l%d" % l] = ta.float()
        out["vhr.filtered_l%d" % l] = filtered.to(torch.int32)
        srt = vhd.sort().values
        print("layer %d: VHD %s TA %s; filtered %s; heads %s (median %.6f, nearest gap %.2e)" % (
            l, [round(float(v), 5) for v in vhd], [round(float(v), 5) for v in ta], filtered.tolist(),
            heads.tolist(), float(vhd.median()),
            float((srt[1:] - srt[:-1]).abs().min())))
    d = (logits[0] - golden["logits_last"][0, -1]).abs().max().item()
    print("max |logit change| vs no VHR: %.5f; greedy %s (plain %s)" % (d, greedy, golden["greedy_ids"][0, :N_NEW].tolist()))
    write_golden(os.path.join(gdir, "tiny_llava_vhr.safetensors"), out,
                 {"vhr": {"gain": gain, "layers": layers}, "greedy": "%d tokens, EOS masked" % N_NEW,
                  "spec": "docs/modulation.md#vhr; tools/golden/vhr.py"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
