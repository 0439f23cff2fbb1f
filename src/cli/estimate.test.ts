// npm run estimate: a folder holding only Qwen2.5-VL-3B-Instruct's config.json, NF4 vs BF16, the
// last line `total: X GiB`, a bitsandbytes 4-bit config estimated in NF4, argument errors at once.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { estimateReport, estimateRequest, parseEstimateArgs, readModelConfig } from './estimate.ts';
import { estimateBasePrecisions } from '../model/memory.ts';

const CFG3B = new URL('../model/fixtures/qwen2_5_vl_3b/config.json', import.meta.url).pathname;
const total = (report: string) => {
  const last = report.trim().split('\n').pop()!;
  const m = /^total: (\d+\.\d\d) GiB$/.exec(last);
  expect(m, last).not.toBeNull();
  return Number(m![1]);
};

describe('npm run estimate', () => {
  it('Qwen2.5-VL-3B from a folder holding only config.json: NF4, 448×448, 64 text tokens, r 16, recompute ≤ 4.0 GiB', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'patchwork-est-'));
    try {
      copyFileSync(CFG3B, join(dir, 'config.json'));
      const cfg = await readModelConfig(dir);
      const argv = ['--model', dir, '--image', '448x448', '--text', '64', '--r', '16', '--recompute'];
      const nf4 = estimateReport(cfg, parseEstimateArgs([...argv, '--quantize', 'nf4']));
      const bf16 = estimateReport(cfg, parseEstimateArgs(argv));
      const noVision = estimateReport(cfg, parseEstimateArgs([...argv, '--quantize', 'nf4', '--no-quantize-vision']));
      console.log(nf4);
      expect(total(nf4)).toBeLessThanOrEqual(4.0);
      expect(total(bf16)).toBeCloseTo(7.68, 1); // the README's BF16 figure
      expect(total(noVision)).toBeGreaterThan(total(nf4));
      expect(total(noVision)).toBeLessThan(total(bf16));
      expect(nf4).toMatch(/NF4/);
      const both = estimateBasePrecisions(estimateRequest(cfg, parseEstimateArgs(argv)));
      expect(both.nf4.totalBytes / 2 ** 30).toBeCloseTo(total(nf4), 2);
      expect(both.bf16.totalBytes / 2 ** 30).toBeCloseTo(total(bf16), 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a bitsandbytes 4-bit config.json is estimated in NF4 without --quantize', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'patchwork-est-'));
    try {
      const j = JSON.parse(readFileSync(CFG3B, 'utf8'));
      j.quantization_config = { quant_method: 'bitsandbytes', load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true };
      writeFileSync(join(dir, 'config.json'), JSON.stringify(j));
      const r = estimateReport(await readModelConfig(dir), parseEstimateArgs(['--model', dir, '--recompute']));
      expect(r).toMatch(/NF4 base/);
      expect(total(r)).toBeLessThanOrEqual(4.0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the built-in tiny model and its --targets', async () => {
    const r = estimateReport(await readModelConfig('tiny'), parseEstimateArgs(['--model', 'tiny', '--quantize', 'nf4', '--targets', 'q_proj,v_proj']));
    expect(r).toMatch(/LoRA: 4 modules/);
    expect(total(r)).toBeGreaterThan(0);
  });

  it('reports every bad argument at once', () => {
    let msg = '';
    try {
      parseEstimateArgs(['--quantize', 'fp4', '--image', '448', '--r', 'x', '--targets', 'qq_proj']);
    } catch (e) {
      msg = (e as Error).message;
    }
    for (const re of [/--model is required/, /--quantize "fp4": only "nf4"/, /--image needs WxH/, /--r needs an integer/, /unknown LoRA target module "qq_proj"/, /usage: npm run estimate/]) expect(msg).toMatch(re);
  });
});
