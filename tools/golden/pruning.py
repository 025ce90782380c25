#!/usr/bin/env python3
"""Golden data for visual-token pruning on the tiny LLaVA-1.5 (the definitions: docs/pruning.md).

Self-contained: torch + numpy only (no transformers, safetensors or PIL), so it runs unchanged on
the dev machine's CPU torch 1.13 and on the GPU machine's torch 2.x (always on the CPU, f32, a few
seconds). It re-implements LLaVA-1.5's forward in float32 from the bf16 checkpoint written by
tools/golden/llava.py, first checks it against the transformers goldens of that script (no
pruning: logits of the last 8 prompt positions, 32-step greedy continuation), then runs each
config of CONFIGS and writes tiny_llava_pruning.safetensors next to the other goldens:

  <C>.kept              I32 [n]  kept image tokens, as indices 0..N-1 of the original image span
                                 (in-LLM methods: after the last stage; visionzip: the dominant
                                 patches, [CLS] excluded)
  <C>.image_tokens      I32 [1]  image tokens entering the LLM
  <C>.stage_kept        I32 [s]  image tokens after each stage (in-LLM methods and vflowopt, whose
                                 first entry is its ViT stage)
  <C>.scores            F32      the vector the method ranks by (see SCORES in the metadata)
  <C>.logits_last       F32 [V]  logits of the last prompt position, after pruning
  <C>.greedy            I32 [16] greedy continuation decoded with the pruned KV caches (EOS masked
                                 for all 16 steps, as min_new_tokens = max_new_tokens)
  plus per-method extras (visionzip: dominant_with_cls, targets, target_tokens, assign; dart:
  pivots, text_scores; divprune: order; vflowopt: vit_kept, entropy, sinks).
The header's __metadata__ holds "meta": JSON with the prompt layout, the configs and field notes.

Conventions (docs/pruning.md, "Common rules"): topk = stable sort on (-score, index), i.e. ties go
to the lower index, kept indices ascending; "drop the n lowest" = stable ascending sort (ties: the
lower index is dropped first); round = Python round (half to even).

Usage: python3 tools/golden/pruning.py [--out tests/golden]
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

N_NEW = 16  # greedy tokens per pruning config

# name, method, parameters (the tiny LLM has 2 layers, so in-LLM methods prune before layer 1)
CONFIGS = [
    ("fastv_k1_keep64", "fastv", {"layer": 1, "keep": 64}),
    ("fastv_k1_keep576", "fastv", {"layer": 1, "keep": 576}),  # keeps everything: equals no pruning
    ("pdrop_l1_keep64", "pdrop", {"layers": [1], "keep": 64}),
    ("fastervlm_keep64", "fastervlm", {"keep": 64}),
    ("visionzip_keep64", "visionzip", {"keep": 64}),  # -> dominant 54, contextual 10
    ("visionzip_keep32", "visionzip", {"keep": 32}),  # -> dominant 27, contextual 5
    ("dart_k1_keep64", "dart", {"layer": 1, "pivot_image": 4, "pivot_text": 4, "keep": 64}),
    ("divprune_keep64", "divprune", {"keep": 64}),
    ("vflowopt_keep64", "vflowopt", {"keep": 64, "sink_threshold": 35.0, "cell": 12, "entropy_weight": 1.0,
                                     "llm_layers": [1], "llm_ratios": [0.5]}),
    # extra: with t = 35 no patch of the tiny random ViT is a sink (max recv / mean = 1.60), so the
    # config above takes the empty-set fallback (argmax recv); t = 1.47 gives 5 sinks.
    ("vflowopt_keep64_multisink", "vflowopt", {"keep": 64, "sink_threshold": 1.47, "cell": 12, "entropy_weight": 1.0,
                                               "llm_layers": [1], "llm_ratios": [0.5]}),
]

SCORES = {
    "fastv": "[N] head-mean attention of the last prompt row over the image columns, layer K-1",
    "pdrop": "[N] head-mean softmax of the last prompt row's query (layer l's norm/q/k/RoPE) over the image columns",
    "fastervlm": "[N] head-mean [CLS]-row attention over the patches, feature-producing ViT layer",
    "visionzip": "[N] head-SUM [CLS]-row attention over the patches, feature-producing ViT layer",
    "dart": "[N] L1 norm of layer K-1's post-RoPE keys (kv heads concatenated) of the image rows",
    "divprune": "[keep] the max-min distance of each pick, in pick order (see .order)",
    "vflowopt": "[N] imp = sink-row attention + entropy_weight * softmax(entropy)",
}


# ----------------------------------------------------------------------------------------------
# minimal safetensors reader / writer (8-byte little-endian header length, JSON header, raw data)

_NP = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "U8": np.uint8,
       "BF16": np.uint16}
_ST = {torch.float32: "F32", torch.int32: "I32", torch.int64: "I64", torch.uint8: "U8"}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dt = np.dtype(_NP[info["dtype"]])
        a = np.frombuffer(raw, dtype=dt, count=(end - begin) // dt.itemsize, offset=8 + n + begin)
        if info["dtype"] == "BF16":  # bf16 = the high half of an f32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = torch.from_numpy(a.copy()).reshape(info["shape"])
    return out, meta


def write_safetensors(path, tensors, metadata):
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        b = t.numpy().tobytes()
        header[name] = {"dtype": _ST[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ----------------------------------------------------------------------------------------------
# ranking helpers (docs/pruning.md: ties to the lower index)

def topk_idx(score, k):
    """Indices of the k largest values, ties to the lower index, in rank order."""
    order = torch.sort(-score, stable=True).indices  # stable: equal values keep index order
    return order[:k]


def lowest_idx(score, k):
    """Indices of the k smallest values (stable: the lower index first on ties), in rank order."""
    return torch.sort(score, stable=True).indices[:k]


def margin_top(score, k):
    """(absolute, relative) gap between the k-th largest (last kept) and the (k+1)-th (first
    dropped) value; relative = gap / |k-th value|; (inf, inf) when nothing is dropped."""
    if k <= 0 or k >= score.numel():
        return (math.inf, math.inf)
    v = torch.sort(score, descending=True).values
    g = float(v[k - 1] - v[k])
    return (g, g / max(abs(float(v[k - 1])), 1e-30))


def margin_low(score, k):
    """(absolute, relative) gap between the (k+1)-th smallest (first survivor) and the k-th
    smallest (last dropped) value."""
    if k <= 0 or k >= score.numel():
        return (math.inf, math.inf)
    v = torch.sort(score).values
    g = float(v[k] - v[k - 1])
    return (g, g / max(abs(float(v[k])), 1e-30))


def l2_normalize(x):
    return x / x.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------------------------
# the tiny LLaVA-1.5 in float32 (transformers' CLIPVisionModel + LlavaMultiModalProjector + Llama)

class KV:
    """One layer's cache: post-RoPE keys [m, KV, d], values [m, KV, d], position ids [m]."""

    def __init__(self, kvh, d):
        self.k = torch.zeros(0, kvh, d)
        self.v = torch.zeros(0, kvh, d)
        self.pos = torch.zeros(0, dtype=torch.int64)


class TinyLlava:
    def __init__(self, model_dir):
        self.cfg = json.load(open(os.path.join(model_dir, "config.json")))
        index = json.load(open(os.path.join(model_dir, "model.safetensors.index.json")))
        self.w = {}
        for f in sorted(set(index["weight_map"].values())):
            self.w.update(read_safetensors(os.path.join(model_dir, f))[0])
        vc, tc = self.cfg["vision_config"], self.cfg["text_config"]
        # vision tower
        self.v_layers, self.v_heads, self.v_hidden = vc["num_hidden_layers"], vc["num_attention_heads"], vc["hidden_size"]
        self.v_hd = self.v_hidden // self.v_heads
        self.v_eps, self.v_act, self.patch = vc.get("layer_norm_eps", 1e-5), vc.get("hidden_act", "quick_gelu"), vc["patch_size"]
        self.grid = vc["image_size"] // vc["patch_size"]
        # hidden_states[vision_feature_layer] is the output of encoder layer (index - 1) of the
        # (layers + 1)-entry tuple (embeddings first): -2 -> layer L-2, whose attention the
        # ViT-side methods read (docs/pruning.md: attentions[vision_feature_layer]).
        self.feature_hs = self.cfg.get("vision_feature_layer", -2) % (self.v_layers + 1)
        self.feature_layer = self.feature_hs - 1
        assert self.cfg.get("vision_feature_select_strategy", "default") == "default"
        assert self.cfg.get("projector_hidden_act", "gelu") == "gelu"
        # language model
        self.lp = next(k for k in self.w if k.endswith("embed_tokens.weight"))[:-len("embed_tokens.weight")]
        self.lm_head = next(self.w[k] for k in self.w if k.endswith("lm_head.weight"))
        self.layers, self.heads, self.kv_heads = tc["num_hidden_layers"], tc["num_attention_heads"], tc["num_key_value_heads"]
        self.hidden = tc["hidden_size"]
        self.hd = tc.get("head_dim") or self.hidden // self.heads
        self.eps = tc["rms_norm_eps"]
        rp = tc.get("rope_parameters") or {}
        assert rp.get("rope_type", "default") == "default" and tc.get("rope_scaling") is None
        theta = rp.get("rope_theta", tc.get("rope_theta", 10000.0))
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.hd, 2, dtype=torch.int64).to(torch.float32) / self.hd))
        self.eos = tc.get("eos_token_id", 2)
        self.image_token = self.cfg["image_token_index"]

    # --- helpers
    def lin(self, x, name, bias=True):
        y = x @ self.w[name + ".weight"].t()
        b = self.w.get(name + ".bias") if bias else None
        return y + b if b is not None else y

    def ln(self, x, name):
        return F.layer_norm(x, (x.shape[-1],), self.w[name + ".weight"], self.w[name + ".bias"], self.v_eps)

    def rms(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

    # --- CLIP ViT
    def vit(self, pixel_values):
        """pixel_values [1,3,H,W] -> (hidden_states: layers+1 tensors [T, Dv] (T = 1 + N, [CLS] first),
        attention probs per layer [heads, T, T], raw keys per layer [T, Dv] (k_proj(layer_norm1(x)), bias))."""
        p = "vision_tower."
        x = F.conv2d(pixel_values, self.w[p + "embeddings.patch_embedding.weight"], stride=self.patch)
        x = x.flatten(2).transpose(1, 2)[0]  # [N, Dv], patch index = row * grid + col
        x = torch.cat([self.w[p + "embeddings.class_embedding"][None], x], 0) + self.w[p + "embeddings.position_embedding.weight"]
        x = self.ln(x, p + "pre_layrnorm")
        hs, probs, keys = [x], [], []
        T, H, d = x.shape[0], self.v_heads, self.v_hd
        for i in range(self.v_layers):
            q = f"{p}encoder.layers.{i}."
            h = self.ln(x, q + "layer_norm1")
            Q, K, V = (self.lin(h, q + "self_attn." + n) for n in ("q_proj", "k_proj", "v_proj"))
            Qh, Kh, Vh = (t.view(T, H, d).transpose(0, 1) for t in (Q, K, V))
            a = torch.softmax((Qh @ Kh.transpose(1, 2)) * d ** -0.5, dim=-1)  # no mask
            x = x + self.lin((a @ Vh).transpose(0, 1).reshape(T, H * d), q + "self_attn.out_proj")
            h = self.lin(self.ln(x, q + "layer_norm2"), q + "mlp.fc1")
            h = h * torch.sigmoid(1.702 * h) if self.v_act == "quick_gelu" else F.gelu(h)
            x = x + self.lin(h, q + "mlp.fc2")
            hs.append(x)
            probs.append(a)
            keys.append(K)
        return hs, probs, keys

    def project(self, feats):
        h = F.gelu(self.lin(feats, "multi_modal_projector.linear_1"))  # exact (erf) GELU
        return self.lin(h, "multi_modal_projector.linear_2")

    # --- Llama decoder
    def embed(self, ids):
        return self.w[self.lp + "embed_tokens.weight"][ids]

    def rope(self, x, pos):
        """x [n, heads, d] at position ids pos [n] (rotate_half convention, f32 angles)."""
        freqs = pos.to(torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], -1)
        cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
        h = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., h:], x[..., :h]], -1) * sin

    def qkv(self, l, x, pos):
        """Layer l's input_layernorm + q/k/v projections + RoPE: [n, H, d], [n, KV, d], [n, KV, d]."""
        p = f"{self.lp}layers.{l}."
        h = self.rms(x, self.w[p + "input_layernorm.weight"])
        n = x.shape[0]
        q = self.lin(h, p + "self_attn.q_proj").view(n, self.heads, self.hd)
        k = self.lin(h, p + "self_attn.k_proj").view(n, self.kv_heads, self.hd)
        v = self.lin(h, p + "self_attn.v_proj").view(n, self.kv_heads, self.hd)
        return self.rope(q, pos), self.rope(k, pos), v

    def attend(self, q, k):
        """Attention logits [H, n, m] of queries [n, H, d] over keys [m, KV, d] (GQA: head h uses kv head h // rep)."""
        kr = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
        return (q.transpose(0, 1) @ kr.permute(1, 2, 0)) * self.hd ** -0.5

    def layer(self, l, x, pos, cache):
        """One decoder layer on the step rows x [n, hidden] (positions pos) appended to cache;
        row i of the step sees the cache and step rows <= i. Returns (x, probs [H, n, m], keys [n, KV, d])."""
        p = f"{self.lp}layers.{l}."
        q, k, v = self.qkv(l, x, pos)
        c0 = cache.k.shape[0]
        cache.k, cache.v, cache.pos = torch.cat([cache.k, k]), torch.cat([cache.v, v]), torch.cat([cache.pos, pos])
        s = self.attend(q, cache.k)
        n, m = q.shape[0], cache.k.shape[0]
        s = s.masked_fill(torch.arange(m)[None, :] > (c0 + torch.arange(n))[:, None], float("-inf"))
        a = self.attention_probs(l, torch.softmax(self.attention_logits(l, s, cache), dim=-1), cache, pos)
        vr = cache.v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        o = self.head_outputs(l, (a @ vr.transpose(0, 1)).transpose(0, 1)).reshape(n, self.heads * self.hd)
        x = x + self.lin(o, p + "self_attn.o_proj")
        h = self.rms(x, self.w[p + "post_attention_layernorm.weight"])
        h = F.silu(self.lin(h, p + "mlp.gate_proj")) * self.lin(h, p + "mlp.up_proj")
        return x + self.lin(h, p + "mlp.down_proj"), a, k

    # Hooks of layer l for the modulation references (identity here); cache holds the step's keys
    # (cache.pos: their original positions), pos the step rows' positions.
    def attention_logits(self, l, s, cache):
        """The masked attention logits [H, n, m], before the softmax."""
        return s

    def attention_probs(self, l, a, cache, pos):
        """The attention probabilities [H, n, m], before they weight the values."""
        return a

    def head_outputs(self, l, o):
        """The attention output per head [n, H, d], before o_proj."""
        return o

    def logits(self, x):
        return self.rms(x, self.w[self.lp + "norm.weight"]) @ self.lm_head.t()

    def prefill(self, embeds, pruner=None, last_rows=1):
        """The prompt in one step into empty per-layer caches, positions 0..n-1. Before each layer l,
        pruner(l, state) may return (keep: current rows kept, ascending; new positions or None to keep
        them); state = x (the residual entering l), pos, origin (prompt row of each current row),
        probs / keys of layer l-1. Returns (logits [last_rows, V], caches, origin of the final rows)."""
        n = embeds.shape[0]
        x, pos, origin = embeds, torch.arange(n), torch.arange(n)
        caches = [KV(self.kv_heads, self.hd) for _ in range(self.layers)]
        probs = keys = None
        for l in range(self.layers):
            if pruner is not None:
                dec = pruner(l, {"x": x, "pos": pos, "origin": origin, "probs": probs, "keys": keys})
                if dec is not None:
                    keep, new_pos = dec
                    assert int(keep[-1]) == x.shape[0] - 1, "the last prompt row must survive"
                    x, origin = x[keep], origin[keep]
                    pos = pos[keep] if new_pos is None else new_pos
            x, probs, keys = self.layer(l, x, pos, caches[l])
        return self.logits(x[-last_rows:]), caches, origin

    def generate(self, logits, caches, n_new):
        """Greedy decode from the prefill's last logits with the (possibly pruned) caches; EOS masked
        for all n_new steps (min_new_tokens = max_new_tokens). A decode token's position in a layer
        is that layer's max cached position + 1."""
        out = []
        for t in range(n_new):
            logits = logits.clone()
            logits[self.eos] = float("-inf")
            tok = int(topk_idx(logits, 1)[0])
            out.append(tok)
            if t == n_new - 1:
                break
            x = self.embed(torch.tensor([tok]))
            for l in range(self.layers):
                x, _, _ = self.layer(l, x, caches[l].pos.max().view(1) + 1, caches[l])
            logits = self.logits(x)[0]
        return out


def golden_inputs():
    """The modulation golden scripts' common start: --out (default tests/golden), torch settings,
    and the tiny model's golden tensors and preprocessed crops: (out dir, golden, crops)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_grad_enabled(False)
    golden, _ = read_safetensors(os.path.join(args.out, "tiny_llava_golden.safetensors"))
    crops, _ = read_safetensors(os.path.join(args.out, "tiny_llava_preprocess.safetensors"))
    return args.out, golden, crops


def write_golden(path, out, meta):
    """Writes the tensors `out` with the JSON metadata `meta` and says so."""
    write_safetensors(path, out, {"meta": json.dumps(meta, sort_keys=True)})
    print("wrote %s (%d tensors)" % (path, len(out)))


# ----------------------------------------------------------------------------------------------
# the prompt and the shared vision pass

class Prompt:
    def __init__(self, m, input_ids, pixel_values, crop_u8):
        self.ids = input_ids
        img = (input_ids == m.image_token).nonzero().flatten()
        self.S, self.N = int(img[0]), int(img.numel())  # image span [S, S+N), found from the ids
        assert torch.equal(img, torch.arange(self.S, self.S + self.N)), "image tokens must be one contiguous run"
        assert self.N == m.grid * m.grid
        self.L = input_ids.numel()
        self.hs, self.vprobs, self.vkeys = m.vit(pixel_values)
        self.vit_out = self.hs[m.feature_hs]              # [1+N, Dv], [CLS] first
        self.feats = self.vit_out[1:]                     # LLaVA's features (default strategy)
        self.image = m.project(self.feats)                # [N, hidden]
        self.A = self.vprobs[m.feature_layer]             # [heads, 1+N, 1+N] attention of that layer
        self.crop = crop_u8                               # uint8 [336, 336, 3]

    def embeds(self, m, image_embeds):
        """Prompt embeddings with the image span replaced by image_embeds [n, hidden] (contiguous)."""
        e = m.embed(self.ids)
        return torch.cat([e[:self.S], image_embeds, e[self.S + self.N:]], 0)

    def image_rows(self, origin, n_img):
        """Current rows whose prompt row lies in the image span [S, S+n_img), and their span index."""
        rows = ((origin >= self.S) & (origin < self.S + n_img)).nonzero().flatten()
        return rows, origin[rows] - self.S


def keep_rows(n, image_rows, kept_image_rows):
    """All current rows except the image rows not in kept_image_rows, ascending."""
    mask = torch.ones(n, dtype=torch.bool)
    mask[image_rows] = False
    mask[kept_image_rows] = True
    return mask.nonzero().flatten()


def run_llm(m, P, image_embeds, pruner=None):
    logits, caches, origin = m.prefill(P.embeds(m, image_embeds), pruner)
    return logits[0], m.generate(logits[0], caches, N_NEW), origin


# ----------------------------------------------------------------------------------------------
# the methods (docs/pruning.md; each returns a dict of saved tensors + a list of (what, margin))

def fastv(m, P, prm):
    # pkunlp-icler/FastV @ d1659729, modeling_llama.py fastv_forward: before layer K, the head-mean
    # attention of layer K-1's last prompt row over the image columns; keep the top `keep`.
    K, keep = prm["layer"], prm["keep"]
    rec = {}

    def pruner(l, st):
        if l != K:
            return None
        rows, rel = P.image_rows(st["origin"], P.N)
        s = st["probs"][:, -1, :].mean(0)[rows]
        top = topk_idx(s, keep)
        rec.update(scores=s, kept=rel[top].sort().values, margin=margin_top(s, keep))
        return keep_rows(st["x"].shape[0], rows, rows[top]), None  # original positions kept

    logits, greedy, _ = run_llm(m, P, P.image, pruner)
    return dict(kept=rec["kept"], scores=rec["scores"], image_tokens=P.N, stage_kept=[keep],
                logits=logits, greedy=greedy, margins=[("layer %d top-%d" % (K, keep), rec["margin"])])


def pdrop(m, P, prm):
    # Cooperx521/PyramidDrop @ 6444f304, modeling_llama_pdrop.py pdrop_rank_drop: at stage layer l
    # (before it runs), layer l's own input_layernorm/q_proj/k_proj + RoPE at the current positions,
    # the last prompt row's query over all current keys, softmax, head mean, image columns; keep the
    # top n_s; then positions are renumbered 0..n'-1 and layer l runs on the kept rows.
    layers = prm["layers"]
    if "keep" in prm:
        lam = (prm["keep"] / P.N) ** (1.0 / len(layers))
        counts = [int(math.floor(P.N * lam ** (s + 1))) for s in range(len(layers) - 1)] + [prm["keep"]]
    else:
        lam = prm.get("lambda", 0.5)
        counts = [int(math.floor(P.N * lam ** (s + 1))) for s in range(len(layers))]
    rec = {"n_img": P.N, "margins": []}

    def pruner(l, st):
        if l not in layers:
            return None
        n_keep = counts[layers.index(l)]
        rows, rel = P.image_rows(st["origin"], P.N)
        q, k, _ = m.qkv(l, st["x"], st["pos"])
        s = torch.softmax(m.attend(q[-1:], k), dim=-1)[:, 0, :].mean(0)[rows]  # last row sees every key
        top = topk_idx(s, n_keep)
        rec.update(scores=s, kept=rel[top].sort().values)
        rec["margins"].append(("layer %d top-%d" % (l, n_keep), margin_top(s, n_keep)))
        keep = keep_rows(st["x"].shape[0], rows, rows[top])
        return keep, torch.arange(keep.numel())  # renumbered

    logits, greedy, _ = run_llm(m, P, P.image, pruner)
    return dict(kept=rec["kept"], scores=rec["scores"], image_tokens=P.N, stage_kept=counts, derived={"stage_keep": counts},
                logits=logits, greedy=greedy, margins=rec["margins"])


def fastervlm(m, P, prm):
    # Theia-4869/FasterVLM @ f5d5f120, clip_encoder.py feature_select: [CLS]-row attention of the
    # feature-producing ViT layer, head mean, [CLS] column excluded; top `keep` patches (ascending),
    # before the projector (per-token, so equal to the repo's masking after it).
    keep = prm["keep"]
    s = P.A[:, 0, 1:].mean(0)
    kept = topk_idx(s, keep).sort().values
    logits, greedy, _ = run_llm(m, P, m.project(P.feats[kept]))
    return dict(kept=kept, scores=s, image_tokens=keep, logits=logits, greedy=greedy,
                margins=[("top-%d" % keep, margin_top(s, keep))])


def visionzip(m, P, prm):
    # dvlab-research/VisionZip @ 3151f6df, visionzip/utils.py: dominant = [CLS] + the D-1 patches of
    # largest [CLS]-row attention (head sum); contextual = C merged tokens from the rest, assigned
    # by the cosine of the head-mean keys of the same layer; [dominant; contextual] -> projector.
    if "keep" in prm:
        C = round(prm["keep"] * 10 / 64)
        D = prm["keep"] - C
    else:
        D, C = prm.get("dominant", 54), prm.get("contextual", 10)
    A, h = P.A, P.vit_out                                     # [heads, 1+N, 1+N], [1+N, Dv]
    s = A[:, 0, 1:].sum(0)                                    # [N]
    dom = torch.cat([torch.zeros(1, dtype=torch.int64), topk_idx(s, D - 1) + 1]).sort().values  # over 0..N
    metric = P.vkeys[m.feature_layer].view(-1, m.v_heads, m.v_hd).mean(1)  # [1+N, head_dim]
    metric = l2_normalize(metric)
    is_rest = torch.ones(1 + P.N, dtype=torch.bool)
    is_rest[dom] = False
    rest = is_rest.nonzero().flatten()                        # R = 1 + N - D tokens, ascending
    R = rest.numel()
    step = max(1, R // C)
    tgt = torch.arange(0, R, step)[:C]                        # positions in the remaining list
    is_src = torch.ones(R, dtype=torch.bool)
    is_src[tgt] = False
    src = is_src.nonzero().flatten()
    sim = metric[rest[src]] @ metric[rest[tgt]].t()           # [R-C, C]
    assign = torch.stack([topk_idx(r, 1)[0] for r in sim])    # highest cosine, first on ties
    ctx = h[rest[tgt]].clone()
    for j in range(C):
        members = src[assign == j]
        if members.numel():
            ctx[j] += h[rest[members]].mean(0)
    logits, greedy, _ = run_llm(m, P, m.project(torch.cat([h[dom], ctx], 0)))
    amarg = min((margin_top(r, 1) for r in sim), default=(math.inf, math.inf))
    return dict(kept=dom[1:] - 1, scores=s, image_tokens=D + C, logits=logits, greedy=greedy,
                extra={"dominant_with_cls": dom, "targets": tgt, "target_tokens": rest[tgt], "assign": assign},
                margins=[("dominant top-%d" % (D - 1), margin_top(s, D - 1)), ("assignment (min best-second cosine)", amarg)],
                derived={"dominant": D, "contextual": C, "remaining": R, "step": step})


def dart(m, P, prm):
    # ZichenWen1/DART (mirror xqy1111111/DART @ d6a5af6f), modeling_llama_self.py: before layer K,
    # pivots = top image / text rows by the L1 norm of layer K-1's post-RoPE keys; each pivot (in
    # ascending row order: docs' choice) keeps the t candidates least cosine-similar to it in the
    # space model.norm(layer K-1's output), removing them from the pool.
    K, pi, pt, keep = prm["layer"], prm["pivot_image"], prm["pivot_text"], prm["keep"]
    t = keep // (pi + pt)
    rec = {"margins": []}

    def pruner(l, st):
        if l != K:
            return None
        n = st["x"].shape[0]
        rows, rel = P.image_rows(st["origin"], P.N)
        text = (st["origin"] >= P.S + P.N).nonzero().flatten()        # the text after the image
        norms = st["keys"].reshape(n, -1).abs().sum(-1)                 # L1 over kv heads x head_dim
        piv_img = rows[topk_idx(norms[rows], pi)]
        piv_txt = text[topk_idx(norms[text], min(pt, text.numel()))]
        rec["margins"].append(("image pivots top-%d" % pi, margin_top(norms[rows], pi)))
        rec["margins"].append(("text pivots top-%d" % pt, margin_top(norms[text], pt)))
        X = l2_normalize(m.rms(st["x"], m.w[m.lp + "norm.weight"]))     # final RMSNorm, with weight
        pool = rows[~torch.isin(rows, piv_img)]                          # ascending
        picks = []
        pm = (math.inf, math.inf)
        for p in torch.cat([piv_img, piv_txt]).sort().values:
            c = X[pool] @ X[p]
            low = lowest_idx(c, t)
            pm = min(pm, margin_low(c, t))
            picks.append(pool[low])
            pool = pool[~torch.isin(pool, pool[low])]
        rec["margins"].append(("per-pivot %d least similar (min over pivots)" % t, pm))
        kept_rows = torch.cat([piv_img] + picks).sort().values
        rec.update(scores=norms[rows], text_scores=norms[text], pivots=torch.cat([piv_img, piv_txt]).sort().values,
                   kept=(st["origin"][kept_rows] - P.S), n=kept_rows.numel())
        return keep_rows(n, rows, kept_rows), None  # original positions kept

    logits, greedy, _ = run_llm(m, P, P.image, pruner)
    return dict(kept=rec["kept"], scores=rec["scores"], image_tokens=P.N, stage_kept=[rec["n"]],
                logits=logits, greedy=greedy, margins=rec["margins"],
                extra={"pivots": rec["pivots"], "text_scores": rec["text_scores"]},
                derived={"per_pivot": t, "pivots": rec["pivots"].tolist()})


def divprune(m, P, prm):
    # vbdi/divprune @ 799e2d95, llava_arch.py DivPrune: max-min diversity over the projected image
    # features with D = 1 - cos; first pick argmax_j min_{k != j} D[k, j], then greedily the token
    # farthest from its nearest pick (first index on ties). Picks already made are excluded
    # explicitly (in the repo they score ~0 and never win).
    keep = prm["keep"]
    V = l2_normalize(P.image)
    D = 1.0 - V @ V.t()
    N = D.shape[0]
    score = D.masked_fill(torch.eye(N, dtype=torch.bool), float("inf")).min(0).values
    order, vals, margins = [], [], []
    for i in range(keep):
        if i:
            score = D[torch.tensor(order)].min(0).values
        score = score.clone()
        score[torch.tensor(order, dtype=torch.int64)] = float("-inf")
        j = int(topk_idx(score, 1)[0])
        margins.append(margin_top(score, 1))
        order.append(j)
        vals.append(float(score[j]))
    kept = torch.tensor(sorted(order))
    logits, greedy, _ = run_llm(m, P, P.image[kept])
    return dict(kept=kept, scores=torch.tensor(vals), image_tokens=keep, logits=logits, greedy=greedy,
                extra={"order": torch.tensor(order)}, margins=[("greedy best-second (min over picks)", min(margins))])


def patch_entropy(crop, grid, patch):
    """Shannon entropy (bits) of each patch's 256-bin histogram of gray = round((R+G+B)/3)."""
    a = crop.numpy().astype(np.int64)
    gray = np.round(a.sum(-1) / 3.0).astype(np.int64)  # fractions are 0, 1/3, 2/3: never a half
    H = np.zeros(grid * grid)
    for r in range(grid):
        for c in range(grid):
            hist = np.bincount(gray[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch].ravel(), minlength=256)
            p = hist[hist > 0] / float(patch * patch)
            H[r * grid + c] = -(p * np.log2(p)).sum()
    return torch.tensor(H, dtype=torch.float32)


def vflowopt(m, P, prm):
    # sihany077/VFlowOpt @ 129eeefb (LLaVA-OneVision only; the LLaVA-1.5 mapping is docs' choice):
    # siglip_encoder.py importance (sink-row attention + entropy), llava_qwen_training_free.py
    # prune + recycle after the projector, modeling_qwen2.py forward_illava LLM-stage drops.
    keep, t, a = prm["keep"], prm["sink_threshold"], prm["cell"]
    N, grid = P.N, m.grid
    A = P.A.mean(0)[1:, 1:]                                   # [N, N], [CLS] row/column removed
    recv = A.mean(0)                                          # attention received by each patch
    sinks = (recv > t * recv.mean()).nonzero().flatten()
    gap = float((recv - t * recv.mean()).abs().min())
    margins = [("sink threshold |recv - t mean| (min)", (gap, gap / float(t * recv.mean())))]
    if sinks.numel() == 0:
        sinks = topk_idx(recv, 1)
    H = patch_entropy(P.crop, grid, m.patch)
    imp = A[sinks].mean(0) + prm["entropy_weight"] * torch.softmax(H, 0)
    # ViT stage: drop the lowest, recycle each cell's dropped tokens into its best member
    n_drop = round(N * (1 - keep / N)) + N // (a * a)
    low = lowest_idx(imp, n_drop)
    feats = P.image.clone()
    cells = (low // grid) // a * ((grid + a - 1) // a) + (low % grid) // a
    is_kept = torch.ones(N, dtype=torch.bool)
    is_kept[low] = False
    rmarg = (math.inf, math.inf)
    for c in sorted(set(cells.tolist())):
        g = low[cells == c]
        w = imp[g] / imp[g].sum()
        best = g[topk_idx(imp[g], 1)[0]]
        rmarg = min(rmarg, margin_top(imp[g], 1))
        feats[best] = (w[:, None] * P.image[g]).sum(0)
        is_kept[best] = True
    vit_kept = is_kept.nonzero().flatten()                    # ascending
    margins += [("ViT stage drop-%d" % n_drop, margin_low(imp, n_drop)),
                ("recycle best member (min over cells)", rmarg)]
    n_vit = vit_kept.numel()
    stage_kept = [n_vit]
    rec = {"kept": vit_kept}
    layers, ratios = prm["llm_layers"], prm["llm_ratios"]

    def pruner(l, st):
        if l not in layers:
            return None
        rows, rel = P.image_rows(st["origin"], n_vit)         # rel indexes vit_kept
        s = imp[vit_kept[rel]]
        n_drop = round(rows.numel() * (1 - ratios[layers.index(l)]))
        drop = lowest_idx(s, n_drop)
        survive = torch.ones(rows.numel(), dtype=torch.bool)
        survive[drop] = False
        margins.append(("layer %d drop-%d" % (l, n_drop), margin_low(s, n_drop)))
        stage_kept.append(int(survive.sum()))
        rec["kept"] = vit_kept[rel[survive]]
        return keep_rows(st["x"].shape[0], rows, rows[survive]), None  # original positions kept

    logits, greedy, _ = run_llm(m, P, feats[vit_kept], pruner)
    return dict(kept=rec["kept"], scores=imp, image_tokens=n_vit, stage_kept=stage_kept, logits=logits,
                greedy=greedy, margins=margins,
                extra={"vit_kept": vit_kept, "entropy": H, "sinks": sinks},
                derived={"sinks": sinks.tolist(), "recv_max_over_mean": float(recv.max() / recv.mean()),
                         "vit_drop": n_drop, "recycled": int(len(set(cells.tolist())))})


FIELDS = {
    "kept": "I32 kept image tokens as indices 0..N-1 of the original image span, ascending (in-LLM: after the "
            "last stage; vflowopt: after its LLM stages; visionzip: the dominant patches, [CLS] excluded)",
    "image_tokens": "I32 [1] image tokens entering the LLM",
    "stage_kept": "I32 image tokens after each stage (vflowopt: ViT stage first, then each LLM stage)",
    "logits_last": "F32 [V] logits of the last prompt position after pruning",
    "greedy": "I32 [16] greedy continuation decoded with the pruned per-layer KV caches",
    "visionzip.dominant_with_cls": "I32 [D] dominant tokens over 0..N ([CLS] = 0), ascending",
    "visionzip.targets": "I32 [C] contextual targets as positions in the remaining (non-dominant) list",
    "visionzip.target_tokens": "I32 [C] the same targets as token indices over 0..N",
    "visionzip.assign": "I32 [R-C] target (0..C-1) of each other remaining token, in remaining order",
    "dart.pivots": "I32 pivot rows of the prompt (0..L-1): image pivots then text pivots, ascending",
    "dart.text_scores": "F32 key L1 norms of the text rows after the image",
    "divprune.order": "I32 [keep] picks in greedy order",
    "vflowopt.vit_kept": "I32 tokens kept by the ViT stage (recycled ones included), 0..N-1 ascending",
    "vflowopt.entropy": "F32 [N] patch entropy (bits)",
    "vflowopt.sinks": "I32 sink patches (0..N-1)",
}

METHODS = {"fastv": fastv, "pdrop": pdrop, "fastervlm": fastervlm, "visionzip": visionzip, "dart": dart,
           "divprune": divprune, "vflowopt": vflowopt}


# ----------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_grad_enabled(False)
    gdir = args.out

    m = TinyLlava(os.path.join(gdir, "tiny_llava"))
    golden, _ = read_safetensors(os.path.join(gdir, "tiny_llava_golden.safetensors"))
    crops, _ = read_safetensors(os.path.join(gdir, "tiny_llava_preprocess.safetensors"))
    P = Prompt(m, golden["input_ids"][0], golden["pixel_values"], crops["clip_u8_extreme_ironing"])
    print("prompt: L=%d, image span [%d, %d), text after the image: %d rows" % (P.L, P.S, P.S + P.N, P.L - P.S - P.N))

    # --- validate the f32 re-implementation against the transformers goldens (no pruning)
    dv = (P.feats - golden["vision_features"][0]).abs().max().item()
    di = (P.image - golden["image_features"][0]).abs().max().item()
    logits, caches, _ = m.prefill(P.embeds(m, P.image), last_rows=8)
    dl = (logits - golden["logits_last"][0]).abs().max().item()
    greedy = m.generate(logits[-1], caches, golden["greedy_ids"].shape[1])
    ok = dl < 1e-3 and greedy == golden["greedy_ids"][0].tolist()
    print("validate: |vision_features| %.2e  |image_features| %.2e  |logits_last| %.2e  greedy-32 %s"
          % (dv, di, dl, "equal" if greedy == golden["greedy_ids"][0].tolist() else "DIFFERENT"))
    if not ok:
        print("reference does not match the transformers goldens", file=sys.stderr)
        return 1
    base_logits = logits[-1]

    out, meta_cfg = {}, {}
    for name, method, prm in CONFIGS:
        r = METHODS[method](m, P, prm)
        out[name + ".kept"] = r["kept"].to(torch.int32)
        out[name + ".image_tokens"] = torch.tensor([r["image_tokens"]], dtype=torch.int32)
        if "stage_kept" in r:
            out[name + ".stage_kept"] = torch.tensor(r["stage_kept"], dtype=torch.int32)
        out[name + ".scores"] = r["scores"].to(torch.float32)
        out[name + ".logits_last"] = r["logits"].to(torch.float32)
        out[name + ".greedy"] = torch.tensor(r["greedy"], dtype=torch.int32)
        for k, v in r.get("extra", {}).items():
            out[name + "." + k] = v.to(torch.float32 if v.is_floating_point() else torch.int32)
        meta_cfg[name] = dict(method=method, params=prm, derived=r.get("derived", {}))
        top = torch.topk(r["logits"], 5)
        print("%-18s kept %3d  image tokens into the LLM %3d  stages %s" % (
            name, r["kept"].numel(), r["image_tokens"], r.get("stage_kept", "-")))
        print("    top-5 logits %s" % ", ".join("%d:%.4f" % (i, v) for v, i in zip(top.values.tolist(), top.indices.tolist())))
        if r.get("derived"):
            print("    derived %s" % json.dumps(r["derived"]))
        for what, mg in r["margins"]:
            print("    margin %-44s %.3e (relative %.1e)" % (what, mg[0], mg[1]))
        print("    greedy %s" % r["greedy"])
    # sanity: keeping every image token is no pruning at all
    d576 = (out["fastv_k1_keep576.logits_last"] - base_logits).abs().max().item()
    print("fastv keep 576 vs no pruning: |logits| %.2e" % d576)
    assert d576 < 1e-5 and out["fastv_k1_keep576.greedy"].tolist() == greedy[:N_NEW]

    meta = {
        "prompt": {"L": P.L, "image_start": P.S, "image_tokens": P.N, "image_token_id": m.image_token,
                   "source": "tiny_llava_golden.safetensors input_ids / pixel_values; entropy crop "
                             "tiny_llava_preprocess.safetensors clip_u8_extreme_ironing"},
        "configs": meta_cfg,
        "scores": SCORES,
        "fields": FIELDS,
        "greedy": "%d greedy tokens, EOS masked for all of them (min_new_tokens = max_new_tokens)" % N_NEW,
        "ties": "topk: stable sort on (-score, index); drop-lowest: stable ascending sort",
        "spec": "docs/pruning.md; generated by tools/golden/pruning.py",
    }
    path = os.path.join(gdir, "tiny_llava_pruning.safetensors")
    write_safetensors(path, out, {"meta": json.dumps(meta, sort_keys=True)})
    print("wrote %s (%d tensors, %d bytes)" % (path, len(out), os.path.getsize(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
