// Golden handlers for training (README §10): lora_sft, dpo, grpo. The adapter is the case's own
// input.lora.<peft key> tensors; losses and their d/dlogps come from src/train (the same code the
// trainer runs); gradients come from the GPU backward.
import { readMany } from '../gpu/tensor.ts';
import { canonicalName } from '../model/weights.ts';
import { moduleSpec, linearModules, type LoraAdapter, type LoraConfig, type LoraModule } from '../model/lora.ts';
import type { ImageInput, Qwen2_5_VL } from '../model/qwen2_5_vl.ts';
import { dpoLoss } from '../train/dpo.ts';
import { grpoAdvantages, grpoLoss, type GrpoLossType } from '../train/grpo.ts';
import { sftLoss, sftTargets } from '../train/sft.ts';
import { check, TOL, type CaseHandler, type Check, type GoldenCase } from './golden.ts';
import { goldenModel } from './model.ts';
import { captureVision, captureForward } from '../model/capture.ts';

const KEY = /^base_model\.model\.(.+)\.lora_([AB])(?:\.[A-Za-z0-9_-]+)?\.weight$/;

/** The adapter of a case: modules from input.lora.* keys, r from the shapes, alpha/scaling from the metadata. */
export function caseAdapter(c: GoldenCase, m: Qwen2_5_VL): LoraAdapter {
  const byName = new Map(linearModules(m.config).map((x) => [x.name, x]));
  const found = new Map<string, { A?: Float32Array; B?: Float32Array }>();
  for (const name of c.names('input.lora.')) {
    const key = name.slice('input.lora.'.length);
    const k = KEY.exec(key);
    if (!k) throw new Error(`${c.file}: "${name}" is not a peft LoRA key`);
    const mod = canonicalName(k[1]);
    if (!byName.has(mod)) throw new Error(`${c.file}: "${name}" adapts "${k[1]}", not a linear module of the model`);
    const e = found.get(mod) ?? {};
    e[k[2] as 'A' | 'B'] = c.f32(name);
    found.set(mod, e);
  }
  if (!found.size) throw new Error(`${c.file}: no input.lora.* tensors`);
  const firstA = c.names('input.lora.').find((n) => n.endsWith('lora_A.weight'))!;
  const r = c.shape(firstA)[0];
  const alpha = c.meta.lora_alpha !== undefined ? c.num('lora_alpha') : r;
  const cfg: LoraConfig = { r, loraAlpha: alpha, loraDropout: c.meta.lora_dropout !== undefined ? c.num('lora_dropout') : 0, targetModules: [...found.keys()], useRslora: false };
  const modules = new Map<string, LoraModule>();
  for (const [name, e] of found) {
    const base = byName.get(name)!;
    const rr = c.shape(`input.lora.base_model.model.${keyModule(c, name)}.lora_A.weight`)[0];
    const spec = moduleSpec({ ...cfg, r: rr }, base);
    if (c.meta.lora_scaling !== undefined) spec.scaling = c.num('lora_scaling');
    if (!e.A || !e.B) throw new Error(`${c.file}: module ${name} lacks lora_${e.A ? 'B' : 'A'}`);
    modules.set(name, { ...spec, A: e.A, B: e.B });
  }
  return { config: cfg, modules };
}

/** The module spelling the case uses for a canonical module name. */
function keyModule(c: GoldenCase, canonical: string): string {
  for (const n of c.names('input.lora.')) {
    const k = KEY.exec(n.slice('input.lora.'.length));
    if (k && canonicalName(k[1]) === canonical) return k[1];
  }
  throw new Error(`${c.file}: no key for ${canonical}`);
}

async function setup(c: GoldenCase): Promise<{ m: Qwen2_5_VL; images: ImageInput }> {
  const m = await goldenModel(c);
  m.setAdapter(caseAdapter(c, m));
  m.zeroGrads();
  return { m, images: { pixelValues: c.f32('input.pixel_values'), imageGridThw: c.i32('input.image_grid_thw') } };
}

/** One check per expect.<prefix><key> tensor against the model's gradient of that module. */
async function gradChecks(c: GoldenCase, m: Qwen2_5_VL, prefix: string, label = prefix.replace(/\.$/, '')): Promise<Check[]> {
  const params = m.loraParams();
  const grads = await readMany(params.map((p) => p.grad));
  const byKey = new Map<string, Float32Array>();
  params.forEach((p, i) => {
    const k = KEY.exec(p.name)!;
    byKey.set(`${canonicalName(k[1])}|${k[2]}`, grads[i] as Float32Array);
  });
  const names = c.names(prefix);
  if (!names.length) throw new Error(`${c.file}: no ${prefix}* tensors`);
  return names.map((n) => {
    const k = KEY.exec(n.slice(prefix.length));
    const got = k ? byKey.get(`${canonicalName(k[1])}|${k[2]}`) : undefined;
    return check(`${label}.${n.slice(prefix.length)}`, got ?? [], c.f32(n), TOL.grad);
  });
}

async function imageEmbedsCheck(c: GoldenCase, m: Qwen2_5_VL, images: ImageInput): Promise<Check[]> {
  if (!c.has('expect.image_embeds')) return [];
  const r = await captureVision(m, images);
  return [check('image_embeds', r.imageEmbeds, c.f32('expect.image_embeds'), TOL.vision)];
}

async function loraSftCase(c: GoldenCase): Promise<Check[]> {
  const { m, images } = await setup(c);
  const ids = c.i32('input.input_ids'), labels = c.i32('input.labels');
  const L = ids.length;
  const { targets, mask } = sftTargets(labels);
  for (let t = 0; t < L - 1; t++) if (mask[t] && targets[t] !== ids[t + 1]) throw new Error(`${c.file}: labels[${t + 1}] = ${targets[t]} differs from input_ids[${t + 1}] = ${ids[t + 1]}`);
  // logp of ids[1..L-1]; the loss keeps the labelled ones
  const r = await m.logps({ inputIds: ids, images, scoreStart: 1 }, { lora: true, train: true });
  const loss = sftLoss({ logps: r.logps, mask, hits: r.hits });
  m.backward(Float32Array.from(loss.dlogps));
  const nll = Float32Array.from(r.logps, (lp, t) => (mask[t] ? -lp : 0));
  const cap = await captureForward(m, { inputIds: ids, images }, { lora: true, logits: true });
  const checks = [
    ...(await imageEmbedsCheck(c, m, images)),
    check('logits', cap.logits!, c.f32('expect.logits'), TOL.model),
    check('per_token_nll', nll, c.f32('expect.per_token_nll'), TOL.train),
    check('loss', [loss.loss], c.f32('expect.loss'), TOL.train),
    check('num_loss_tokens', [loss.numKept], [c.num('num_loss_tokens')], { atol: 0, rtol: 0 }),
    ...(await gradChecks(c, m, 'expect.grad.')),
  ];
  return checks;
}

const cat = (a: Int32Array, b: Int32Array) => {
  const o = new Int32Array(a.length + b.length);
  o.set(a);
  o.set(b, a.length);
  return o;
};
const sum = (a: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  return s;
};

async function dpoCase(c: GoldenCase): Promise<Check[]> {
  const { m, images } = await setup(c);
  const prompt = c.i32('input.prompt_ids'), P = prompt.length;
  const chosen = { inputIds: cat(prompt, c.i32('input.chosen_ids')), images, scoreStart: P };
  const rejected = { inputIds: cat(prompt, c.i32('input.rejected_ids')), images, scoreStart: P };
  const refC = await m.logps(chosen, { lora: false, train: false });
  const refR = await m.logps(rejected, { lora: false, train: false });
  const polC = await m.logps(chosen, { lora: true, train: true });
  const polR = await m.logps(rejected, { lora: true, train: true });
  const lossType = (c.meta.loss_type ?? 'sigmoid') as 'sigmoid';
  const d = dpoLoss({ policyChosen: [polC.logps], policyRejected: [polR.logps], refChosen: [refC.logps], refRejected: [refR.logps] },
    { beta: c.num('beta'), lossType, labelSmoothing: c.meta.label_smoothing !== undefined ? c.num('label_smoothing') : 0 });
  m.backward(Float32Array.from(d.dRejected[0])); // last train forward first
  m.backward(Float32Array.from(d.dChosen[0]));
  return [
    ...(await imageEmbedsCheck(c, m, images)),
    check('policy_chosen_token_logps', polC.logps, c.f32('expect.policy_chosen_token_logps'), TOL.train),
    check('policy_rejected_token_logps', polR.logps, c.f32('expect.policy_rejected_token_logps'), TOL.train),
    check('ref_chosen_token_logps', refC.logps, c.f32('expect.ref_chosen_token_logps'), TOL.train),
    check('ref_rejected_token_logps', refR.logps, c.f32('expect.ref_rejected_token_logps'), TOL.train),
    check('policy_chosen_logps', [sum(polC.logps)], c.f32('expect.policy_chosen_logps'), TOL.train),
    check('policy_rejected_logps', [sum(polR.logps)], c.f32('expect.policy_rejected_logps'), TOL.train),
    check('ref_chosen_logps', [sum(refC.logps)], c.f32('expect.ref_chosen_logps'), TOL.train),
    check('ref_rejected_logps', [sum(refR.logps)], c.f32('expect.ref_rejected_logps'), TOL.train),
    check('loss', [d.loss], c.f32('expect.loss'), TOL.train),
    check('chosen_rewards', d.chosenRewards, c.f32('expect.chosen_rewards'), TOL.train),
    check('rejected_rewards', d.rejectedRewards, c.f32('expect.rejected_rewards'), TOL.train),
    ...(await gradChecks(c, m, 'expect.grad.')),
  ];
}

async function grpoCase(c: GoldenCase): Promise<Check[]> {
  const { m, images } = await setup(c);
  const prompt = c.i32('input.prompt_ids'), P = prompt.length;
  const [G, T] = c.shape('input.completion_ids');
  if (c.meta.num_generations !== undefined && c.num('num_generations') !== G) throw new Error(`${c.file}: num_generations ${c.meta.num_generations} but completion_ids has ${G} rows`);
  const comp = c.i32('input.completion_ids'), mask = c.i32('input.completion_mask'), rewards = c.f32('input.rewards');
  const seqs = Array.from({ length: G }, (_, g) => {
    let n = 0;
    for (let t = 0; t < T; t++) n += mask[g * T + t] ? 1 : 0;
    return { inputIds: cat(prompt, comp.subarray(g * T, g * T + n)), images, scoreStart: P, n };
  });
  const grid = (rows: Float32Array[]) => {
    const o = new Float32Array(G * T);
    rows.forEach((r, g) => o.set(r, g * T));
    return o;
  };
  const refRows: Float32Array[] = [];
  for (const s of seqs) refRows.push((await m.logps(s, { lora: false, train: false })).logps);
  const ref = grid(refRows);
  const policyForwards = async () => {
    const out: Float32Array[] = [];
    for (const s of seqs) out.push((await m.logps(s, { lora: true, train: true })).logps);
    return grid(out);
  };
  const scale = (c.meta.scale_rewards ?? 'group') as 'group';
  const { advantages } = grpoAdvantages(rewards, G, { scaleRewards: scale });
  const offPolicy = c.meta.old_logps === 'given';
  const cfg = { beta: c.num('beta'), epsilon: c.num('epsilon'), epsilonHigh: c.meta.epsilon_high !== undefined ? c.num('epsilon_high') : undefined, maxCompletionLength: c.meta.max_completion_length !== undefined ? c.num('max_completion_length') : T };
  const run = (logps: Float32Array, lossType: GrpoLossType) => grpoLoss({ logps, mask, advantages, cols: T, refLogps: ref, oldLogps: offPolicy ? c.f32('input.old_per_token_logps') : undefined }, { ...cfg, lossType });
  const backwardAll = (dlogps: Float64Array) => {
    for (let g = G - 1; g >= 0; g--) m.backward(Float32Array.from(dlogps.subarray(g * T, g * T + seqs[g].n)));
  };

  const logps = await policyForwards();
  const grpo = run(logps, 'grpo');
  backwardAll(grpo.dlogps);
  const checks: Check[] = [
    ...(await imageEmbedsCheck(c, m, images)),
    check('advantages', advantages, c.f32('expect.advantages'), TOL.train),
    check('per_token_logps', logps, c.f32('expect.per_token_logps'), TOL.train, mask),
    check('ref_per_token_logps', ref, c.f32('expect.ref_per_token_logps'), TOL.train, mask),
    // README §10 defines the KL whatever beta is (grpoLoss skips it when beta = 0)
    check('per_token_kl', logps.map((lp, i) => (mask[i] ? Math.exp(ref[i] - lp) - (ref[i] - lp) - 1 : 0)), c.f32('expect.per_token_kl'), TOL.train, mask),
    check('per_token_loss', grpo.perTokenLoss, c.f32('expect.per_token_loss'), TOL.train, mask),
    check('loss_grpo', [grpo.loss], c.f32('expect.loss_grpo'), TOL.train),
    check('loss_bnpo', [run(logps, 'bnpo').loss], c.f32('expect.loss_bnpo'), TOL.train),
    check('loss_dr_grpo', [run(logps, 'dr_grpo').loss], c.f32('expect.loss_dr_grpo'), TOL.train),
    ...(await gradChecks(c, m, 'expect.grad_grpo.')),
  ];
  // the bnpo gradient: fresh grads, forwards again (each backward consumed its activations)
  m.zeroGrads();
  const logps2 = await policyForwards();
  backwardAll(run(logps2, 'bnpo').dlogps);
  checks.push(...(await gradChecks(c, m, 'expect.grad_bnpo.')));
  return checks;
}

export const trainCases: Record<string, CaseHandler> = {
  lora_sft: loraSftCase,
  dpo: dpoCase,
  grpo: grpoCase,
};
