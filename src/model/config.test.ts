import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ConfigError, configToJson, parseConfig, QWEN2_5_VL_3B_CONFIG_JSON } from './config.ts';

const golden = fileURLToPath(new URL('../../../shared/golden/', import.meta.url));
const clone = <T>(o: T): T => JSON.parse(JSON.stringify(o));

describe('parseConfig', () => {
  it('reads the golden tiny config (published layout, no head_dim)', () => {
    const c = parseConfig(readFileSync(golden + 'tiny-qwen2_5_vl/config.json', 'utf8'));
    expect(c.text).toMatchObject({ hiddenSize: 64, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16, intermediateSize: 160, vocabSize: 1024, tieWordEmbeddings: true, rmsNormEps: 1e-6, ropeTheta: 1e6 });
    expect(c.text.mropeSection).toEqual([2, 3, 3]);
    expect(c.vision).toMatchObject({ depth: 4, hiddenSize: 32, numHeads: 2, headDim: 16, intermediateSize: 64, fullattBlockIndexes: [1, 3], outHiddenSize: 64, windowSize: 112 });
    expect([c.imageTokenId, c.videoTokenId, c.visionStartTokenId, c.visionEndTokenId, c.visionTokenId, c.bosTokenId]).toEqual([1002, 1003, 1000, 1001, 1005, 1006]);
    expect(c.eosTokenIds).toEqual([1004]);
  });

  it('reads the 3B config', () => {
    const c = parseConfig(QWEN2_5_VL_3B_CONFIG_JSON);
    expect(c.text.headDim).toBe(128);
    expect(c.vision.headDim).toBe(80);
    expect(c.text.mropeSection).toEqual([16, 24, 24]);
  });

  it('reads text fields under text_config and rope_parameters (newer transformers)', () => {
    const flat = clone(QWEN2_5_VL_3B_CONFIG_JSON) as Record<string, unknown>;
    const textKeys = ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'rms_norm_eps', 'vocab_size', 'max_position_embeddings', 'hidden_act', 'tie_word_embeddings'];
    const text: Record<string, unknown> = {};
    for (const k of textKeys) {
      text[k] = flat[k];
      delete flat[k];
    }
    text.rope_parameters = { rope_type: 'default', rope_theta: 500000, mrope_section: [16, 24, 24] };
    delete flat.rope_scaling;
    delete flat.rope_theta;
    flat.text_config = text;
    const c = parseConfig(flat);
    expect(c.text.hiddenSize).toBe(2048);
    expect(c.text.ropeTheta).toBe(500000);
    expect(c.text.tieWordEmbeddings).toBe(true);
    expect(c.text.mropeSection).toEqual([16, 24, 24]);
  });

  it('takes head_dim when given and ties only when told', () => {
    const j = clone(QWEN2_5_VL_3B_CONFIG_JSON) as Record<string, unknown>;
    delete j.tie_word_embeddings;
    const c = parseConfig(j);
    expect(c.text.tieWordEmbeddings).toBe(false);
    j.head_dim = 128;
    expect(parseConfig(j).text.headDim).toBe(128);
  });

  it('round-trips through configToJson', () => {
    const c = parseConfig(QWEN2_5_VL_3B_CONFIG_JSON);
    const c2 = parseConfig(configToJson(c));
    expect(c2.text).toEqual(c.text);
    expect(c2.vision).toEqual(c.vision);
  });

  it('rejects other architectures, naming the file and what it found', () => {
    const llama = { model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 64 };
    expect(() => parseConfig(llama, 'my-model/config.json')).toThrow(ConfigError);
    expect(() => parseConfig(llama, 'my-model/config.json')).toThrow(/my-model\/config\.json: model_type "llama" \(architectures: LlamaForCausalLM\) is not Qwen2\.5-VL/);
    const q2 = { ...clone(QWEN2_5_VL_3B_CONFIG_JSON), model_type: 'qwen2_vl', architectures: ['Qwen2VLForConditionalGeneration'] };
    expect(() => parseConfig(q2)).toThrow(/"qwen2_vl".*Qwen2VLForConditionalGeneration.*different vision tower/);
    expect(() => parseConfig('{not json')).toThrow(/config\.json: is not valid JSON/);
    expect(() => parseConfig([1, 2])).toThrow(/not a JSON object/);
  });

  it('names missing and inconsistent fields', () => {
    const miss = (k: string) => {
      const j = clone(QWEN2_5_VL_3B_CONFIG_JSON) as Record<string, unknown>;
      delete j[k];
      return j;
    };
    expect(() => parseConfig(miss('hidden_size'))).toThrow(/required field "hidden_size" is missing/);
    expect(() => parseConfig(miss('vision_config'))).toThrow(/vision_config is missing/);
    expect(() => parseConfig(miss('rope_scaling'))).toThrow(/mrope_section must be a list of 3 integers/);
    const j = clone(QWEN2_5_VL_3B_CONFIG_JSON) as Record<string, any>;
    delete j.vision_config.depth;
    expect(() => parseConfig(j)).toThrow(/"vision_config\.depth" is missing/);
    const bad = clone(QWEN2_5_VL_3B_CONFIG_JSON) as Record<string, any>;
    bad.rope_scaling.mrope_section = [16, 24, 23];
    expect(() => parseConfig(bad)).toThrow(/sums to 63 but the text head dim \/ 2 is 64/);
    const heads = clone(QWEN2_5_VL_3B_CONFIG_JSON) as Record<string, any>;
    heads.num_key_value_heads = 3;
    expect(() => parseConfig(heads)).toThrow(/num_attention_heads 16 is not a multiple of num_key_value_heads 3/);
    const out = clone(QWEN2_5_VL_3B_CONFIG_JSON) as Record<string, any>;
    out.vision_config.out_hidden_size = 3584;
    expect(() => parseConfig(out)).toThrow(/out_hidden_size 3584 must equal the text hidden_size 2048/);
    const fab = clone(QWEN2_5_VL_3B_CONFIG_JSON) as Record<string, any>;
    fab.vision_config.fullatt_block_indexes = [7, 32];
    expect(() => parseConfig(fab)).toThrow(/fullatt_block_indexes must be block indices below depth 32/);
    const typ = clone(QWEN2_5_VL_3B_CONFIG_JSON) as Record<string, any>;
    typ.hidden_size = '2048';
    expect(() => parseConfig(typ)).toThrow(/"hidden_size" must be a non-negative integer, got "2048"/);
  });
});
