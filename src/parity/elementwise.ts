// Golden kernel cases: rmsnorm, swiglu, gelu_exact, mrope_apply, vision_rope_apply (README §7-§9).
// Every size and hyper-parameter comes from the case file.
import { check, checkExact, TOL, type CaseHandler, type Check, type GoldenCase } from './golden.ts';
import { hasGpu } from '../gpu/device.ts';
import { nodeGpu } from '../gpu/node.ts';
import { fromData, readMany, type Tensor } from '../gpu/tensor.ts';
import { rmsnorm, rmsnormBackward } from '../ops/rmsnorm.ts';
import { swiglu, swigluBackward } from '../ops/swiglu.ts';
import { gelu, geluBackward } from '../ops/gelu.ts';
import { mropeTables, ropeApply, ropeBackward, visionRopeTables, type RopeTables } from '../ops/rope.ts';
import { expandHalf, visionPatchPos, visionRopeFreqs } from '../ops/cpu/rope.ts';

function f32(c: GoldenCase, name: string): Tensor {
  return fromData(c.f32(name), c.shape(name), 'f32', name);
}

// The parity CLI may run before anyone created a device.
async function ready(): Promise<void> {
  if (!hasGpu()) await nodeGpu();
}

async function rope(c: GoldenCase, t: RopeTables, extra: Check[]): Promise<Check[]> {
  const x = f32(c, 'input.x'), dy = f32(c, 'input.dy');
  const out = ropeApply(x, t), dx = ropeBackward(dy, t);
  const [o, d, cos, sin] = await readMany([out, dx, t.cos, t.sin]);
  for (const r of [x, dy, out, dx, t.cos, t.sin]) r.release();
  const checks = [...extra, check('out', o, c.f32('expect.out'), TOL.kernel), check('dx', d, c.f32('expect.dx'), TOL.kernel)];
  if (c.has('expect.cos')) {
    const half = c.shape('expect.cos')[1] / 2;
    checks.unshift(check('cos', expandHalf(cos, half), c.f32('expect.cos'), TOL.kernel), check('sin', expandHalf(sin, half), c.f32('expect.sin'), TOL.kernel));
  }
  return checks;
}

export const elementwiseCases: Record<string, CaseHandler> = {
  async rmsnorm(c) {
    await ready();
    const x = f32(c, 'input.x'), w = f32(c, 'input.weight'), dyT = f32(c, 'input.dy');
    const { y, rstd } = rmsnorm(x, w, c.num('eps'));
    const { dx, dweight } = rmsnormBackward(dyT, x, w, rstd, { dweight: true });
    const [gy, gdx, gdw] = await readMany([y, dx, dweight!]);
    for (const t of [x, w, dyT, y, rstd, dx, dweight!]) t.release();
    return [check('y', gy, c.f32('expect.y'), TOL.kernel), check('dx', gdx, c.f32('expect.dx'), TOL.kernel), check('dweight', gdw, c.f32('expect.dweight'), TOL.kernel)];
  },

  async swiglu(c) {
    await ready();
    const g = f32(c, 'input.gate'), u = f32(c, 'input.up'), dyT = f32(c, 'input.dy');
    const y = swiglu(g, u);
    const { dgate, dup } = swigluBackward(dyT, g, u);
    const [gy, gdg, gdu] = await readMany([y, dgate, dup]);
    for (const t of [g, u, dyT, y, dgate, dup]) t.release();
    return [check('y', gy, c.f32('expect.y'), TOL.kernel), check('dgate', gdg, c.f32('expect.dgate'), TOL.kernel), check('dup', gdu, c.f32('expect.dup'), TOL.kernel)];
  },

  async gelu_exact(c) {
    await ready();
    const x = f32(c, 'input.x'), dyT = f32(c, 'input.dy');
    const y = gelu(x), dx = geluBackward(dyT, x);
    const [gy, gdx] = await readMany([y, dx]);
    for (const t of [x, dyT, y, dx]) t.release();
    return [check('y', gy, c.f32('expect.y'), TOL.kernel), check('dx', gdx, c.f32('expect.dx'), TOL.kernel)];
  },

  async mrope_apply(c) {
    await ready();
    const [L, , D] = c.shape('input.x');
    const headDim = c.meta.head_dim !== undefined ? c.num('head_dim') : D;
    const section = c.meta.mrope_section.split(',').map(Number);
    return rope(c, mropeTables(c.i32('input.position_ids'), L, section, c.num('rope_theta'), headDim), []);
  },

  async vision_rope_apply(c) {
    await ready();
    const hd = c.shape('input.x')[2];
    const theta = c.meta.theta !== undefined ? c.num('theta') : 10000;
    const pos = visionPatchPos(c.i32('input.image_grid_thw'), c.num('spatial_merge_size'));
    const n = c.shape('input.x')[0];
    const checks: Check[] = [checkExact('patch count', [pos.length / 2], [n])];
    if (c.has('expect.freqs')) checks.push(check('freqs', visionRopeFreqs(pos, hd, theta), c.f32('expect.freqs'), TOL.kernel));
    return rope(c, visionRopeTables(pos, hd, theta), checks);
  },
};
