// Golden kernel cases: attention_causal_gqa, attention_varlen, log_softmax_gather,
// cross_entropy_masked. Every size comes from the case file.
import { check, checkExact, TOL, type CaseHandler, type GoldenCase } from './golden.ts';
import { fromData, readMany, type Tensor } from '../gpu/tensor.ts';
import { hasGpu } from '../gpu/device.ts';
import { nodeGpu } from '../gpu/node.ts';
import { attentionCausal, attentionCausalBackward, attentionVarlen, attentionVarlenBackward } from '../ops/attention.ts';
import { crossEntropyMasked, crossEntropyMaskedBackward, logSoftmaxGather, logSoftmaxGatherBackward } from '../ops/softmaxGather.ts';

function f32(c: GoldenCase, name: string): Tensor {
  return fromData(c.f32(name), c.shape(name), 'f32', name);
}
function i32(c: GoldenCase, name: string): Tensor {
  return fromData(c.i32(name), c.shape(name), 'i32', name);
}

// The parity CLI may run before anyone created a device.
async function ready(): Promise<void> {
  if (!hasGpu()) await nodeGpu();
}

async function attention(c: GoldenCase, varlen: boolean) {
  await ready();
  const [q, k, v, dy] = ['input.q', 'input.k', 'input.v', 'input.dy'].map((n) => f32(c, n));
  const scale = c.num('scale');
  const cu = varlen ? i32(c, 'input.cu_seqlens') : undefined;
  const opts = { scale, qOffset: varlen ? undefined : c.num('q_offset') };
  const f = cu ? attentionVarlen(q, k, v, cu, opts) : attentionCausal(q, k, v, opts);
  const g = cu ? attentionVarlenBackward(q, k, v, f.out, f.lse, dy, cu, opts) : attentionCausalBackward(q, k, v, f.out, f.lse, dy, opts);
  const [out, dq, dk, dv] = await readMany([f.out, g.dq, g.dk, g.dv]);
  for (const t of [q, k, v, dy, cu, f.out, f.lse, g.dq, g.dk, g.dv]) t?.release();
  return [
    check('out', out, c.f32('expect.out'), TOL.kernel),
    check('dq', dq, c.f32('expect.dq'), TOL.kernel),
    check('dk', dk, c.f32('expect.dk'), TOL.kernel),
    check('dv', dv, c.f32('expect.dv'), TOL.kernel),
  ];
}

export const attentionCases: Record<string, CaseHandler> = {
  attention_causal_gqa: (c) => attention(c, false),
  attention_varlen: (c) => attention(c, true),

  log_softmax_gather: async (c) => {
    await ready();
    const logits = f32(c, 'input.logits'), targets = i32(c, 'input.targets'), dlogp = f32(c, 'input.dlogp');
    const r = logSoftmaxGather(logits, targets);
    const d = logSoftmaxGatherBackward(logits, targets, r.lse, dlogp);
    const [logp, dlogits] = await readMany([r.logp, d]);
    for (const t of [logits, targets, dlogp, r.logp, r.lse, r.argmax, d]) t.release();
    return [check('logp', logp, c.f32('expect.logp'), TOL.kernel), check('dlogits', dlogits, c.f32('expect.dlogits'), TOL.kernel)];
  },

  cross_entropy_masked: async (c) => {
    await ready();
    const logits = f32(c, 'input.logits'), targets = i32(c, 'input.targets');
    const ignore = c.meta.ignore_index !== undefined ? c.num('ignore_index') : -100;
    const r = crossEntropyMasked(logits, targets, ignore);
    const d = crossEntropyMaskedBackward(logits, targets, r, 1, ignore);
    const [loss, stats, dlogits] = await readMany([r.loss, r.stats, d]);
    for (const t of [logits, targets, r.loss, r.stats, r.logp, r.lse, r.argmax, d]) t.release();
    const checks = [check('loss', loss, c.f32('expect.loss'), TOL.kernel), check('dlogits', dlogits, c.f32('expect.dlogits'), TOL.kernel)];
    if (c.meta.num_kept !== undefined) checks.push(checkExact('num_kept', [stats[1]], [c.num('num_kept')]));
    return checks;
  },
};
