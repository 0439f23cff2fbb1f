// peft files: adapter_model.safetensors + adapter_config.json, as transformers + peft load them
// unchanged; from the live model or from a checkpoint (no GPU needed). The writer of the bytes
// (the worker hands them to the page; the CLI writes them atomically) is the front end's.
import { adapterConfigJson, type LoraConfig } from '../model/lora.ts';
import { writeSafetensors, type StWriteTensor } from '../model/safetensors.ts';
import { canonicalName, layoutName } from '../model/weights.ts';
import type { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import type { Checkpoint } from '../train/checkpoint.ts';
import { exportAdapterFiles } from '../model/adapterFiles.ts';

export interface AdapterFile {
  name: 'adapter_model.safetensors' | 'adapter_config.json';
  bytes: Uint8Array;
}

/** peft's key layouts: 'peft' = transformers ≥ 4.52 module names, 'peft-legacy' = the hub checkpoints' older names. */
export type AdapterLayout = 'peft' | 'peft-legacy';
const tensorLayout = (l: AdapterLayout) => (l === 'peft-legacy' ? 'hub' : 'transformers');

const json = (o: unknown) => new TextEncoder().encode(JSON.stringify(o, null, 2) + '\n');

/** The two files, config and tensors together. */
export function peftFiles(safetensors: Uint8Array, config: Record<string, unknown>): AdapterFile[] {
  return [
    { name: 'adapter_model.safetensors', bytes: safetensors },
    { name: 'adapter_config.json', bytes: json(config) },
  ];
}

/** A checkpoint's LoRA tensors as adapter_model.safetensors in the given key layout. */
export function checkpointSafetensors(ck: Checkpoint, layout: 'hub' | 'transformers'): Uint8Array {
  const tensors: StWriteTensor[] = Object.entries(ck.lora).map(([key, t]) => {
    const m = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(key);
    if (!m) throw new Error(`checkpoint tensor "${key}" is not a peft LoRA weight`);
    return { name: `base_model.model.${layoutName(canonicalName(m[1]), layout)}.lora_${m[2]}.weight`, dtype: 'F32', shape: t.shape, data: t.data };
  });
  return writeSafetensors(tensors, { format: 'pt' });
}

/** The peft files of a checkpoint; `baseModel` becomes base_model_name_or_path. */
export function checkpointAdapterFiles(ck: Checkpoint, lora: LoraConfig, baseModel: string, layout: AdapterLayout = 'peft'): AdapterFile[] {
  return peftFiles(checkpointSafetensors(ck, tensorLayout(layout)), adapterConfigJson({ ...lora, baseModelNameOrPath: baseModel }));
}

/** The peft files of the adapter on the model (read back from the GPU). */
export async function modelAdapterFiles(model: Qwen2_5_VL, layout: AdapterLayout = 'peft'): Promise<AdapterFile[]> {
  const ex = await exportAdapterFiles(model, { layout: tensorLayout(layout) });
  return peftFiles(ex.safetensors, ex.config);
}
