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
    """TinyLlava whose attention hooks apply PAI to the last query row's image-key logits (gains: None
    = alpha on every image key, or a per-image-token alpha [N]: PAINT) and AD-HH's zeroing."""

    def __init__(self, model_dir, span, alpha, start, end, gains=None):
        super().__init__(model_dir)
        self.span, self.alpha, self.start, self.end, self.gains = span, alpha, start, end, gains

    def attention_logits(self, l, s, cache):
        if self.start <= l < self.end:
            img = (cache.pos >= self.span[0]) & (cache.pos < self.span[1])  # image keys by original position
            last = s[:, -1, :]
            a = self.alpha if self.gains is None else self.gains[cache.pos[img] - self.span[0]]
            last[:, img] = last[:, img] + a * last[:, img].abs()
        return s

    def attention_probs(self, l, a, cache, pos):
        for (hl, hh) in getattr(self, "adhh", []):  # AD-HH: post-softmax, last row, no renormalisation
            if hl == l:
                txt = cache.pos >= self.span[1]  # the text after the image (and generated tokens)
                print("adhh mass l%d h%d %.5f" % (l, hh, float(a[hh, -1, txt].sum()))) if os.environ.get("ADHH_DEBUG") else None
                if float(a[hh, -1, txt].sum()) >= self.adhh_threshold:
                    a[hh, -1, txt] = 0
        return a


class HeadMapLlava(PaiLlava):
    """PaiLlava that records, in the prefill, each layer's per-head attention mass of the last prompt
    row on the image keys (the final softmax rows, PAI's boost included): mass [layers, heads]."""

    def layer(self, l, x, pos, cache):
        out = super().layer(l, x, pos, cache)
        if x.shape[0] > 1:
            if not hasattr(self, "mass"):
                self.mass = torch.zeros(self.layers, self.heads)
            img = (cache.pos >= self.span[0]) & (cache.pos < self.span[1])
            self.mass[l] = out[1][:, -1, img].sum(-1)
        return out


def log_softmax(x):
    return torch.log_softmax(x, dim=-1)


def contrastive(method, l_img, l_neg, prm):
    """The combined next-token scores (docs/modulation.md). l_img / l_neg: [V] logits of the image
    branch and the negative branch. VCD: (1 + a) l_img - a l_neg on raw logits; RITUAL: l_img +
    alpha_pos l_neg (l_neg: the transformed image's logits); PAI: gamma (s - u) + u on log-softmax scores. Plausibility: tokens whose image-branch probability is below beta times
    the largest are -inf (cut-off log beta + max on the image branch's logits / log-probs)."""
    if method == "vcd":
        cd = (1 + prm["cd_alpha"]) * l_img - prm["cd_alpha"] * l_neg
        ref = l_img
    elif method == "ritual":
        cd = l_img + prm["alpha_pos"] * l_neg
        ref = l_img
    else:
        s_, u = log_softmax(l_img), log_softmax(l_neg)
        cd = prm["cfg"] * (s_ - u) + u
        ref = s_
    cutoff = torch.log(torch.tensor(prm["beta"])) + ref.max()
    return cd.masked_fill(ref < cutoff, float("-inf"))


def decode_pair(m_img, m_neg, e_img, e_neg, method, prm, n_new):
    """Both branches prefilled, then decoded with the same token each step (greedy on the combined
    scores, EOS masked). Returns (first combined scores [V], tokens)."""
    li, ci, _ = m_img.prefill(e_img)
    ln, cn, _ = m_neg.prefill(e_neg)
    li, ln = li[0], ln[0]
    first, toks = None, []
    for t in range(n_new):
        cd = contrastive(method, li, ln, prm)
        if first is None:
            first = cd.clone()
        cd[m_img.eos] = float("-inf")
        tok = int(torch.argmax(cd))
        toks.append(tok)
        if t == n_new - 1:
            break
        outs = []
        for m, caches in ((m_img, ci), (m_neg, cn)):
            x = m.embed(torch.tensor([tok]))
            for l in range(m.layers):
                x, _, _ = m.layer(l, x, caches[l].pos.max().view(1) + 1, caches[l])
            outs.append(m.logits(x)[0])
        li, ln = outs
    return first, toks


def vcd_noise(pixels, t, seed=0):
    """VCD's add_diffusion_noise (vcd_utils/vcd_add_noise.py): sigmoid beta schedule over 1000 steps."""
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000, dtype=torch.float64)) * (0.5e-2 - 1e-5) + 1e-5
    abar = torch.cumprod(1 - betas, 0)[t]
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(pixels.shape, generator=g, dtype=torch.float32)
    return (abar.sqrt() * pixels.double() + (1 - abar).sqrt() * noise.double()).float()


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
    # contrastive decoding: PAI with classifier-free guidance against the text-only prompt, and VCD
    base = TinyLlava(os.path.join(gdir, "tiny_llava"))
    P = Prompt(base, golden["input_ids"][0], golden["pixel_values"], crops["clip_u8_extreme_ironing"])
    ids_txt = torch.cat([P.ids[:P.S], P.ids[P.S + P.N:]])  # the same prompt without the image tokens
    e_txt = base.embed(ids_txt)
    prm = {"cfg": 1.1, "beta": 0.1}
    m_pai = PaiLlava(os.path.join(gdir, "tiny_llava"), (P.S, P.S + P.N), 0.2, 0, 2)
    first, toks = decode_pair(m_pai, base, P.embeds(m_pai, P.image), e_txt, "pai", prm, N_NEW)
    out["pai_cfg.scores"], out["pai_cfg.greedy"] = first.float(), torch.tensor(toks, dtype=torch.int32)
    meta["pai_cfg"] = {"method": "pai", "alpha": 0.2, "start_layer": 0, "end_layer": 2, **prm}
    print("pai_cfg      kept %d of %d tokens; greedy %s" % (int(torch.isfinite(first).sum()), first.numel(), toks))
    prm = {"cd_alpha": 1.0, "beta": 0.1, "noise_step": 500}
    noised = vcd_noise(golden["pixel_values"], 500)
    hs, _, _ = base.vit(noised)
    img_cd = base.project(hs[base.feature_hs][1:])
    first, toks = decode_pair(base, base, P.embeds(base, P.image), P.embeds(base, img_cd), "vcd", prm, N_NEW)
    out["vcd.scores"], out["vcd.greedy"] = first.float(), torch.tensor(toks, dtype=torch.int32)
    out["vcd.pixels"] = noised
    meta["vcd"] = {"method": "vcd", **prm, "noise": "torch.Generator().manual_seed(0) randn; saved as vcd.pixels"}
    print("vcd          kept %d of %d tokens; greedy %s" % (int(torch.isfinite(first).sum()), first.numel(), toks))

    # DAMRO (coder-gx/DAMRO modeling_llava.py): the [CLS] row of ONE attention over all of the
    # feature-producing ViT layer's q/k dims (k_proj / q_proj outputs with bias, scale Dv^-0.5);
    # the top-k patches in descending attention order form the negative branch's image tokens.
    prm = {"cd_alpha": 2.0, "beta": 0.1, "topk": 10}
    li = base.feature_layer
    x_in = P.hs[li]  # input of the producing layer
    h = base.ln(x_in, f"vision_tower.encoder.layers.{li}.layer_norm1")
    q = base.lin(h, f"vision_tower.encoder.layers.{li}.self_attn.q_proj")
    k = base.lin(h, f"vision_tower.encoder.layers.{li}.self_attn.k_proj")
    cls = torch.softmax((q[0] @ k.t()) * q.shape[1] ** -0.5, dim=-1)[1:]
    top = torch.topk(cls, prm["topk"]).indices  # descending attention
    img_cd = base.project(P.feats[top])
    ids_cd = torch.cat([P.ids[:P.S], torch.full((prm["topk"],), base.image_token), P.ids[P.S + P.N:]])
    e_cd = torch.cat([base.embed(P.ids[:P.S]), img_cd, base.embed(P.ids[P.S + P.N:])])
    first, toks = decode_pair(base, base, P.embeds(base, P.image), e_cd, "vcd", prm, N_NEW)
    out["damro.scores"], out["damro.greedy"] = first.float(), torch.tensor(toks, dtype=torch.int32)
    out["damro.outliers"] = top.to(torch.int32)
    meta["damro"] = {"method": "damro", **prm}
    print("damro        outliers %s; greedy %s" % (top.tolist(), toks))
    del ids_cd

    # PAINT (hasanar1f/PAINT modPAI): PAI boosts with alpha_local on the "local" tokens (top 25% by
    # the [CLS] attention of ViT layer 0, summed over heads) and alpha_summary on the "summary"
    # tokens (the top-n of the feature-producing layer's, n = #outliers above Q3 + 1.5 IQR), local
    # minus summary; other image tokens get no boost.
    prm = {"alpha_local": 0.7, "alpha_summary": 0.3, "local_ratio": 0.25, "start_layer": 0, "end_layer": 2}
    top_attn = P.vprobs[0][:, 0, 1:].sum(0)
    bottom = P.vprobs[base.feature_layer][:, 0, 1:].sum(0)
    q1, q3 = torch.quantile(bottom.double(), 0.25), torch.quantile(bottom.double(), 0.75)
    n_sum = int(P.N * float((bottom.double() > q3 + 1.5 * (q3 - q1)).double().mean()))
    summary = torch.topk(bottom, n_sum).indices if n_sum > 0 else torch.zeros(0, dtype=torch.long)
    local = torch.topk(top_attn, int(P.N * prm["local_ratio"])).indices
    local = local[~torch.isin(local, summary)]
    gains = torch.zeros(P.N, dtype=torch.float32)
    gains[local] = prm["alpha_local"]
    gains[summary] = prm["alpha_summary"]
    m_paint = PaiLlava(os.path.join(gdir, "tiny_llava"), (P.S, P.S + P.N), 0.0, 0, 2, gains)
    logits, caches, _ = m_paint.prefill(P.embeds(m_paint, P.image))
    greedy = m_paint.generate(logits[0], caches, N_NEW)
    out["paint.logits_last"], out["paint.greedy"] = logits[0].float(), torch.tensor(greedy, dtype=torch.int32)
    out["paint.local"], out["paint.summary"] = local.sort().values.to(torch.int32), summary.sort().values.to(torch.int32)
    meta["paint"] = {"method": "paint", **prm}
    print("paint        local %d summary %d; greedy %s" % (local.numel(), summary.numel(), greedy))

    # AD-HH (TianyunYoung/Hallucination-Attribution modeling_llama.py): chosen (layer, head) pairs
    m_ad = PaiLlava(os.path.join(gdir, "tiny_llava"), (P.S, P.S + P.N), 0.0, 0, 0)
    m_ad.adhh, m_ad.adhh_threshold = [(0, 1), (1, 0), (1, 3)], 0.022
    logits, caches, _ = m_ad.prefill(P.embeds(m_ad, P.image))
    greedy = m_ad.generate(logits[0], caches, N_NEW)
    out["adhh.logits_last"], out["adhh.greedy"] = logits[0].float(), torch.tensor(greedy, dtype=torch.int32)
    meta["adhh"] = {"method": "adhh", "heads": m_ad.adhh, "threshold": 0.022}
    print("adhh         greedy %s" % greedy)

    # RITUAL (sangminwoo/RITUAL ritual_utils/ritual_sample.py): the second branch is the same prompt
    # with the raw image transformed before preprocessing; l + alpha_pos l_pos, cut-off on l. With
    # the transform fixed to hflip: a horizontal flip commutes with this image's resize and centre
    # crop (570 x 380 -> 504 x 336 -> columns 84..419, symmetric), so the branch's pixels are the
    # flipped pixel_values (tests/pipelines/test_modulation.cpp checks that on the engine's side).
    prm = {"alpha_pos": 3.0, "beta": 0.1, "transform": "hflip"}
    hs, _, _ = base.vit(golden["pixel_values"].flip(-1))
    e_pos = P.embeds(base, base.project(hs[base.feature_hs][1:]))
    l_pos, _, _ = base.prefill(e_pos)
    first, toks = decode_pair(base, base, P.embeds(base, P.image), e_pos, "ritual", prm, N_NEW)
    out["ritual_hflip.logits_pos"], out["ritual_hflip.scores"] = l_pos[0].float(), first.float()
    out["ritual_hflip.greedy"] = torch.tensor(toks, dtype=torch.int32)
    meta["ritual_hflip"] = {"method": "ritual", **prm}
    print("ritual_hflip kept %d of %d tokens; greedy %s" % (int(torch.isfinite(first).sum()), first.numel(), toks))

    # --save-head-map: per layer and head, the last prompt row's attention mass on the image tokens,
    # without modulation and with PAI (alpha 3 in layers 0-1, which moves mass onto the image)
    for name, alpha in (("head_map", 0.0), ("head_map_pai_a3", 3.0)):
        m_hm = HeadMapLlava(os.path.join(gdir, "tiny_llava"), (P.S, P.S + P.N), alpha, 0, 2)
        m_hm.prefill(P.embeds(m_hm, P.image))
        out[name + ".image_mass"] = m_hm.mass.float()
        meta[name] = {"what": "last prompt row's attention mass on the image keys [layers, heads]", "pai_alpha": alpha}
        print("%-15s %s" % (name, [[round(float(v), 5) for v in r] for r in m_hm.mass]))

    path = os.path.join(gdir, "tiny_llava_modulation.safetensors")
    write_safetensors(path, out, {"meta": json.dumps({"configs": meta, "greedy": "%d tokens, EOS masked" % N_NEW,
                                                      "spec": "docs/modulation.md; tools/golden/modulation.py"},
                                                     sort_keys=True)})
    print("wrote %s (%d tensors)" % (path, len(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
