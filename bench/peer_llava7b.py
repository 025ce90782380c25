#!/usr/bin/env python3
"""LLaVA-1.5-7B-shaped benchmark, HF transformers side (same GPU, same run as bench_llava7b).

Writes a random-weight bf16 checkpoint with the real 7B shapes (CLIP ViT-L/14-336 + 2-layer GELU
projector + Llama-2-7B decoder, vocab 32064) to $MMATTN_LLAVA7B (default /tmp/llava7b) with
save_pretrained (plus the Llama tokenizer.model), then times HF: TTFT (processor-equivalent
preprocessing + vision + prefill of 576 image tokens + a short question, first token), decode
tokens/s at batch 1 and 8 over 128 new tokens, peak GPU memory, POPE-style questions/s (3 answer
tokens) at batch 1 and 16. Writes bench/results/llava7b_peer.json.
"""
import argparse, json, os, shutil, time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(path):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    if os.path.exists(os.path.join(path, "config.json")):
        return
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000, projector_hidden_act="gelu",
                      vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=576)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlavaForConditionalGeneration(cfg).to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():  # small random weights (init std 0.02 everywhere)
            p.normal_(0, 0.02)
    model.save_pretrained(path)
    shutil.copy(os.path.join(ROOT, "assets", "tokenizers", "llama", "tokenizer.model"), path)
    del model
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--checkpoint-only", action="store_true", help="write the checkpoint, run no peer")
    args = ap.parse_args()
    path = os.environ.get("MMATTN_LLAVA7B", "/tmp/llava7b")
    t0 = time.time()
    build(path)
    print(f"llava7b checkpoint ready at {path} ({time.time() - t0:.0f} s)")
    if args.checkpoint_only:
        return
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration
    import sentencepiece as spm
    from PIL import Image
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.bfloat16, device_map="cuda").eval()
    proc = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    sp = spm.SentencePieceProcessor(model_file=os.path.join(path, "tokenizer.model"))
    ids = [1] + sp.encode("USER: ") + [32000] * 576 + sp.encode("\nWhat is unusual about this image? ASSISTANT:")
    image = Image.open(os.path.join(ROOT, "assets", "images", "extreme_ironing.jpg")).convert("RGB")
    rows = {}

    def run(batch, new_tokens):
        torch.cuda.synchronize()
        t = time.time()
        px = proc(images=[image] * batch, return_tensors="pt")["pixel_values"].to("cuda", torch.bfloat16)
        inp = torch.tensor([ids] * batch, device="cuda")
        with torch.no_grad():
            out = model.generate(input_ids=inp, pixel_values=px, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False)
        torch.cuda.synchronize()
        return time.time() - t, out.shape[1] - inp.shape[1]

    run(1, 2)  # warm-up
    ttft = sorted(run(1, 1)[0] for _ in range(5))[2] * 1e3
    rows["ttft b1"] = ttft
    for b in (1, 8):
        torch.cuda.reset_peak_memory_stats()
        t_all, n = run(b, 128)
        t_first = sorted(run(b, 1)[0] for _ in range(3))[1]
        rows[f"decode tok/s b{b}"] = b * (n - 1) / (t_all - t_first)
        rows[f"peak GB b{b}"] = torch.cuda.max_memory_allocated() / 1e9
    # POPE-style questions (issue 8): image + short question with LLaVA's suffix, 3 answer tokens,
    # batched generate (left padding is not needed: every prompt has the same length here).
    q_ids = [1] + sp.encode("USER: ") + [32000] * 576 + sp.encode(
        "\nIs there a car in the image?\nAnswer the question using a single word or phrase. ASSISTANT:")

    def pope(batch, reps):
        torch.cuda.synchronize()
        t = time.time()
        for _ in range(reps):
            px = proc(images=[image] * batch, return_tensors="pt")["pixel_values"].to("cuda", torch.bfloat16)
            inp = torch.tensor([q_ids] * batch, device="cuda")
            with torch.no_grad():
                model.generate(input_ids=inp, pixel_values=px, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        torch.cuda.synchronize()
        return batch * reps / (time.time() - t)

    pope(16, 1)  # warm-up
    rows["pope q/s b1"] = pope(1, 8)
    rows["pope q/s b16"] = pope(16, 3)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "llava7b_peer.json"), "w") as f:
        json.dump({"peer": f"HF transformers {__import__('transformers').__version__}", "rows": rows}, f, indent=1)
    for k, v in rows.items():
        print(f"hf {k:20s} {v:.3f}")


if __name__ == "__main__":
    main()
