import sys, torch; sys.path.insert(0,'tools/golden')
import pruning as pr
a,_=pr.read_safetensors('/tmp/local.st'); b,_=pr.read_safetensors('tests/golden/tiny_llava_pruning.safetensors')
assert a.keys()==b.keys()
worst=0
for k in a:
    if a[k].is_floating_point(): worst=max(worst,(a[k]-b[k]).abs().max().item())
    elif not torch.equal(a[k],b[k]): print("INT DIFF",k)
print("max float diff local(torch1.13) vs here:", worst)
try:
    from safetensors.torch import load_file
    c=load_file('tests/golden/tiny_llava_pruning.safetensors'); print("safetensors lib reads it:", len(c))
    from safetensors import safe_open
    with safe_open('tests/golden/tiny_llava_pruning.safetensors','pt') as f: print(list(f.metadata().keys()))
except Exception as e: print("safetensors check:", e)
torch.set_grad_enabled(False)
from transformers import LlavaForConditionalGeneration
m=LlavaForConditionalGeneration.from_pretrained('tests/golden/tiny_llava', torch_dtype=torch.float32, attn_implementation="eager").eval()
g,_=pr.read_safetensors('tests/golden/tiny_llava_golden.safetensors')
vt = m.model.vision_tower if hasattr(m,'model') else m.vision_tower
o=vt(g['pixel_values'], output_attentions=True, output_hidden_states=True)
me=pr.TinyLlava('tests/golden/tiny_llava'); hs,pb,_=me.vit(g['pixel_values'])
print("vit attn[-2] diff", (o.attentions[-2][0]-pb[me.feature_layer]).abs().max().item())
out=m(input_ids=g['input_ids'], pixel_values=g['pixel_values'], output_attentions=True)
P=pr.Prompt(me,g['input_ids'][0],g['pixel_values'],torch.zeros(336,336,3,dtype=torch.uint8))
ctx={}
def pruner(l, st):
    if l==1: ctx['p']=st['probs']
me.prefill(P.embeds(me,P.image), pruner)
print("llm layer0 attn diff", (out.attentions[0][0]-ctx['p']).abs().max().item())
