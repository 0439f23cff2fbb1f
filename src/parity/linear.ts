// Golden handlers for the matmul family: lora_linear and conv3d_patch_embed (README §9).
// Every size comes from the tensors and metadata of the case.
import { nodeGpu } from '../gpu/node.ts';
import { fromData, readMany, type Tensor } from '../gpu/tensor.ts';
import { loraLinear, loraLinearBackward } from '../ops/lora.ts';
import { patchEmbed, patchEmbedBackward } from '../ops/patchEmbed.ts';
import { check, TOL, type CaseHandler, type GoldenCase } from './golden.ts';

function load(c: GoldenCase, name: string): Tensor {
  return fromData(c.f32(name), c.shape(name), 'f32', name);
}

async function loraLinearCase(c: GoldenCase) {
  await nodeGpu();
  const x = load(c, 'input.x'), weight = load(c, 'input.weight');
  const loraA = load(c, 'input.lora_A'), loraB = load(c, 'input.lora_B'), dy = load(c, 'input.dy');
  const hasBias = c.meta.has_bias !== undefined ? c.num('has_bias') === 1 : c.has('input.bias');
  const bias = hasBias ? load(c, 'input.bias') : undefined;
  const r = c.shape('input.lora_A')[0];
  const scaling = c.meta.lora_scaling !== undefined ? c.num('lora_scaling') : c.num('lora_alpha') / r;
  const l = { weight, bias, loraA, loraB, scaling };
  const { y, xa } = loraLinear(x, l);
  const { dx, dA, dB } = loraLinearBackward(dy, x, xa!, l);
  const [gy, gdx, gdA, gdB] = await readMany([y, dx!, dA, dB]);
  for (const t of [x, weight, loraA, loraB, dy, y, xa!, dx!, dA, dB, ...(bias ? [bias] : [])]) t.release();
  return [
    check('y', gy, c.f32('expect.y'), TOL.kernel),
    check('dx', gdx, c.f32('expect.dx'), TOL.kernel),
    check('dlora_A', gdA, c.f32('expect.dlora_A'), TOL.kernel),
    check('dlora_B', gdB, c.f32('expect.dlora_B'), TOL.kernel),
  ];
}

async function conv3dPatchEmbedCase(c: GoldenCase) {
  await nodeGpu();
  const pv = load(c, 'input.pixel_values'), weight = load(c, 'input.weight'), dy = load(c, 'input.dy');
  const out = patchEmbed(pv, weight);
  const { dweight, dpixelValues } = patchEmbedBackward(dy, pv, weight);
  const [go, gdw, gdp] = await readMany([out, dweight!, dpixelValues!]);
  for (const t of [pv, weight, dy, out, dweight!, dpixelValues!]) t.release();
  return [
    check('out', go, c.f32('expect.out'), TOL.kernel),
    check('dweight', gdw, c.f32('expect.dweight'), TOL.kernel),
    check('dpixel_values', gdp, c.f32('expect.dpixel_values'), TOL.kernel),
  ];
}

export const linearCases: Record<string, CaseHandler> = {
  lora_linear: loraLinearCase,
  conv3d_patch_embed: conv3dPatchEmbedCase,
};
