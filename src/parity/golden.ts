// One golden case file (schema: shared/golden/README.md) and the tolerance check it asks for.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { bytesToF32, bytesToI32, readSafetensors, type StFile } from '../model/safetensors.ts';

export class GoldenCase {
  readonly st: StFile;
  readonly kind: string;
  readonly tag: string;
  constructor(readonly path: string, readonly root: string) {
    this.st = readSafetensors(readFileSync(path), basename(path));
    const [kind, tag] = basename(path, '.safetensors').split('__');
    this.kind = this.st.metadata.case ?? kind;
    this.tag = this.st.metadata.tag ?? tag ?? '';
  }
  get file(): string { return basename(this.path); }
  get meta(): Record<string, string> { return this.st.metadata; }
  num(key: string): number {
    const v = this.meta[key];
    if (v === undefined) throw new Error(`${this.file}: metadata "${key}" missing`);
    return Number(v);
  }
  has(name: string): boolean { return this.st.tensors.has(name); }
  names(prefix: string): string[] { return [...this.st.tensors.keys()].filter((k) => k.startsWith(prefix)); }
  shape(name: string): number[] { return this.get(name).shape; }
  f32(name: string): Float32Array { const t = this.get(name); return bytesToF32(t.bytes, t.dtype); }
  i32(name: string): Int32Array { const t = this.get(name); return bytesToI32(t.bytes, t.dtype); }
  private get(name: string) {
    const t = this.st.tensors.get(name);
    if (!t) throw new Error(`${this.file}: tensor "${name}" missing`);
    return t;
  }
}

export interface Check { name: string; err: number; tol: number; pass: boolean }

/** Tolerances of shared/golden/README.md §11: pass if max|got-exp| <= atol + rtol * max|exp|. */
export const TOL = {
  kernel: { atol: 1e-5, rtol: 1e-4 },
  patchify: { atol: 1e-5, rtol: 0 },
  vision: { atol: 1e-4, rtol: 1e-4 },
  model: { atol: 1e-4, rtol: 1e-4 },
  train: { atol: 1e-4, rtol: 1e-4 },
  grad: { atol: 0, rtol: 1e-3 },
} as const;

export function check(name: string, got: ArrayLike<number>, exp: ArrayLike<number>, tol: { atol: number; rtol: number }, mask?: ArrayLike<number>): Check {
  if (got.length !== exp.length) return { name: `${name} (length ${got.length} != ${exp.length})`, err: Infinity, tol: 0, pass: false };
  let err = 0, scale = 0;
  for (let i = 0; i < exp.length; i++) {
    if (mask && !mask[i]) continue;
    const d = Math.abs(got[i] - exp[i]);
    err = d > err || Number.isNaN(d) ? d : err;
    scale = Math.max(scale, Math.abs(exp[i]));
  }
  const t = tol.atol + tol.rtol * scale;
  return { name, err, tol: t, pass: err <= t };
}

export function checkExact(name: string, got: ArrayLike<number>, exp: ArrayLike<number>): Check {
  return check(name, got, exp, { atol: 0, rtol: 0 });
}

/** A handler runs one case kind and returns one check per expected tensor. */
export type CaseHandler = (c: GoldenCase) => Promise<Check[]>;
