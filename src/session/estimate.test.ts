// The studio's memory estimate (session memoryReport, shown by the Train panel): the base the run
// loads, the BF16 / NF4 figures side by side, and a bitsandbytes 4-bit checkpoint estimated in NF4.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { parseConfig } from '../model/config.ts';
import { defaultLoraConfig } from '../model/lora.ts';
import { bitsandbytesConfig } from '../model/quant.ts';
import { memoryReport } from './estimate.ts';

const RAW = JSON.parse(readFileSync(new URL('../model/fixtures/qwen2_5_vl_3b/config.json', import.meta.url), 'utf8')) as Record<string, unknown>;
const PLAN = { images: [{ height: 448, width: 448 }], textTokens: 64 };

beforeAll(async () => {
  await nodeGpu();
});
afterAll(async () => {
  await closeGpu();
});

describe('memoryReport', () => {
  it('BF16 by default, NF4 when asked; both totals side by side, NF4 well under BF16', () => {
    const cfg = parseConfig(RAW);
    const lora = defaultLoraConfig();
    const bf = memoryReport(cfg, lora, PLAN);
    const nf = memoryReport(cfg, lora, PLAN, { quantize: 'nf4', quantizeVision: true });
    expect(bf.base).toBe('bf16');
    expect(nf.base).toBe('nf4');
    expect(bf.prequantized).toBe(false);
    expect(bf.byPrecision).toEqual(nf.byPrecision);
    expect(bf.totalBytes).toBe(bf.byPrecision.bf16);
    expect(nf.totalBytes).toBe(nf.byPrecision.nf4);
    expect(nf.byPrecision.nf4).toBeLessThan(0.5 * bf.byPrecision.bf16!);
    expect(nf.message).toMatch(/4-bit NF4 base/);
    // the vision tower kept BF16 costs more than quantising it
    expect(memoryReport(cfg, lora, PLAN, { quantize: 'nf4', quantizeVision: false }).totalBytes).toBeGreaterThan(nf.totalBytes);
  });

  it('a bitsandbytes 4-bit checkpoint is NF4 whatever model.quantize says, and has no BF16 figure', () => {
    const cfg = parseConfig({ ...RAW, quantization_config: { quant_method: 'bitsandbytes', ...bitsandbytesConfig() } });
    const r = memoryReport(cfg, defaultLoraConfig(), PLAN);
    expect(r).toMatchObject({ base: 'nf4', prequantized: true });
    expect(r.byPrecision.bf16).toBeUndefined();
    expect(r.totalBytes).toBe(r.byPrecision.nf4);
  });

  it('an unsupported quantization_config does not fit, with the reason', () => {
    const cfg = parseConfig({ ...RAW, quantization_config: { quant_method: 'gptq', bits: 4 } });
    const r = memoryReport(cfg, defaultLoraConfig(), PLAN);
    expect(r.ok).toBe(false);
    expect(r.message).toMatch(/gptq.*not supported/);
  });
});
