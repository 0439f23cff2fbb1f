// The studio's DPO against trl's DPOTrainer (the cluster bundle's trainer) on a fixed batch: the same
// prompt and completion token ids (trl scores answer + <|im_end|> + "\n"), the same summed log-probs of
// policy and reference (adapter off), the same loss. Reference: scripts/dpo_reference.py (trl on CPU,
// the built-in tiny model, the adapter in fixtures/dpo/), committed as fixtures/dpo/reference.json.
import { beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { nodeGpu } from '../gpu/node.ts';
import { Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import { tinySource } from '../model/tiny.ts';
import { loadDefaultTokenizer, type QwenTokenizer } from '../data/tokenizer.ts';
import { buildPrompt, type ChatMessage } from '../data/template.ts';
import { completionIds, dpoLoss } from './dpo.ts';
import { Trainer } from './trainer.ts';
import { trainOptionsOf } from '../session/run.ts';
import { DEFAULT_CONFIG } from '../config/config.ts';
import { loadAdapterFiles } from '../model/adapterFiles.ts';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/dpo/${name}`, import.meta.url));
interface Ref {
  beta: number;
  pairs: { prompt: ChatMessage[]; chosen: { content: string }[]; rejected: { content: string }[] }[];
  prompt_ids: number[][];
  chosen_ids: number[][];
  rejected_ids: number[][];
  policy_chosen_logps: number[];
  policy_rejected_logps: number[];
  reference_chosen_logps: number[];
  reference_rejected_logps: number[];
  loss: number;
  metrics: Record<string, number>;
}
const ref = JSON.parse(fixture('reference.json').toString()) as Ref;

let model: Qwen2_5_VL;
let tok: QwenTokenizer;
beforeAll(async () => {
  await nodeGpu();
  tok = await loadDefaultTokenizer();
  model = await Qwen2_5_VL.load(tinySource());
  await loadAdapterFiles(model, { 'adapter_config.json': fixture('adapter_config.json'), 'adapter_model.safetensors': new Uint8Array(fixture('adapter_model.safetensors')) });
});

/** f32 GPU sums of ~30 log-probs vs torch's: equal to a few parts in 1e5 */
const close = (got: number, want: number) => expect(Math.abs(got - want), `${got} vs ${want}`).toBeLessThanOrEqual(2e-5 * Math.abs(want) + 2e-3);

describe('DPO parity with trl', () => {
  it('scores exactly the tokens trl scores: same prompt ids, completion = answer + <|im_end|> + "\\n"', () => {
    ref.pairs.forEach((p, i) => {
      expect(Array.from(buildPrompt({ messages: p.prompt, tokenizer: tok }).inputIds), `prompt ${i}`).toEqual(ref.prompt_ids[i]);
      expect(completionIds(tok, p.chosen[0].content), `chosen ${i}`).toEqual(ref.chosen_ids[i]);
      expect(completionIds(tok, p.rejected[0].content), `rejected ${i}`).toEqual(ref.rejected_ids[i]);
    });
    // and the Trainer encodes a DPO example into exactly those sequences, scored from the completion
    const examples = ref.pairs.map((p) => ({ kind: 'dpo' as const, images: [], prompt: p.prompt, chosen: p.chosen[0].content, rejected: p.rejected[0].content }));
    const t = new Trainer(model, tok, examples, trainOptionsOf({ ...DEFAULT_CONFIG, method: 'dpo' }));
    try {
      ref.pairs.forEach((_, i) => {
        const e = (t as unknown as { encode(i: number): { chosen: { inputIds: Int32Array; scoreStart: number }; rejected: { inputIds: Int32Array; scoreStart: number } } }).encode(i);
        expect(Array.from(e.chosen.inputIds)).toEqual([...ref.prompt_ids[i], ...ref.chosen_ids[i]]);
        expect(e.chosen.scoreStart).toBe(ref.prompt_ids[i].length);
        expect(Array.from(e.rejected.inputIds)).toEqual([...ref.prompt_ids[i], ...ref.rejected_ids[i]]);
      });
    } finally {
      t.dispose();
    }
  });

  it('the same log-probs and loss as trl on the fixed batch', async () => {
    const lp = async (prompt: number[], completion: number[], lora: boolean) =>
      (await model.logps({ inputIds: Int32Array.from([...prompt, ...completion]), scoreStart: prompt.length }, { lora, train: false })).logps;
    const pc: Float32Array[] = [], pr: Float32Array[] = [], rc: Float32Array[] = [], rr: Float32Array[] = [];
    for (let i = 0; i < ref.pairs.length; i++) {
      pc.push(await lp(ref.prompt_ids[i], ref.chosen_ids[i], true));
      pr.push(await lp(ref.prompt_ids[i], ref.rejected_ids[i], true));
      rc.push(await lp(ref.prompt_ids[i], ref.chosen_ids[i], false));
      rr.push(await lp(ref.prompt_ids[i], ref.rejected_ids[i], false));
    }
    const sum = (a: Float32Array) => a.reduce((s, v) => s + v, 0);
    ref.pairs.forEach((_, i) => {
      close(sum(pc[i]), ref.policy_chosen_logps[i]);
      close(sum(pr[i]), ref.policy_rejected_logps[i]);
      close(sum(rc[i]), ref.reference_chosen_logps[i]);
      close(sum(rr[i]), ref.reference_rejected_logps[i]);
    });
    const res = dpoLoss({ policyChosen: pc, policyRejected: pr, refChosen: rc, refRejected: rr }, { beta: ref.beta });
    expect(Math.abs(res.loss - ref.loss)).toBeLessThan(1e-4);
    expect(Math.abs(res.metrics['rewards/chosen'] - ref.metrics['rewards/chosen'])).toBeLessThan(1e-3);
    expect(Math.abs(res.metrics['rewards/margins'] - ref.metrics['rewards/margins'])).toBeLessThan(1e-3);
  });
});
