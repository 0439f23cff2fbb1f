#!/usr/bin/env python3
"""trl's DPO loss (the cluster bundle's trainer) on a fixed batch, as the fixture src/train/dpo.parity.test.ts
checks the studio's DPO against: the same prompt / completion token ids, the same summed log-probs of policy
(base + LoRA) and reference (adapter disabled), the same loss.

    npx tsx src/cli/makeTinyModel.ts /tmp/tiny-model --layout transformers
    python3 scripts/dpo_reference.py /tmp/tiny-model src/train/fixtures/dpo

The model is the studio's built-in tiny model (real Qwen vocabulary and chat template, 2 layers of width 128,
seed 0); the adapter is a peft LoRA on q_proj / v_proj with seeded non-zero A and B (written next to the
numbers, so both sides use the same weights). Text-only conversational pairs: trl renders and tokenizes them
with the chat template exactly as for image pairs (the images only add <|image_pad|> rows to the prompt).
CPU, float32, no dropout (trl's disable_dropout).
"""
import json
import os
import sys
import tempfile

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
from trl import DPOConfig, DPOTrainer

model_dir, out_dir = sys.argv[1], sys.argv[2]
os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(0)

PAIRS = [
    {
        "prompt": [{"role": "user", "content": "Where is the red circle?"}],
        "chosen": [{"role": "assistant", "content": '[{"bbox_2d": [12, 30, 60, 84], "label": "red circle"}]'}],
        "rejected": [{"role": "assistant", "content": '[{"bbox_2d": [70, 5, 110, 40], "label": "red circle"}]'}],
    },
    {
        "prompt": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What colour is the square?"}],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "It is green, I think."}],
    },
]
BETA = 0.1

tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, torch_dtype=torch.float32)
lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
with tempfile.TemporaryDirectory() as tmp:
    # as the bundle's train.py: the base model and a peft_config, so the reference is the adapter disabled
    args = DPOConfig(output_dir=tmp, beta=BETA, loss_type=["sigmoid"], per_device_train_batch_size=len(PAIRS), report_to="none", max_length=None, use_cpu=True)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(PAIRS), processing_class=tokenizer, peft_config=lora)
    model = trainer.model
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)  # non-zero B so policy and reference differ
    model.peft_config["default"].base_model_name_or_path = "patchwork-builtin-tiny"  # as the studio names it (no machine path)
    model.save_pretrained(out_dir)  # adapter_model.safetensors + adapter_config.json
    readme = os.path.join(out_dir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    batch = trainer.data_collator(rows)
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items() if v}

    # the per-pair sums, recomputed the way trl's _compute_loss does, for a per-pair comparison
    def logps(m):
        out = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        lp = torch.log_softmax(out.logits[:, :-1].float(), -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
        return (lp * batch["completion_mask"][:, 1:]).sum(1)

    with torch.no_grad():
        pol = logps(model)
        with model.disable_adapter():
            ref = logps(model)
n = len(PAIRS)
ref_data = {
    "source": "trl %s DPOTrainer (loss_type sigmoid, beta %g) on the built-in tiny model (seed 0) with the adapter in this folder" % (__import__("trl").__version__, BETA),
    "pairs": PAIRS,
    "beta": BETA,
    "prompt_ids": [r["prompt_ids"] for r in rows],
    "chosen_ids": [r["chosen_ids"] for r in rows],
    "rejected_ids": [r["rejected_ids"] for r in rows],
    "policy_chosen_logps": pol[:n].tolist(),
    "policy_rejected_logps": pol[n:].tolist(),
    "reference_chosen_logps": ref[:n].tolist(),
    "reference_rejected_logps": ref[n:].tolist(),
    "loss": loss.item(),
    "metrics": metrics,
}
with open(os.path.join(out_dir, "reference.json"), "w") as f:
    json.dump(ref_data, f, indent=1)
print(json.dumps({"loss": ref_data["loss"], "chosen_ids": ref_data["chosen_ids"]}))
