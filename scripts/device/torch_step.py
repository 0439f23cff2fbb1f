#!/usr/bin/env python3
"""The PyTorch half of the real-GPU check (scripts/device/run.sh).

  make-model DIR [--layers N --blocks N | --tiny] [--device cuda]
      A random-weight Qwen2.5-VL folder: Qwen2.5-VL-3B's config.json (or fewer layers / vision
      blocks, or a toy size for a CPU test), transformers' Qwen2_5_VLForConditionalGeneration built
      from the config with its own initialisation, saved as BF16 safetensors.
  step DIR --out FILE [--steps N] [--device cuda]
      Times the LoRA SFT step our bench times (src/bench/step.ts): same input (the formula of
      stepInput), peft LoRA r 16 / alpha 32 / dropout 0 on the same 7 decoder projections, BF16
      base, AdamW over the LoRA parameters with grad-norm clipping at 1, torch eager. Writes JSON.
"""
import argparse
import json
import math
import os
import sys
import time

QWEN2_5_VL_3B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 128000,
    "max_window_layers": 70, "model_type": "qwen2_5_vl", "num_attention_heads": 16, "num_hidden_layers": 36,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "sliding_window": 32768,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
    "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                      "in_chans": 3, "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
                      "spatial_patch_size": 14, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
                      "tokens_per_second": 2, "temporal_patch_size": 2},
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "vocab_size": 151936,
}
# the LoRA targets of targetRegex() in src/model/lora.ts (decoder projections only; peft full-matches a string)
TARGET_REGEX = r".*\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"


def config_json(layers=None, blocks=None, tiny=False):
    c = json.loads(json.dumps(QWEN2_5_VL_3B))
    if tiny:  # a toy width for a CPU test of this script (same vocabulary and special ids)
        c.update(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
        c["vision_config"].update(hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)
        c["rope_scaling"]["mrope_section"] = [2, 3, 3]
        layers, blocks = layers or 2, blocks or 4
    if layers:
        c["num_hidden_layers"] = c["max_window_layers"] = layers
    if blocks:
        c["vision_config"]["depth"] = blocks
        c["vision_config"]["fullatt_block_indexes"] = [blocks - 1] if blocks < 32 else c["vision_config"]["fullatt_block_indexes"]
    return c


def make_model(a):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    t0 = time.time()
    cj = config_json(a.layers, a.blocks, a.tiny)
    cfg = Qwen2_5_VLConfig(**cj)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    with dev:  # initialise on the GPU: 3.75 B parameters take seconds there, minutes on a CPU
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, torch_dtype=torch.bfloat16)
    os.makedirs(a.dir, exist_ok=True)
    model.save_pretrained(a.dir, safe_serialization=True, max_shard_size="20GB")
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"made": a.dir, "params": n, "seconds": round(time.time() - t0, 1)}))


def step_input(cfg, grid_h=8, grid_w=8, text=64, scored=20):
    """src/bench/step.ts stepInput(): the same ids, pixels and scored span."""
    import numpy as np
    merge = cfg.vision_config.spatial_merge_size ** 2
    M = grid_h * grid_w // merge
    L = text + M + 2
    ids = np.array([100 + (t * 7919) % 5000 for t in range(L)], dtype=np.int64)
    ids[4] = cfg.vision_start_token_id
    ids[5:5 + M] = cfg.image_token_id
    ids[5 + M] = cfg.vision_end_token_id
    K = 3 * cfg.vision_config.temporal_patch_size * cfg.vision_config.patch_size ** 2
    i = np.arange(grid_h * grid_w * K, dtype=np.float64)
    x = i * 0.6180339887
    px = (2 * (x - np.floor(x)) - 1).astype(np.float32).reshape(grid_h * grid_w, K)
    labels = np.full(L, -100, dtype=np.int64)
    labels[L - scored:] = ids[L - scored:]  # transformers shifts: logits row t-1 predicts token t, as our scoreStart
    return ids, px, np.array([[1, grid_h, grid_w]], dtype=np.int64), labels


def step(a):
    import torch
    import transformers
    import peft
    from transformers import Qwen2_5_VLForConditionalGeneration
    from peft import LoraConfig, get_peft_model
    dev = torch.device(a.device)
    out = {"device": a.device, "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
    t0 = time.time()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(a.dir, torch_dtype=torch.bfloat16, attn_implementation=a.attn).to(dev)
    out["load_s"] = round(time.time() - t0, 2)
    model.config.use_cache = False
    lcfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGET_REGEX, bias="none", use_rslora=False)
    model = get_peft_model(model, lcfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    out["lora_params"] = sum(p.numel() for p in trainable)
    out["lora_modules"] = sum(1 for n, _ in model.named_modules() if n.endswith("lora_A"))
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    cfg = model.base_model.model.config
    ids, px, grid, labels = step_input(cfg, text=a.text, scored=a.scored)
    batch = {
        "input_ids": torch.tensor(ids, device=dev)[None],
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=dev),
        "pixel_values": torch.tensor(px, device=dev, dtype=torch.bfloat16),
        "image_grid_thw": torch.tensor(grid, device=dev),
        "labels": torch.tensor(labels, device=dev)[None],
    }
    out["tokens"], out["scored"] = len(ids), a.scored

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def one():
        opt.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        return loss

    model.train()
    sync()
    t0 = time.time()
    loss = one()
    out["first_loss"] = float(loss.item())  # before any update: ours reports the same (same folder, same input)
    sync()
    out["warmup_ms"] = round(1000 * (time.time() - t0), 2)
    times = []
    for _ in range(a.steps):
        t0 = time.time()
        loss = one()
        _ = loss.item()  # the one readback a trainer does (the loss), as ours reads the grad-norm state
        sync()
        times.append(1000 * (time.time() - t0))
    times.sort()
    out["step_ms"] = round(times[len(times) // 2], 3)
    out["step_ms_all"] = [round(t, 3) for t in times]
    out["loss"] = float(loss.item())
    out["loss_is_finite"] = math.isfinite(out["loss"])
    if dev.type == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 3)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, a.out)
    print(json.dumps(out))


def input_fixture(a):
    """The step input for Qwen2.5-VL-3B's ids/patch sizes, for src/bench/step.test.ts (TypeScript must build the same)."""
    from types import SimpleNamespace as NS
    c = QWEN2_5_VL_3B
    v = NS(**c["vision_config"])
    cfg = NS(vision_config=v, vision_start_token_id=c["vision_start_token_id"], image_token_id=c["image_token_id"], vision_end_token_id=c["vision_end_token_id"])
    ids, px, grid, labels = step_input(cfg)
    flat = px.reshape(-1)
    out = {"generated_by": "python3 scripts/device/torch_step.py input-fixture", "ids": ids.tolist(), "grid": grid.tolist()[0],
           "scored_from": int((labels != -100).argmax()), "pixels_len": int(flat.size),
           "pixels_head": [float(x) for x in flat[:8]], "pixels_at_70001": float(flat[70001]), "pixels_sum": float(flat.astype("float64").sum())}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("dir")
    m.add_argument("--layers", type=int)
    m.add_argument("--blocks", type=int)
    m.add_argument("--tiny", action="store_true")
    m.add_argument("--device", default="cuda")
    s = sub.add_parser("step")
    s.add_argument("dir")
    s.add_argument("--out", required=True)
    s.add_argument("--steps", type=int, default=5)
    s.add_argument("--text", type=int, default=64)
    s.add_argument("--scored", type=int, default=20)
    s.add_argument("--device", default="cuda")
    s.add_argument("--attn", default="sdpa", help="transformers attn_implementation (sdpa = torch's fused attention; eager)")
    fx = sub.add_parser("input-fixture")
    fx.add_argument("out")
    a = p.parse_args()
    if a.cmd == "input-fixture":
        input_fixture(a)
    elif a.cmd == "make-model":
        make_model(a)
    else:
        step(a)


if __name__ == "__main__":
    sys.exit(main())
