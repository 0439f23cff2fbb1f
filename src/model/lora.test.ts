import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseConfig } from './config.ts';
import { readSafetensors, bytesToF32, writeSafetensors } from './safetensors.ts';
import {
  adapterConfigJson, defaultLoraConfig, initLora, isTargeted, linearModules, loadAdapter, parseAdapter, parseAdapterConfig, peftKey,
  saveAdapter, targetedModules, targetRegex, TEXT_LORA_MODULES, VISION_LORA_MODULES, type LoraConfig,
} from './lora.ts';
import { memorySource } from './weights.ts';
import { dirSource } from './sources/node.ts';
import { GoldenCase } from '../parity/golden.ts';

const golden = fileURLToPath(new URL('../../../shared/golden/', import.meta.url));
const model = parseConfig(readFileSync(golden + 'tiny-qwen2_5_vl/config.json', 'utf8'));
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

describe('golden adapter', () => {
  it('loads tiny-lora (old key layout, regex targets) with the values of the case files', async () => {
    const a = await loadAdapter(await dirSource(golden + 'tiny-lora'), model);
    expect(a.layout).toBe('hub');
    expect(a.config).toMatchObject({ r: 4, loraAlpha: 8, loraDropout: 0, useRslora: false });
    expect(a.modules.size).toBe(2 * 7);
    expect([...a.modules.keys()].every((n) => n.startsWith('model.layers.'))).toBe(true);
    const q = a.modules.get('model.layers.1.self_attn.k_proj')!;
    expect([q.r, q.inFeatures, q.outFeatures, q.scaling]).toEqual([4, 64, 32, 2]);
    const c = new GoldenCase(golden + 'cases/lora_sft__one_image.safetensors', golden);
    const keys = c.names('input.lora.');
    expect(keys.length).toBe(28);
    for (const k of keys) {
      const key = k.slice('input.lora.'.length);
      const m = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(key)!;
      const mod = a.modules.get(m[1])!;
      expect(mod[m[2] as 'A' | 'B'], key).toEqual(c.f32(k));
    }
  });

  it('targets only the text decoder with the golden regex, but vision MLPs too with a plain list (as peft)', () => {
    const cfg = parseAdapterConfig(readFileSync(golden + 'tiny-lora/adapter_config.json', 'utf8'));
    expect(isTargeted(cfg, 'model.layers.0.mlp.gate_proj')).toBe(true);
    expect(isTargeted(cfg, 'visual.blocks.0.mlp.gate_proj')).toBe(false);
    const list: LoraConfig = { ...cfg, targetModules: ['q_proj', 'gate_proj'] };
    expect(isTargeted(list, 'model.layers.0.self_attn.q_proj')).toBe(true);
    expect(isTargeted(list, 'visual.blocks.3.mlp.gate_proj')).toBe(true); // peft suffix semantics
    expect(isTargeted(list, 'model.layers.0.self_attn.k_proj')).toBe(false);
    // regexes written for either layout match
    expect(isTargeted({ ...cfg, targetModules: 'model\\.language_model\\.layers\\.\\d+\\.self_attn\\.q_proj' }, 'model.layers.1.self_attn.q_proj')).toBe(true);
    expect(isTargeted({ ...cfg, targetModules: 'visual\\.blocks\\.\\d+\\.attn\\.qkv' }, 'visual.blocks.1.attn.qkv')).toBe(true);
    expect(isTargeted({ ...cfg, targetModules: ['q_proj'], layersToTransform: [1] }, 'model.layers.0.self_attn.q_proj')).toBe(false);
    expect(isTargeted({ ...cfg, targetModules: ['q_proj'], layersToTransform: [1] }, 'model.layers.1.self_attn.q_proj')).toBe(true);
    expect(isTargeted({ ...cfg, targetModules: ['q_proj', 'k_proj'], excludeModules: '.*layers\\.0\\..*' }, 'model.layers.0.self_attn.k_proj')).toBe(false);
  });
});

describe('LoRA config and init', () => {
  it('builds target regexes for text and vision modules', () => {
    const all = { ...defaultLoraConfig(), targetModules: targetRegex(TEXT_LORA_MODULES, VISION_LORA_MODULES) };
    expect(targetedModules(model, all).length).toBe(linearModules(model).length);
    const text = targetedModules(model, defaultLoraConfig());
    expect(text.length).toBe(14);
    expect(text.every((m) => m.tower === 'text')).toBe(true);
    const qv = targetedModules(model, { ...defaultLoraConfig(), targetModules: targetRegex(['q_proj', 'v_proj'], ['merger.mlp.0', 'attn.qkv']) });
    expect(qv.map((m) => m.name)).toEqual([
      'visual.blocks.0.attn.qkv', 'visual.blocks.1.attn.qkv', 'visual.blocks.2.attn.qkv', 'visual.blocks.3.attn.qkv', 'visual.merger.mlp.0',
      'model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj',
    ]);
    expect(() => targetedModules(model, { ...defaultLoraConfig(), targetModules: ['nothing'] })).toThrow(/matches no linear module/);
  });

  it('scales by alpha/r, alpha/√r with rsLoRA, and follows rank/alpha patterns', () => {
    const base = defaultLoraConfig({ r: 16, loraAlpha: 32 });
    expect(targetedModules(model, base)[0].scaling).toBe(2);
    expect(targetedModules(model, { ...base, useRslora: true })[0].scaling).toBe(8);
    const pat = targetedModules(model, { ...base, rankPattern: { q_proj: 4 }, alphaPattern: { 'layers.1.mlp.down_proj': 4 } });
    expect(pat.find((m) => m.name === 'model.layers.0.self_attn.q_proj')!.r).toBe(4);
    expect(pat.find((m) => m.name === 'model.layers.0.self_attn.k_proj')!.r).toBe(16);
    expect(pat.find((m) => m.name === 'model.layers.1.mlp.down_proj')!.scaling).toBe(4 / 16);
    expect(pat.find((m) => m.name === 'model.layers.0.mlp.down_proj')!.scaling).toBe(2);
  });

  it('initialises as peft: A ~ U(±1/√in) seeded, B = 0', () => {
    const a = initLora(model, defaultLoraConfig({ r: 8 }), 5);
    const b = initLora(model, defaultLoraConfig({ r: 8 }), 5);
    const c = initLora(model, defaultLoraConfig({ r: 8 }), 6);
    const down = a.modules.get('model.layers.0.mlp.down_proj')!;
    expect(down.A.length).toBe(8 * 160);
    const bound = 1 / Math.sqrt(160);
    expect(Math.max(...down.A.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...down.A.map(Math.abs))).toBeGreaterThan(0.9 * bound);
    const mean = down.A.reduce((s, x) => s + x, 0) / down.A.length;
    expect(Math.abs(mean)).toBeLessThan(0.1 * bound);
    expect(down.B.every((x) => x === 0)).toBe(true);
    expect(b.modules.get('model.layers.0.mlp.down_proj')!.A).toEqual(down.A);
    expect(c.modules.get('model.layers.0.mlp.down_proj')!.A).not.toEqual(down.A);
  });
});

describe('save and load', () => {
  const trained = () => {
    const cfg = defaultLoraConfig({ r: 4, loraAlpha: 8, targetModules: targetRegex(TEXT_LORA_MODULES, ['attn.qkv', 'merger.mlp.2']), baseModelNameOrPath: 'Qwen/Qwen2.5-VL-3B-Instruct' });
    const a = initLora(model, cfg, 1);
    let s = 1;
    for (const m of a.modules.values()) m.B.forEach((_, i) => (m.B[i] = Math.sin(s++ * 0.1)));
    return a;
  };

  it('writes the transformers ≥ 4.52 layout by default and reads it back', () => {
    const a = trained();
    const files = saveAdapter(a);
    const st = readSafetensors(files['adapter_model.safetensors']);
    expect(st.metadata).toEqual({ format: 'pt' });
    const keys = [...st.tensors.keys()];
    expect(keys).toContain('base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight');
    expect(keys).toContain('base_model.model.model.visual.blocks.2.attn.qkv.lora_B.weight');
    expect(keys).toContain('base_model.model.model.visual.merger.mlp.2.lora_A.weight');
    expect(st.tensors.get('base_model.model.model.language_model.layers.1.mlp.down_proj.lora_A.weight')).toMatchObject({ dtype: 'F32', shape: [4, 160] });
    expect(st.tensors.get('base_model.model.model.language_model.layers.1.mlp.down_proj.lora_B.weight')).toMatchObject({ dtype: 'F32', shape: [64, 4] });
    const back = parseAdapter(dec(files['adapter_config.json']), files['adapter_model.safetensors'], model);
    expect(back.layout).toBe('transformers');
    expect([...back.modules.keys()]).toEqual([...a.modules.keys()]);
    for (const [n, m] of a.modules) {
      expect(back.modules.get(n)!.A).toEqual(m.A);
      expect(back.modules.get(n)!.B).toEqual(m.B);
    }
  });

  it('writes the old layout on request and reads it back', async () => {
    const a = trained();
    const files = saveAdapter(a, { layout: 'hub' });
    const keys = [...readSafetensors(files['adapter_model.safetensors']).tensors.keys()];
    expect(keys).toContain('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
    expect(keys).toContain('base_model.model.visual.blocks.0.attn.qkv.lora_A.weight');
    expect(keys.some((k) => k.includes('language_model'))).toBe(false);
    const back = await loadAdapter(memorySource(files as unknown as Record<string, Uint8Array>), model);
    expect(back.layout).toBe('hub');
    for (const [n, m] of a.modules) expect(back.modules.get(n)!.B).toEqual(m.B);
    expect(peftKey('visual.merger.mlp.0', 'B', 'hub')).toBe('base_model.model.visual.merger.mlp.0.lora_B.weight');
  });

  it('writes adapter_config.json with peft\'s fields', () => {
    const j = JSON.parse(dec(saveAdapter(trained())['adapter_config.json']));
    expect(j).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 4, lora_alpha: 8, lora_dropout: 0.05, bias: 'none', use_rslora: false, use_dora: false, fan_in_fan_out: false, base_model_name_or_path: 'Qwen/Qwen2.5-VL-3B-Instruct', modules_to_save: null });
    expect(typeof j.target_modules).toBe('string');
    const golden_ = JSON.parse(readFileSync(golden + 'tiny-lora/adapter_config.json', 'utf8'));
    expect(Object.keys(j).sort()).toEqual(Object.keys(golden_).sort());
    const listCfg = adapterConfigJson(defaultLoraConfig({ targetModules: ['v_proj', 'q_proj'] }));
    expect(listCfg.target_modules).toEqual(['q_proj', 'v_proj']);
    expect(parseAdapterConfig(j)).toMatchObject({ r: 4, loraAlpha: 8, targetModules: j.target_modules });
  });

  it('refuses adapters it cannot compute or that do not fit the model, naming the key', () => {
    const files = saveAdapter(trained());
    const cfg = JSON.parse(dec(files['adapter_config.json']));
    const w = files['adapter_model.safetensors'];
    expect(() => parseAdapter({ ...cfg, use_dora: true }, w, model)).toThrow(/use_dora = true: DoRA is not supported/);
    expect(() => parseAdapter({ ...cfg, peft_type: 'IA3' }, w, model)).toThrow(/peft_type "IA3" is not supported/);
    expect(() => parseAdapter({ ...cfg, bias: 'all' }, w, model)).toThrow(/only bias "none"/);
    expect(() => parseAdapter({ ...cfg, modules_to_save: ['lm_head'] }, w, model)).toThrow(/modules_to_save/);
    expect(() => parseAdapter({ ...cfg, r: 8 }, w, model)).toThrow(/lora_A\.weight" has shape \[4,\d+\] but r=8/);
    expect(() => parseAdapter({ ...cfg, target_modules: targetRegex(TEXT_LORA_MODULES) }, w, model)).toThrow(/weights for modules that target_modules does not select: model\.visual\.blocks\.0\.attn\.qkv/);
    expect(() => parseAdapter({ ...cfg, target_modules: targetRegex(TEXT_LORA_MODULES, VISION_LORA_MODULES) }, w, model)).toThrow(/targets \d+ modules but \d+ have no weights: base_model\.model\.model\.visual\.blocks\.0\.attn\.proj\.lora_A\.weight/);
    const st = readSafetensors(w);
    const tensors = [...st.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: bytesToF32(t.bytes, t.dtype) }));
    const bad = writeSafetensors([...tensors, { name: 'base_model.model.lm_head.lora_A.weight', dtype: 'F32', shape: [4, 64], data: new Float32Array(256) }]);
    expect(() => parseAdapter(cfg, bad, model)).toThrow(/"base_model\.model\.lm_head\.lora_A\.weight" adapts "lm_head", which is not a linear module/);
    const noB = writeSafetensors(tensors.filter((t) => t.name !== 'base_model.model.model.language_model.layers.0.mlp.up_proj.lora_B.weight'));
    expect(() => parseAdapter(cfg, noB, model)).toThrow(/"model\.language_model\.layers\.0\.mlp\.up_proj" has lora_A but no lora_B/);
    const emb = writeSafetensors([...tensors, { name: 'base_model.model.model.embed_tokens.lora_embedding_A', dtype: 'F32', shape: [4, 1024], data: new Float32Array(4096) }]);
    expect(() => parseAdapter(cfg, emb, model)).toThrow(/is not a peft LoRA weight/);
    // wrong model: the adapter's in_features do not fit
    const other = parseConfig({ ...JSON.parse(readFileSync(golden + 'tiny-qwen2_5_vl/config.json', 'utf8')), intermediate_size: 96 });
    expect(() => parseAdapter(cfg, w, other)).toThrow(/mlp\.(gate|up)_proj\.lora_B\.weight" has shape \[160,4\] but r=4 and the module's out_features imply \[96,4\]/);
  });
});
