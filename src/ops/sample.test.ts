import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeGpu, nodeGpu } from '../gpu/node.ts';
import { fromData, readMany } from '../gpu/tensor.ts';
import { SAMPLE_KMAX, sampleRows, type GpuSampleOptions } from './sample.ts';
import { logprobAt, sampleTokenU } from './cpu/sample.ts';
import { rand } from './testUtil.ts';

beforeAll(async () => { await nodeGpu(); });
afterAll(async () => { await closeGpu(); });

/** The CPU's walk order for a row (candidates after top-k / top-p, in the order it draws) and their probabilities. */
function walk(l: Float32Array, o: GpuSampleOptions): { ids: number[]; p: number[] } {
  const T = o.temperature;
  let mx = -Infinity;
  for (const v of l) mx = Math.max(mx, v);
  const floor = mx - 30 * T;
  let ids = Array.from(l.keys()).filter((i) => l[i] >= floor);
  const sorted = (o.topK ?? 0) > 0 || (o.topP ?? 1) < 1;
  if (sorted) ids.sort((a, b) => l[b] - l[a] || a - b);
  if ((o.topK ?? 0) > 0) ids = ids.slice(0, o.topK);
  let p = ids.map((i) => Math.exp((l[i] - mx) / T));
  if ((o.topP ?? 1) < 1) {
    const total = p.reduce((a, b) => a + b, 0);
    let before = 0, keep = p.length;
    for (let j = 0; j < p.length; j++) {
      if (j > 0 && before / total >= o.topP!) { keep = j; break; }
      before += p[j];
    }
    ids = ids.slice(0, keep);
    p = p.slice(0, keep);
  }
  return { ids, p };
}

/** Rows of logits: peaked, flat, and with many exact ties. */
function rows(n: number, V: number, seed: number): Float32Array {
  const x = rand(n * V, seed, 1);
  for (let r = 0; r < n; r++) {
    const kind = r % 3, row = x.subarray(r * V, (r + 1) * V);
    for (let i = 0; i < V; i++) row[i] = kind === 0 ? row[i] * 8 : kind === 1 ? row[i] * 0.7 : Math.round(row[i] * 6) / 2;
  }
  return x;
}

describe('GPU sampler = CPU sampler on seeded logits', () => {
  const n = 48, V = 3001; // V not a multiple of the workgroup (256)
  const modes: GpuSampleOptions[] = [
    { temperature: 0.7 },
    { temperature: 1.3 },
    { temperature: 0.9, topK: 10 },
    { temperature: 1, topK: 1 },
    { temperature: 1.1, topK: 40, topP: 0.9 },
    { temperature: 0.6, topP: 0.5 },
  ];
  for (const o of modes) {
    it(JSON.stringify(o), async () => {
      const logits = rows(n, V, 11);
      const u = Float32Array.from(rand(n, 5), (v) => (v + 1) / 2); // uniforms in [0, 1)
      const lt = fromData(logits, [n, V]), ut = fromData(u, [n]);
      const r = sampleRows(lt, ut, o);
      const [ids, lps] = await readMany([r.ids, r.logprobs]);
      let same = 0, gpuRows = 0;
      for (let i = 0; i < n; i++) {
        const row = logits.subarray(i * V, (i + 1) * V);
        const want = sampleTokenU(row, o, u[i]);
        const got = (ids as Int32Array)[i];
        if (got === -1) {
          // only top-p alone may give up, and only when the nucleus is wider than SAMPLE_KMAX
          expect(o.topK ?? 0, 'row handed back').toBe(0);
          expect(walk(row, o).ids.length, `row ${i} handed back`).toBeGreaterThan(SAMPLE_KMAX - 1);
          continue;
        }
        gpuRows++;
        expect(Math.abs(lps[i] - logprobAt(row, got, o.temperature)), `logprob row ${i}`).toBeLessThan(1e-4 * Math.max(1, Math.abs(lps[i])));
        if (got === want) { same++; continue; }
        // otherwise the two must be neighbours in the walk with u·total on their boundary
        const w = walk(row, o), a = w.ids.indexOf(want), b = w.ids.indexOf(got);
        expect(b, `row ${i}: GPU id ${got} is not a candidate`).toBeGreaterThanOrEqual(0);
        expect(Math.abs(a - b), `row ${i}: GPU ${got} vs CPU ${want}`).toBe(1);
        const total = w.p.reduce((s, v) => s + v, 0);
        const edge = w.p.slice(0, Math.max(a, b)).reduce((s, v) => s + v, 0);
        expect(Math.abs(u[i] * total - edge) / total, `row ${i}: distance of u to the boundary`).toBeLessThan(1e-5);
      }
      expect(gpuRows).toBeGreaterThanOrEqual(n / 3); // top-p alone hands back the flat rows
      if (process.env.LMH_VERBOSE) console.log(JSON.stringify(o), `identical ${same}/${gpuRows} of ${n}`);
      expect(same / gpuRows, `identical draws ${same}/${gpuRows}`).toBeGreaterThanOrEqual(0.95);
      for (const t of [lt, ut, r.ids, r.logprobs]) t.release();
    });
  }

  it('top-k above SAMPLE_KMAX is handed back; bad options are refused', async () => {
    const lt = fromData(rows(2, 300, 3), [2, 300]), ut = fromData(Float32Array.of(0.3, 0.8), [2]);
    const r = sampleRows(lt, ut, { temperature: 1, topK: SAMPLE_KMAX + 1 });
    expect(Array.from((await readMany([r.ids]))[0])).toEqual([-1, -1]);
    expect(() => sampleRows(lt, ut, { temperature: 0, topK: -1, topP: 2 })).toThrow(/temperature must be > 0.*topK must be.*topP must be/);
    for (const t of [lt, ut, r.ids, r.logprobs]) t.release();
  });
});
