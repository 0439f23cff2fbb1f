#!/usr/bin/env python3
"""NF4 reference vectors, independent of the TypeScript: a faithful re-implementation of
bitsandbytes' 4-bit quantisation (bitsandbytes itself does not install on CPU-only machines here).

Run (torch CPU, transformers, safetensors; not part of CI — its outputs are committed):

    python3 scripts/nf4_reference.py [GOLDEN_DIR] [OUT_DIR]
    # defaults: ../shared/golden  src/model/fixtures/nf4

Sources re-implemented (bitsandbytes-foundation/bitsandbytes, main as of 2026-08):
  * bitsandbytes/backends/default/ops.py  "bitsandbytes::quantize_4bit" (pure PyTorch),
    _dequantize_4bit_compute, "bitsandbytes::quantize_blockwise", _dequantize_blockwise_compute
  * bitsandbytes/functional.py  quantize_4bit (compress_statistics = double quant: offset =
    absmax.mean(), quantize_blockwise(absmax - offset, blocksize=256) with the dynamic map),
    dequantize_4bit, get_4bit_type("nf4"), create_dynamic_map, QuantState.as_dict(packed=True)
  * bitsandbytes/utils.py  pack_dict_to_tensor (the JSON blob in a U8 tensor)
  * bitsandbytes/nn/modules.py  Linear4bit._save_to_state_dict: prefix + "weight." + key
  * transformers integrations/bitsandbytes.py replace_with_bnb_linear (every nn.Linear not in
    modules_to_not_convert), quantizers/base.py get_keys_to_not_convert (tied / output embeddings:
    lm_head), quantizers_utils.should_convert_module (llm_int8_skip_modules matching).

Writes:
  (a) OUT/cases.safetensors: seeded tensors of odd shapes (numel not a multiple of 64, odd numel),
      with and without double quantisation: input (BF16), packed codes U8 [(n+1)//2, 1], absmax,
      nested_absmax / nested_quant_map, quant_map, the quant_state JSON, dequantised BF16 and F32.
  (b) OUT/tiny-qwen2_5_vl-bnb-4bit/: the golden tiny model in the layout transformers saves for a
      4-bit model (config.json quantization_config; per Linear: weight U8 + quant state tensors),
      and OUT/logps.safetensors: transformers' per-token log-probs (float64 math) of the golden
      one-image and text-only inputs with the dequantised weights.
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

GOLDEN = sys.argv[1] if len(sys.argv) > 1 else "../shared/golden"
OUT = sys.argv[2] if len(sys.argv) > 2 else "src/model/fixtures/nf4"

# functional.get_4bit_type("nf4"): the hard-coded table, divided by its absmax (1.0)
NF4 = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
])
NF4 = NF4 / NF4.abs().max()


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """functional.create_dynamic_map, verbatim."""
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(
            2 ** (i + non_sign_bits - max_exponent_bits) + 1
            if signed
            else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1,
        )
        boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    if additional_items > 0:
        boundaries = torch.linspace(0.1, 1, additional_items + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    gap = 256 - len(data)
    for i in range(gap):
        data.append(0)
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


DYNAMIC = create_dynamic_map()


def _blocks_absmax_scaled(A_flat, blocksize, n):
    """The block split of backends/default/ops.py: full blocks scaled by a reciprocal, the tail
    block (numel % blocksize) divided by its own absmax."""
    rem = n % blocksize
    full = n - rem
    blocks = full // blocksize
    A_com = A_flat[:full].reshape(blocks, blocksize)
    absmax = A_com.abs().max(dim=-1)[0]
    scaled = torch.clamp(A_com * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if rem:
        am = A_flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, am.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(A_flat[full:] / am, -1, 1)])
    return absmax, scaled


def quantize_blockwise(A, code, blocksize):
    """ops.py "bitsandbytes::quantize_blockwise" (default backend)."""
    A_flat = A.reshape(-1).float()
    absmax, scaled = _blocks_absmax_scaled(A_flat, blocksize, A_flat.numel())
    bounds = (code[:-1] + code[1:]) / 2
    q = torch.bucketize(scaled, bounds, out_int32=True).to(torch.uint8)
    return q.reshape(A.shape), absmax


def dequantize_blockwise(A, absmax, code, blocksize, dtype):
    """ops.py _dequantize_blockwise_compute."""
    A_flat = A.reshape(-1)
    n = A_flat.numel()
    out = code[A_flat.to(torch.int64)]
    rem = n % blocksize
    if rem == 0:
        out = (out.reshape(-1, blocksize) * absmax.view(-1, 1)).reshape(n)
    else:
        full = n - rem
        blocks = full // blocksize
        out = torch.cat([(out[:full].reshape(blocks, blocksize) * absmax[:blocks].view(-1, 1)).reshape(full), out[full:] * absmax[blocks]])
    return out.to(dtype).reshape(A.shape)


def quantize_4bit(A, blocksize=64, compress_statistics=False):
    """functional.quantize_4bit(quant_type="nf4", quant_storage=uint8) over ops.py quantize_4bit.
    Returns (packed U8 [(n+1)//2, 1], state dict as QuantState fields)."""
    A_flat = A.reshape(-1).float()
    n = A_flat.numel()
    absmax, scaled = _blocks_absmax_scaled(A_flat, blocksize, n)
    if scaled.numel() % 2:
        scaled = torch.nn.functional.pad(scaled, (0, 1))
    bounds = (NF4[:-1] + NF4[1:]) / 2  # _get_4bit_quantize_bounds: NF4 is sorted, order = identity
    q = torch.bucketize(scaled, bounds, out_int32=True)
    q8 = q.to(torch.uint8)
    packed = ((q8[::2] << 4) | q8[1::2]).unsqueeze(1)  # first element of a pair in the HIGH nibble
    st = {"absmax": absmax, "shape": tuple(A.shape), "dtype": A.dtype, "blocksize": blocksize, "code": NF4.clone(), "nested": False}
    if compress_statistics:
        offset = absmax.mean()
        qabsmax, absmax2 = quantize_blockwise(absmax - offset, DYNAMIC, 256)
        st.update(absmax=qabsmax, nested=True, offset=offset, nested_absmax=absmax2, nested_code=DYNAMIC.clone())
    return packed, st


def dequantize_4bit(packed, st, dtype=None):
    """functional.dequantize_4bit + ops.py _dequantize_4bit_compute."""
    absmax = st["absmax"]
    if st["nested"]:
        absmax = dequantize_blockwise(absmax, st["nested_absmax"], st["nested_code"], 256, torch.float32)
        absmax += st["offset"]
        absmax = absmax.float()
    A_flat = packed.reshape(-1)
    n = 1
    for d in st["shape"]:
        n *= d
    out_dq = torch.empty(A_flat.size(0) * 2, dtype=torch.int32)
    out_dq[1::2] = A_flat & 0xF
    out_dq[::2] = A_flat >> 4
    out_dq = st["code"][out_dq][:n]  # fp32
    bs = st["blocksize"]
    rem = n % bs
    if rem:
        full = n - rem
        blocks = full // bs
        out = torch.empty(n, dtype=torch.float32)
        out[:full] = (out_dq[:full].view(-1, bs) * absmax[:blocks].view(-1, 1)).reshape(full)
        out[full:] = out_dq[full:] * absmax[blocks]
    else:
        out = (out_dq.view(-1, bs) * absmax.view(-1, 1)).reshape(n)
    return out.reshape(-1, *st["shape"][1:]).to(dtype or st["dtype"])


def as_dict_packed(st):
    """QuantState.as_dict(packed=True): tensors + "quant_state.bitsandbytes__nf4" (JSON bytes)."""
    d = {"quant_type": "nf4", "absmax": st["absmax"], "blocksize": st["blocksize"], "quant_map": st["code"],
         "dtype": str(st["dtype"]).strip("torch."), "shape": tuple(st["shape"])}
    if st["nested"]:
        d.update({"nested_absmax": st["nested_absmax"], "nested_blocksize": 256, "nested_quant_map": st["nested_code"].clone(),
                  "nested_dtype": "float32", "nested_offset": st["offset"].item()})
    packed = {k: v for k, v in d.items() if isinstance(v, torch.Tensor)}
    rest = {k: v for k, v in d.items() if not isinstance(v, torch.Tensor)}
    packed["quant_state.bitsandbytes__nf4"] = torch.tensor(list(json.dumps(rest).encode("utf-8")), dtype=torch.uint8)
    return packed


# ---------------------------------------------------------------------------------- (a) cases

def cases():
    g = torch.Generator().manual_seed(20261204)
    shapes = [("s0", (7, 100), False), ("s1", (5, 13), False), ("s2", (3, 64), True), ("s3", (130, 129), True), ("s4", (33, 31), True), ("s5", (4, 40), False)]
    out = {}
    for tag, shape, nested in shapes:
        x = (torch.randn(shape, generator=g) * 0.05).to(torch.bfloat16)
        if tag == "s5":
            x[0, :] = 0  # an all-zero block: absmax 0 (clamped only for the division)
        packed, st = quantize_4bit(x, 64, nested)
        out[f"{tag}.input"] = x
        out[f"{tag}.weight"] = packed
        for k, v in as_dict_packed(st).items():
            out[f"{tag}.weight.{k}"] = v
        out[f"{tag}.dequant_bf16"] = dequantize_4bit(packed, st, torch.bfloat16)
        out[f"{tag}.dequant_f32"] = dequantize_4bit(packed, st, torch.float32)
    out["nf4_code"] = NF4.clone()
    out["dynamic_map"] = DYNAMIC.clone()
    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "cases.safetensors"), metadata={"blocksize": "64", "source": "scripts/nf4_reference.py"})


# ---------------------------------------------------------------------------------- (b) tiny model

SKIP = ["lm_head", "model.language_model.layers.1.mlp.down_proj"]  # llm_int8_skip_modules


def should_convert(full_name, patterns):
    """transformers quantizers_utils.should_convert_module."""
    import re
    return not any(re.match(f"{k}\\.", full_name) or re.match(f"{k}", full_name) or full_name.endswith(k) for k in patterns)


def tiny_model():
    from transformers import Qwen2_5_VLForConditionalGeneration

    src = os.path.join(GOLDEN, "tiny-qwen2_5_vl")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(src, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    cfg = json.load(open(os.path.join(src, "config.json")))
    # modules_to_not_convert = get_keys_to_not_convert (tied embeddings + lm_head) + llm_int8_skip_modules
    skip = set(SKIP) | {"lm_head", "model.language_model.embed_tokens"}
    tensors = {}
    quantised = []
    with torch.no_grad():
        for name, mod in model.named_modules():
            if type(mod) is not torch.nn.Linear or not should_convert(name, skip):
                continue
            w = mod.weight.detach().to(torch.bfloat16)  # the checkpoint is BF16
            packed, st = quantize_4bit(w, 64, compress_statistics=True)
            tensors[name + ".weight"] = packed
            for k, v in as_dict_packed(st).items():
                tensors[name + ".weight." + k] = v
            if mod.bias is not None:
                tensors[name + ".bias"] = mod.bias.detach().to(torch.bfloat16)
            # the reference run uses exactly what bnb's matmul_4bit uses: dequantize_4bit(...) in the
            # compute dtype (BF16 here) — widened to float64 for the math
            mod.weight.copy_(dequantize_4bit(packed, st, torch.bfloat16).float())
            quantised.append(name)
        for name, p in model.state_dict().items():
            mod = name.rsplit(".", 1)[0]
            if mod in quantised or name == "lm_head.weight":  # tied: not saved (as transformers)
                continue
            tensors[name] = p.detach().to(torch.bfloat16)
    d = os.path.join(OUT, "tiny-qwen2_5_vl-bnb-4bit")
    os.makedirs(d, exist_ok=True)
    cfg["quantization_config"] = {
        "_load_in_4bit": True, "_load_in_8bit": False, "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
        "llm_int8_enable_fp32_cpu_offload": False, "llm_int8_has_fp16_weight": False,
        "llm_int8_skip_modules": SKIP, "llm_int8_threshold": 6.0, "load_in_4bit": True, "load_in_8bit": False,
        "quant_method": "bitsandbytes",
    }
    cfg["torch_dtype"] = "bfloat16"
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    # log-probs of the golden one-image input, float64 math on the dequantised weights
    model = model.to(torch.float64)
    with safe_open(os.path.join(GOLDEN, "cases", "model_forward__one_image.safetensors"), "pt") as f:
        ids = f.get_tensor("input.input_ids").long()[None]
        pv = f.get_tensor("input.pixel_values").double()
        thw = f.get_tensor("input.image_grid_thw").long()
        # the golden M-RoPE positions (get_rope_index as Qwen2.5-VL defines it): transformers 5.x's
        # forward, called without mm_token_type_ids, numbers the image rows like text
        pos = f.get_tensor("expect.position_ids").long()[:, None, :]
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=pv, image_grid_thw=thw, position_ids=pos).logits[0]
        with safe_open(os.path.join(GOLDEN, "cases", "model_forward__text_only.safetensors"), "pt") as f:
            tids = f.get_tensor("input.input_ids").long()[None]
        text = model(input_ids=tids).logits[0]
    lp = torch.log_softmax(logits, -1)
    logps = lp[:-1].gather(-1, ids[0, 1:, None])[:, 0]
    lpt = torch.log_softmax(text, -1)[:-1].gather(-1, tids[0, 1:, None])[:, 0]
    save_file({"expect.logps": logps.float(), "expect.logits_last": logits[-1].float(), "expect.text_logps": lpt.float()},
              os.path.join(OUT, "logps.safetensors"),
              metadata={"input": "golden cases/model_forward__one_image.safetensors (input_ids, pixel_values, image_grid_thw); text_logps: the ids of cases/model_forward__text_only.safetensors",
                        "quantised": ",".join(quantised)})
    print(f"quantised {len(quantised)} Linear layers; skipped by llm_int8_skip_modules: {SKIP}")


if __name__ == "__main__":
    cases()
    tiny_model()
    print("wrote", OUT)
