#!/usr/bin/env python3
"""Golden data for the tiny LLaVA-1.5 (run on the GPU machine: tools/gpu/run.sh golden).

Builds a tiny random LlavaForConditionalGeneration with the real structure (CLIP ViT-L/14-336
layout: image 336, patch 14 -> 576 patches; 2-layer GELU projector; Llama decoder with GQA-ready
shapes), saves it with save_pretrained (sharded, bf16 as released checkpoints are 16-bit) plus the
Llama tokenizer.model, and records reference tensors computed in f32 from the saved (rounded) weights:
  info.json                         architecture, tensor count, dtypes, parameter count
  tiny_llava/...                    the checkpoint exactly as transformers writes it
  tiny_llava_preprocess.safetensors clip_u8_<image>  uint8 [336,336,3] after CLIP resize+crop
  tiny_llava_golden.safetensors     pixel_values     [1,3,336,336] (extreme_ironing.jpg)
                                    vision_features  [1,576,Dv] (vision_feature_layer, CLS dropped)
                                    image_features   [1,576,D] (projector output)
                                    input_ids        [1,L] prompt ids (image token expanded)
                                    logits_last      [1,8,V] logits of the last 8 prompt positions
                                    greedy_ids       [1,32] greedy continuation
"""
import argparse, copy, json, os, shutil, sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"))
    args = ap.parse_args()
    import transformers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration)
    import sentencepiece as spm

    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                              image_size=336, patch_size=14, projection_dim=32, hidden_act="quick_gelu",
                              layer_norm_eps=1e-5)
    text = LlamaConfig(vocab_size=32064, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                       bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000,
                      projector_hidden_act="gelu", vision_feature_layer=-2,
                      vision_feature_select_strategy="default", image_seq_length=576)
    model = LlavaForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # larger random weights so that outputs are not all near zero
        for n, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.08)
            elif "norm" in n and n.endswith("weight"):
                p.uniform_(0.7, 1.3)
            else:
                p.normal_(0, 0.05)
        # Goldens come from the saved (bf16-rounded) weights. Round the PARAMETERS only: model.to()
        # would also round the unsaved RoPE inv_freq buffer, which from_pretrained keeps in f32.
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))

    out_dir = os.path.join(args.out, "tiny_llava")
    shutil.rmtree(out_dir, ignore_errors=True)
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(out_dir, max_shard_size="1MB")
    tok_src = os.path.join(ROOT, "assets", "tokenizers", "llama", "tokenizer.model")
    shutil.copy(tok_src, os.path.join(out_dir, "tokenizer.model"))

    # info.json: what `mmattn info` must print
    from safetensors import safe_open
    names, dtypes, nparams = [], {}, 0
    for f in sorted(os.listdir(out_dir)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(out_dir, f), "pt") as sf:
                for k in sf.keys():
                    t = sf.get_slice(k)
                    names.append(k)
                    dt = t.get_dtype()
                    dtypes[dt] = dtypes.get(dt, 0) + 1
                    nparams += int(np.prod(t.get_shape()))
    info = {"architecture": "LlavaForConditionalGeneration", "model_type": "llava", "num_tensors": len(names),
            "num_params": nparams, "num_params_torch": sum(p.numel() for p in model.parameters()),
            "dtypes": dtypes, "transformers": transformers.__version__, "files": sorted(os.listdir(out_dir))}
    with open(os.path.join(args.out, "tiny_llava_info.json"), "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)

    # preprocessing goldens
    proc = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                              do_center_crop=True, do_normalize=True, do_rescale=True, resample=3,
                              image_mean=[0.48145466, 0.4578275, 0.40821073],
                              image_std=[0.26862954, 0.26130258, 0.27577711])
    golden = {}
    img_dir = os.path.join(ROOT, "assets", "images")
    for f in sorted(os.listdir(img_dir)):
        img = Image.open(os.path.join(img_dir, f)).convert("RGB")
        px = proc(images=img, return_tensors="pt")["pixel_values"][0]  # [3,336,336] normalised
        mean = torch.tensor(proc.image_mean).view(3, 1, 1)
        std = torch.tensor(proc.image_std).view(3, 1, 1)
        u8 = torch.round((px * std + mean) * 255).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
        golden["clip_u8_" + os.path.splitext(f)[0]] = u8
        if f == "extreme_ironing.jpg":
            pixel_values = px.unsqueeze(0).float()
    golden["pixel_values"] = pixel_values
    # the crops go to their own file (each golden file stays small)
    crops = {k: golden.pop(k).contiguous() for k in list(golden) if k.startswith("clip_u8_")}
    save_file(crops, os.path.join(args.out, "tiny_llava_preprocess.safetensors"))

    sp = spm.SentencePieceProcessor(model_file=tok_src)
    pre = sp.encode("USER: ")
    post = sp.encode("\nWhat is unusual about this image? ASSISTANT:")
    ids = [1] + pre + [32000] * 576 + post
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        vt = model.model.vision_tower if hasattr(model, "model") else model.vision_tower
        vo = vt(pixel_values, output_hidden_states=True)
        feats = vo.hidden_states[cfg.vision_feature_layer][:, 1:]
        golden["vision_features"] = feats.contiguous()
        proj = model.model.multi_modal_projector if hasattr(model, "model") else model.multi_modal_projector
        golden["image_features"] = proj(feats).contiguous()
        out = model(input_ids=input_ids, pixel_values=pixel_values)
        golden["logits_last"] = out.logits[:, -8:].contiguous().float()
        gen = model.generate(input_ids=input_ids, pixel_values=pixel_values, max_new_tokens=32, do_sample=False,
                             min_new_tokens=32)
        golden["greedy_ids"] = gen[:, input_ids.shape[1]:].to(torch.int64).contiguous()
    golden["input_ids"] = input_ids.to(torch.int64)
    save_file({k: v.contiguous() for k, v in golden.items()}, os.path.join(args.out, "tiny_llava_golden.safetensors"))
    print("tiny_llava:", info["num_tensors"], "tensors,", info["num_params"], "params; greedy",
          golden["greedy_ids"].tolist())


if __name__ == "__main__":
    sys.exit(main())
