import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, readMany, zeros } from '../gpu/tensor.ts';
import { GoldenCase } from '../parity/golden.ts';
import { mropeTables, ropeApply, ropeBackward, visionRopeTables } from './rope.ts';
import { mropeCosSin, ropeApplyCpu, ropeBackwardCpu, visionCosSin, visionPatchPos, visionRopeFreqs, windowOrderPatchPos } from './cpu/rope.ts';
import { rand, expectClose } from './testUtil.ts';

/** position_ids [3, L] as rope_index makes them: text, then a gh×gw image block, then text */
function positions(L: number, gh: number, gw: number): Int32Array {
  const p = new Int32Array(3 * L);
  let cur = 0, l = 0;
  for (; l < 3 && l < L; l++, cur++) for (let s = 0; s < 3; s++) p[s * L + l] = cur;
  for (let r = 0; r < gh && l < L; r++) for (let c = 0; c < gw && l < L; c++, l++) { p[l] = cur; p[L + l] = cur + r; p[2 * L + l] = cur + c; }
  cur += Math.max(gh, gw);
  for (; l < L; l++, cur++) for (let s = 0; s < 3; s++) p[s * L + l] = cur;
  return p;
}

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

describe('rope tables (CPU)', () => {
  it('text-only M-RoPE is plain 1-D RoPE', () => {
    const L = 9, D = 16, pos = new Int32Array(3 * L);
    for (let s = 0; s < 3; s++) for (let l = 0; l < L; l++) pos[s * L + l] = l + 100;
    const { cos, sin } = mropeCosSin(pos, L, [2, 3, 3], 1e6, D);
    for (let l = 0; l < L; l++) for (let j = 0; j < D / 2; j++) {
      expect(cos[l * 8 + j]).toBeCloseTo(Math.cos((l + 100) * 1e6 ** (-2 * j / D)), 7);
      expect(sin[l * 8 + j]).toBeCloseTo(Math.sin((l + 100) * 1e6 ** (-2 * j / D)), 7);
    }
  });

  it('M-RoPE frequency j uses position stream 0 / 1 / 2 by mrope_section', () => {
    const L = 2, pos = Int32Array.from([1, 2, 10, 20, 100, 200]);
    const { sin } = mropeCosSin(pos, L, [1, 1, 2], 1, 8); // theta 1: angle = position
    expect(Array.from(sin.slice(0, 4))).toEqual(Array.from([1, 10, 100, 100].map((a) => Math.fround(Math.sin(a)))));
  });

  it('rejects a section that does not sum to D/2', () => {
    expect(() => mropeCosSin(new Int32Array(3), 1, [2, 3, 4], 1e6, 16)).toThrow(/mrope_section \[2,3,4\].*8/);
  });

  it('visionPatchPos follows patchified order (t, h/2, w/2, 2, 2)', () => {
    const p = visionPatchPos([2, 2, 4], 2);
    expect(Array.from(p.slice(0, 16))).toEqual([0, 0, 0, 1, 1, 0, 1, 1, 0, 2, 0, 3, 1, 2, 1, 3]);
    expect(Array.from(p.slice(16))).toEqual(Array.from(p.slice(0, 16))); // repeated per frame
    expect(() => visionPatchPos([1, 3, 4], 2)).toThrow(/merge size 2/);
  });

  it('windowOrderPatchPos moves 4-row groups by window_index', () => {
    const p = visionPatchPos([1, 2, 4], 2); // 2 merged tokens
    expect(Array.from(windowOrderPatchPos(p, [1, 0]))).toEqual([...p.slice(8), ...p.slice(0, 8)]);
  });

  it('vision freqs: row·inv[k] then col·inv[k], inv[k] = θ^(−2k/(hd/2))', () => {
    const f = visionRopeFreqs([3, 5], 16, 10000);
    for (let k = 0; k < 4; k++) {
      expect(f[k]).toBeCloseTo(3 * 10000 ** (-2 * k / 8), 6);
      expect(f[4 + k]).toBeCloseTo(5 * 10000 ** (-2 * k / 8), 6);
    }
  });

  const golden = resolve(process.cwd(), '../shared/golden');
  const wi = existsSync(join(golden, 'cases')) ? readdirSync(join(golden, 'cases')).filter((f) => f.startsWith('vision_window_index__')).map((f) => join(golden, 'cases', f)) : [];
  it.skipIf(!wi.length)('visionPatchPos = golden patch_pos of every vision_window_index case', () => {
    for (const f of wi) {
      const c = new GoldenCase(f, golden);
      expect(Array.from(visionPatchPos(c.i32('input.image_grid_thw'), c.num('spatial_merge_size'))), c.file).toEqual(Array.from(c.i32('expect.patch_pos')));
    }
  });

  it('backward is the adjoint of forward: <R x, dy> = <x, Rᵀ dy>', () => {
    const L = 5, H = 3, D = 12;
    const { cos, sin } = mropeCosSin(positions(L, 2, 2), L, [2, 2, 2], 1e4, D);
    const x = rand(L * H * D, 1), dy = rand(L * H * D, 2);
    const y = ropeApplyCpu(x, cos, sin, H, D), dx = ropeBackwardCpu(dy, cos, sin, H, D);
    const a = y.reduce((s, v, i) => s + v * dy[i], 0), b = dx.reduce((s, v, i) => s + v * x[i], 0);
    expect(Math.abs(a - b)).toBeLessThan(1e-5);
    // and a finite difference of that linear loss in one coordinate
    const i = 17, h = 0.25, xp = Float32Array.from(x), xm = Float32Array.from(x);
    xp[i] += h; xm[i] -= h;
    const lp = ropeApplyCpu(xp, cos, sin, H, D).reduce((s, v, k) => s + v * dy[k], 0);
    const lm = ropeApplyCpu(xm, cos, sin, H, D).reduce((s, v, k) => s + v * dy[k], 0);
    expect((lp - lm) / (xp[i] - xm[i])).toBeCloseTo(dx[i], 5);
  });
});

describe('rope apply (GPU)', () => {
  const text: [number, number, number, number[]][] = [[7, 3, 16, [2, 3, 3]], [33, 2, 128, [16, 24, 24]], [40, 5, 24, [4, 4, 4]]];
  for (const [L, H, D, sec] of text) {
    it(`M-RoPE GPU = CPU, x [${L}, ${H}, ${D}], section [${sec}]`, async () => {
      const pos = positions(L, 4, 6);
      const t = mropeTables(pos, L, sec, 1e6, D);
      const { cos, sin } = mropeCosSin(pos, L, sec, 1e6, D);
      const x = rand(L * H * D, L + H), dy = rand(L * H * D, 3 * L);
      const tx = fromData(x, [L, H, D]), tdy = fromData(dy, [L, H, D]);
      const out = ropeApply(tx, t), dx = ropeBackward(tdy, t);
      const [go, gdx, gc, gs] = await readMany([out, dx, t.cos, t.sin]);
      expect(out.shape).toEqual([L, H, D]);
      expectClose(gc, cos, 'cos', 0, 0);
      expectClose(gs, sin, 'sin', 0, 0);
      expectClose(go, ropeApplyCpu(x, cos, sin, H, D), 'out');
      expectClose(gdx, ropeBackwardCpu(dy, cos, sin, H, D), 'dx');
      for (const r of [tx, tdy, out, dx, t.cos, t.sin]) r.release();
    });
  }

  for (const [grid, H, hd] of [[[1, 6, 8], 3, 16], [[2, 4, 2], 1, 80]] as [number[], number, number][]) {
    it(`vision rotary GPU = CPU, grid [${grid}], ${H} heads × ${hd}`, async () => {
      const pos = visionPatchPos(grid, 2), N = pos.length / 2;
      const t = visionRopeTables(pos, hd);
      const { cos, sin } = visionCosSin(pos, hd);
      const x = rand(N * H * hd, N), dy = rand(N * H * hd, N + 1);
      const tx = fromData(x, [N, H, hd]), tdy = fromData(dy, [N, H, hd]);
      const out = ropeApply(tx, t), dx = ropeBackward(tdy, t);
      const [go, gdx] = await readMany([out, dx]);
      expectClose(go, ropeApplyCpu(x, cos, sin, H, hd), 'out');
      expectClose(gdx, ropeBackwardCpu(dy, cos, sin, H, hd), 'dx');
      for (const r of [tx, tdy, out, dx, t.cos, t.sin]) r.release();
    });
  }

  it('reads q/k from a fused qkv [N, 3·H·D] and writes dq/dk into a fused gradient', async () => {
    const N = 11, H = 3, D = 16, W = 3 * H * D;
    const pos = visionPatchPos([1, 2, 6], 2).slice(0, 2 * N);
    const t = visionRopeTables(pos, D);
    const { cos, sin } = visionCosSin(pos, D);
    const qkv = rand(N * W, 5), tqkv = fromData(qkv, [N, W]);
    const q = ropeApply(tqkv, t, { heads: H, offset: 0, rowStride: W });
    const k = ropeApply(tqkv, t, { heads: H, offset: H * D, rowStride: W });
    const dqkv = zeros([N, W]);
    ropeBackward(tqkv, t, { heads: H, offset: 0, rowStride: W, out: dqkv, outOffset: 0, outRowStride: W });
    ropeBackward(tqkv, t, { heads: H, offset: H * D, rowStride: W, out: dqkv, outOffset: H * D, outRowStride: W });
    const [gq, gk, gd] = await readMany([q, k, dqkv]);
    const part = (o: number) => Float32Array.from({ length: N * H * D }, (_, i) => qkv[Math.floor(i / (H * D)) * W + o + (i % (H * D))]);
    expectClose(gq, ropeApplyCpu(part(0), cos, sin, H, D), 'q');
    expectClose(gk, ropeApplyCpu(part(H * D), cos, sin, H, D), 'k');
    const dq = ropeBackwardCpu(part(0), cos, sin, H, D), dk = ropeBackwardCpu(part(H * D), cos, sin, H, D);
    const exp = new Float32Array(N * W);
    for (let i = 0; i < N * H * D; i++) {
      const r = Math.floor(i / (H * D)), c = i % (H * D);
      exp[r * W + c] = dq[i];
      exp[r * W + H * D + c] = dk[i];
    }
    expectClose(gd, exp, 'dqkv (v part stays zero)');
  });

  it('refuses mismatched tables and overruns, naming the tensor', () => {
    const t = visionRopeTables(visionPatchPos([1, 2, 2], 2), 16);
    expect(() => ropeApply(fromData(rand(4 * 2 * 8, 1), [4, 2, 8], 'f32', 'q'), t)).toThrow(/"q" \[4,2,8\].*head dim 8.*D = 16/);
    expect(() => ropeApply(fromData(rand(4 * 32, 1), [4, 32], 'f32', 'qkv'), t, { heads: 2, offset: 16, rowStride: 32 })).toThrow(/overrun "qkv"/);
  });
});
