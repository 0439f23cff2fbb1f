// peft adapter files ⇄ the adapter on a model: adapter_config.json + adapter_model.safetensors read
// onto the GPU (both tensor-name layouts), or read back and written as peft writes them. The model
// class holds the adapter's tensors (setAdapter / adapter()); this file is its file I/O.
import { adapterConfigJson, parseAdapter, saveAdapter } from './lora.ts';
import type { TensorLayout } from './weights.ts';
import type { Qwen2_5_VL } from './qwen2_5_vl.ts';

/** peft files: adapter_config.json (bytes, string or object) + adapter_model.safetensors → the model's adapter. */
export async function loadAdapterFiles(model: Qwen2_5_VL, files: Record<string, Uint8Array | string | object>): Promise<void> {
  const cfg = files['adapter_config.json'], st = files['adapter_model.safetensors'];
  if (cfg === undefined || !(st instanceof Uint8Array)) throw new Error('loadAdapter: needs adapter_config.json and adapter_model.safetensors (bytes)');
  const json = cfg instanceof Uint8Array ? new TextDecoder().decode(cfg) : cfg;
  model.setAdapter(parseAdapter(json, st, model.config, 'adapter'));
}

/** The model's adapter as peft writes it (transformers ≥ 4.52 key layout unless `layout: 'hub'`). */
export async function exportAdapterFiles(model: Qwen2_5_VL, opts: { layout?: TensorLayout } = {}): Promise<{ safetensors: Uint8Array; config: Record<string, unknown> }> {
  const a = await model.adapter();
  const files = saveAdapter(a, opts);
  return { safetensors: files['adapter_model.safetensors'], config: adapterConfigJson(a.config) };
}
