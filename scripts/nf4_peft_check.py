#!/usr/bin/env python3
"""Check that an adapter trained on an NF4 base is an ordinary peft adapter (not run by CI).

    python3 scripts/nf4_peft_check.py ADAPTER_DIR [OURS_LOGPS_JSON]

Loads the golden tiny model in full precision (../shared/golden/tiny-qwen2_5_vl), attaches the
adapter with peft's PeftModel.from_pretrained (it must load there: base_model_name_or_path names
the full-precision base), then — to compare with our engine — replaces every Linear that
src/model/fixtures/nf4/tiny-qwen2_5_vl-bnb-4bit quantises by bitsandbytes' dequantisation of it
(scripts/nf4_reference.py) and prints the log-probs of the ids 10, 17, …, 87 and, given our
engine's log-probs of the same ids (a JSON list), the max difference.
"""
import json
import os
import sys

import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import Qwen2_5_VLForConditionalGeneration

sys.path.insert(0, os.path.dirname(__file__))
import nf4_reference as R  # noqa: E402

adapter = sys.argv[1]
base = Qwen2_5_VLForConditionalGeneration.from_pretrained("../shared/golden/tiny-qwen2_5_vl", torch_dtype=torch.float32, attn_implementation="eager").eval()
m = PeftModel.from_pretrained(base, adapter).eval()
print("peft loaded the adapter on the full-precision base:", sum(1 for n, _ in m.named_modules() if n.endswith("lora_A")), "LoRA modules")
f = safe_open("src/model/fixtures/nf4/tiny-qwen2_5_vl-bnb-4bit/model.safetensors", "pt")
with torch.no_grad():
    for name, mod in m.base_model.model.named_modules():
        w = getattr(mod, "base_layer", mod)
        k = name + ".weight.quant_state.bitsandbytes__nf4"
        if k not in f.keys() or not hasattr(w, "weight"):
            continue
        qs = json.loads(bytes(f.get_tensor(k).numpy()).decode())
        st = {"absmax": f.get_tensor(name + ".weight.absmax"), "shape": tuple(qs["shape"]), "dtype": torch.bfloat16, "blocksize": qs["blocksize"],
              "code": f.get_tensor(name + ".weight.quant_map"), "nested": True, "offset": torch.tensor(qs["nested_offset"]),
              "nested_absmax": f.get_tensor(name + ".weight.nested_absmax"), "nested_code": f.get_tensor(name + ".weight.nested_quant_map")}
        w.weight.copy_(R.dequantize_4bit(f.get_tensor(name + ".weight"), st, torch.bfloat16).float())
ids = torch.tensor([[10 + i * 7 for i in range(12)]])
with torch.no_grad():
    lg = m(input_ids=ids).logits[0].double()
lp = torch.log_softmax(lg, -1)[:-1].gather(-1, ids[0, 1:, None])[:, 0]
print("log-probs (NF4-dequantised base + adapter):", [round(v, 4) for v in lp.tolist()])
if len(sys.argv) > 2:
    ours = torch.tensor(json.load(open(sys.argv[2])))
    print("max |ours - peft|:", (lp.float() - ours).abs().max().item())
