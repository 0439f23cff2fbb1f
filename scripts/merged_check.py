#!/usr/bin/env python3
"""Check a merged-model export (npm run merge / the studio's "Export merged model") in transformers.
Not run by CI (CI has no Python): a manual check, see README "Merged model export".

    python3 scripts/merged_check.py MERGED_DIR BASE_DIR ADAPTER_DIR [--shard-size SIZE] [--write-index FILE]

e.g. for the demo (tiny) model:
    npx tsx src/cli/makeTinyModel.ts TINY              # the base as a folder
    npm run train -- --model TINY --data synthetic:12 --steps 20 --out RUN
    npm run merge -- --adapter RUN/adapter --out MERGED --max-shard-size 20MB
    python3 scripts/merged_check.py MERGED TINY RUN/adapter --shard-size 20MB

1. Loads MERGED_DIR alone with Qwen2_5_VLForConditionalGeneration (torch CPU, float32 compute of
   the BF16 weights) and its processor (tokenizer, chat template, image processor): it must load
   with no missing / unexpected keys.
2. Loads BASE_DIR (float32) + ADAPTER_DIR with peft's PeftModel (unmerged LoRA).
3. Scores one chat with an image through both and prints the max |Δ log-prob| over its tokens, next
   to how far the adapter moves the base, and next to the same difference for peft's own
   merge_and_unload() in BF16 (what "within BF16 rounding" means in practice).
4. peft's own merge_and_unload() of the base loaded in BF16, saved with save_pretrained(max_shard_size=
   --shard-size): its model.safetensors.index.json weight_map / shard names must equal ours, and the
   max |Δ weight| between the two merges is printed in BF16 ulps (peft adds the delta in BF16, we in
   f32 then round once, so ours is the nearer one; a few ulps apart are expected).
--write-index FILE writes transformers' index (step 4) to FILE.

    python3 scripts/merged_check.py --save-index BASE_DIR SIZE FILE

only saves BASE_DIR with save_pretrained(max_shard_size=SIZE) and writes its index to FILE: a merge
has the base's names and sizes, so this is the index a merged export must write. It made the
fixture src/export/fixtures/merged/golden-tiny.index.50KB.json (src/export/merged.test.ts):
    python3 scripts/merged_check.py --save-index ../shared/golden/tiny-qwen2_5_vl 50KB src/export/fixtures/merged/golden-tiny.index.50KB.json
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch
from peft import PeftModel
from PIL import Image
from safetensors import safe_open
from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

if len(sys.argv) == 5 and sys.argv[1] == "--save-index":
    _, _, base_dir, size, out = sys.argv
    m = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        m.save_pretrained(tmp, max_shard_size=size)
        with open(out, "w") as f:
            f.write(open(os.path.join(tmp, "model.safetensors.index.json")).read())
    print("wrote", out)
    sys.exit(0)

ap = argparse.ArgumentParser()
ap.add_argument("merged")
ap.add_argument("base")
ap.add_argument("adapter")
ap.add_argument("--shard-size", default="50GB")
ap.add_argument("--write-index")
a = ap.parse_args()

load = dict(attn_implementation="eager")
merged, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(a.merged, dtype=torch.float32, output_loading_info=True, **load)
bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
if bad:
    sys.exit(f"FAIL: the merged folder does not load cleanly: {bad}")
print("merged folder loads in transformers: no missing / unexpected keys")
# tokenizer + image processor from the merged folder (AutoProcessor would also build the video
# processor, which needs torchvision; the PIL image processor does not)
tok = AutoTokenizer.from_pretrained(a.merged)
improc = AutoImageProcessor.from_pretrained(a.merged, backend="pil")
base = Qwen2_5_VLForConditionalGeneration.from_pretrained(a.base, dtype=torch.float32, **load)
peft = PeftModel.from_pretrained(base, a.adapter).eval()

rng = np.random.default_rng(0)
img = Image.fromarray(rng.integers(0, 256, (84, 112, 3), dtype=np.uint8))
msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the red square? Answer with a box."}]},
        {"role": "assistant", "content": [{"type": "text", "text": '{"bbox_2d": [12, 30, 57, 71], "label": "red square"}'}]}]
vis = improc(images=[img], return_tensors="pt")
text = tok.apply_chat_template(msgs, tokenize=False)
# one <|image_pad|> per merged patch, as Qwen2_5_VLProcessor expands it
n_pad = int(vis["image_grid_thw"][0].prod()) // improc.merge_size**2
text = text.replace("<|image_pad|>", "<|image_pad|>" * n_pad, 1)
inp = dict(tok([text], return_tensors="pt"), **vis)


def logps(m):
    with torch.no_grad():
        logits = m(**inp).logits[0].double()
    ids = inp["input_ids"][0]
    return torch.log_softmax(logits[:-1], -1).gather(-1, ids[1:, None])[:, 0]


lm, la = logps(merged.eval()), logps(peft)
with peft.disable_adapter():
    lb = logps(peft)
d = (lm - la).abs()
print(f"tokens scored: {len(d)}")
print(f"max |logp(merged) - logp(base+adapter, peft)| = {d.max().item():.3e} (mean {d.mean().item():.3e})")
print(f"max |logp(base+adapter) - logp(base)|         = {(la - lb).abs().max().item():.3e} (the adapter's effect)")

# peft's merge, saved by transformers, against ours: same files, same names, weights within a few BF16 ulps
ref = PeftModel.from_pretrained(Qwen2_5_VLForConditionalGeneration.from_pretrained(a.base, dtype=torch.bfloat16, **load), a.adapter).merge_and_unload()
lr = logps(ref.float().eval())
ref = ref.to(torch.bfloat16)
print(f"max |logp(peft merge_and_unload in BF16) - logp(base+adapter)| = {(lr - la).abs().max().item():.3e} (BF16 rounding as peft users get it)")
with tempfile.TemporaryDirectory() as tmp:
    ref.save_pretrained(tmp, max_shard_size=a.shard_size)
    theirs = sorted(f for f in os.listdir(tmp) if f.endswith(".safetensors") or f.endswith(".json"))
    ours = sorted(f for f in os.listdir(a.merged) if f.endswith(".safetensors") or f == "model.safetensors.index.json" or f in theirs)
    print("transformers' save_pretrained writes:", ", ".join(theirs))
    missing = [f for f in theirs if f not in ours]
    if missing:
        sys.exit(f"FAIL: the merged folder lacks {missing}")
    idx = os.path.join(tmp, "model.safetensors.index.json")
    if os.path.exists(idx):
        ti, oi = json.load(open(idx)), json.load(open(os.path.join(a.merged, "model.safetensors.index.json")))
        if ti != oi:
            sys.exit(f"FAIL: model.safetensors.index.json differs:\n transformers {json.dumps(ti)[:400]}\n ours {json.dumps(oi)[:400]}")
        print("model.safetensors.index.json: identical to transformers' (weight_map, total_size, total_parameters)")
        if a.write_index:
            with open(a.write_index, "w") as f:
                f.write(open(idx).read())
            print("wrote", a.write_index)
    worst, worst_name, n = 0, "", 0
    for f in [x for x in theirs if x.endswith(".safetensors")]:
        with safe_open(os.path.join(tmp, f), "pt") as t, safe_open(os.path.join(a.merged, f), "pt") as o:
            if sorted(t.keys()) != sorted(o.keys()):
                sys.exit(f"FAIL: {f} holds other tensors than transformers' ({sorted(set(t.keys()) ^ set(o.keys()))[:5]})")
            for k in t.keys():
                x, y = t.get_tensor(k), o.get_tensor(k)
                if x.dtype != y.dtype or x.shape != y.shape:
                    sys.exit(f"FAIL: {f} {k}: {y.dtype}{list(y.shape)}, transformers {x.dtype}{list(x.shape)}")
                # distance in BF16 ulps: the int16 bit patterns of same-sign values
                xi, yi = x.view(torch.int16).int(), y.view(torch.int16).int()
                u = (xi - yi).abs().max().item()
                n += 1
                if u > worst:
                    worst, worst_name = u, k
    print(f"{n} tensors, same names / dtypes / shapes as transformers' save; max difference to peft's BF16 merge: {worst} BF16 ulp(s){f' ({worst_name})' if worst else ''}")
print("OK")
