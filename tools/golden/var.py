#!/usr/bin/env python3
"""Golden data for VAR (visual attention redistribution; seilk/VisAttnSink) on the tiny golden LLaVA.

A PyTorch reference following the official code (docs/modulation.md#var):
  * sink tokens (DimProspector, prefill only): at the input of decoder layer l (the residual
    stream before input_layernorm), r = |h / sqrt(mean(h^2) + 1e-6)| in f32 without the norm's
    weight; token t is a sink of layer l when max over the sink dims of r[t, dim] > tau. The sets
    are frozen after the prefill (decode tokens never join).
  * image-centric heads (HeadFork, every forward): for layer l with at least one visual sink, each
    (head, query row) with portion = sum P[visual sinks] / sum (P[image] + 1e-6) <= rho and
    summation = sum P[image] >= summ is selected; only rows of the text after the image (prefill)
    and the decode rows.
  * redistribution: on a selected row all sinks (visual and text) keep p of their weight; the
    freed budget (1 - p) * sum P[sinks] goes to the non-sink image tokens in proportion to their
    weight (row sum unchanged).
The tiny model is random, so the sink dims, tau and rho are chosen here (recorded in the
metadata): tau is set between the largest r of the tokens so that some image tokens are sinks in
layer 0; rho (its attention is near uniform: portions ~0.008-0.02) so that heads on both sides of
the rule occur on the last row.
Writes tests/golden/tiny_llava_var.safetensors:
  var.logits_last F32 [V], var.greedy I32 [16], var.params F32 [tau, p, rho, summ] (sink dims 3, 17),
  var.sinks_l<l> I32 [k] (sink positions of layer l),
  var.selected_l<l> I32 [H] (heads selected on the last prompt row)
Runs with torch alone: /usr/bin/python3 tools/golden/var.py
"""
import os, sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pruning import Prompt, TinyLlava, golden_inputs, write_golden  # noqa: E402

N_NEW = 16


class VarLlava(TinyLlava):
    def __init__(self, model_dir, span, dims, tau, p, rho, summ, layers):
        super().__init__(model_dir)
        self.span, self.dims, self.tau, self.p, self.rho, self.summ = span, dims, tau, p, rho, summ
        self.var_layers = layers
        self.sinks = {}  # layer -> set of positions
        self.selected = {}  # layer -> heads selected on the last row of the prefill
        self.rmax = {}

    def layer(self, l, x, pos, cache):
        if x.shape[0] > 1:  # prefill: DimProspector on the layer's input
            r = (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)).abs()[:, self.dims].max(-1).values
            self.rmax[l] = r
            self.sinks[l] = set(int(t) for t in pos[r > self.tau])
        return super().layer(l, x, pos, cache)

    def attention_probs(self, l, a, cache, pos):
        n = pos.shape[0]
        sinks = self.sinks.get(l, set())
        img = (cache.pos >= self.span[0]) & (cache.pos < self.span[1])
        sink = torch.tensor([int(t) in sinks for t in cache.pos], dtype=torch.bool)
        vis = sink & img
        if l in self.var_layers and bool(vis.any()):
            sel_last = []
            for i in range(n):
                if int(pos[i]) < self.span[1]:
                    continue  # only the text after the image, and decode rows
                for h in range(self.heads):
                    row = a[h, i]
                    portion = row[vis].sum() / (row[img] + 1e-6).sum()
                    summation = row[img].sum()
                    if i == n - 1 and n > 1 and os.environ.get("VAR_DEBUG"):
                        print("l%d h%d portion %.4f summation %.4f" % (l, h, float(portion), float(summation)))
                    if portion <= self.rho and summation >= self.summ:
                        if i == n - 1 and n > 1:
                            sel_last.append(h)
                        orig = row.clone()
                        row[sink] = orig[sink] * self.p
                        budget = (1 - self.p) * orig[sink].sum()
                        w = orig.clone()
                        w[~img] = 0
                        w[vis] = 0
                        row += budget * w / w.sum()
            if n > 1:
                self.selected[l] = sel_last
        return a


def main():
    gdir, golden, crops = golden_inputs()
    mdir = os.path.join(gdir, "tiny_llava")
    base = TinyLlava(mdir)
    P = Prompt(base, golden["input_ids"][0], golden["pixel_values"], crops["clip_u8_extreme_ironing"])
    span = (P.S, P.S + P.N)
    dims = [3, 17]
    # a probe run (tau = inf: no sinks, so no redistribution) gives each layer's r values; tau is
    # put between the 5th and 6th largest r over the image tokens of layer 0, so that layer 0 has
    # five visual sinks; the other layer gets whatever the same tau gives.
    probe = VarLlava(mdir, span, dims, float("inf"), 0.6, 0.5, 0.2, [])
    probe.prefill(P.embeds(probe, P.image))
    r0 = probe.rmax[0][P.S:P.S + P.N].sort(descending=True).values
    tau = float((r0[4] + r0[5]) / 2)
    prm = {"sink_dims": dims, "tau": tau, "p": 0.6, "rho": 0.0094, "summ": 0.2, "start_layer": 0, "end_layer": 2}
    m = VarLlava(mdir, span, dims, tau, prm["p"], prm["rho"], prm["summ"], [0, 1])
    logits, caches, _ = m.prefill(P.embeds(m, P.image))
    greedy = m.generate(logits[0], caches, N_NEW)
    out = {"var.logits_last": logits[0].float(), "var.greedy": torch.tensor(greedy, dtype=torch.int32),
           "var.params": torch.tensor([tau, prm["p"], prm["rho"], prm["summ"]], dtype=torch.float32)}
    for l in range(base.layers):
        out["var.sinks_l%d" % l] = torch.tensor(sorted(m.sinks.get(l, set())), dtype=torch.int32)
        out["var.selected_l%d" % l] = torch.tensor(m.selected.get(l, []), dtype=torch.int32)
        print("layer %d: sinks %s; heads selected on the last row %s" % (l, sorted(m.sinks.get(l, set())),
                                                                         m.selected.get(l, [])))
    d = (logits[0] - golden["logits_last"][0, -1]).abs().max().item()
    print("max |logit change| vs no VAR: %.5f; greedy %s (plain %s)" % (d, greedy, golden["greedy_ids"][0, :N_NEW].tolist()))
    write_golden(os.path.join(gdir, "tiny_llava_var.safetensors"), out,
                 {"var": prm, "greedy": "%d tokens, EOS masked" % N_NEW,
                  "spec": "docs/modulation.md#var; tools/golden/var.py"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
