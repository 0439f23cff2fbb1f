// Feature variants behind a startup self-test. A kernel that uses an optional adapter feature
// (`subgroups`, `shader-f16`) registers a candidate here with the check that proves it: run the
// variant and the plain f32 path on the same data on THIS adapter and return the worst error and
// the tolerance it must meet. runSelfTest() (called once after the device is created) turns on
// exactly the candidates whose feature the device has and whose check passed; everything else
// keeps the f32 path. Drivers differ (subgroup sizes, f16 denormals, compiler bugs), so a feature
// flag alone is never trusted.
//
// This file only keeps the registry and the verdicts: the candidates live beside their kernels
// (src/ops/*), so the gpu layer never imports an op.
import { gpu, throwPendingErrors } from './device.ts';
import { pipelinesChecked } from './kernel.ts';

export interface Candidate {
  /** "matmul.subgroup-splitk" */
  name: string;
  /** the device feature it needs */
  feature: GPUFeatureName;
  /** one line for the badge / report */
  what: string;
  /** compare against the f32 path on this adapter; throw when it does not compile or run */
  check(): Promise<{ maxErr: number; tol: number }>;
  /** optional: ms of the variant and of the f32 path on a shape it is meant for (a correct variant that is slower here is not used) */
  time?(): Promise<{ variantMs: number; f32Ms: number; shape: string }>;
}

export type Verdict =
  | { name: string; status: 'active'; maxErr: number; tol: number; what: string }
  | { name: string; status: 'refused'; maxErr?: number; tol?: number; reason: string; what: string }
  | { name: string; status: 'unavailable'; reason: string; what: string };

export interface SelfTestResult {
  /** one verdict per candidate, in registration order */
  verdicts: Verdict[];
  /** names of the active variants */
  active: string[];
  summary: string;
  lines: string[];
}

const candidates = new Map<string, Candidate>();
let active = new Set<string>();
let activeFor: GPUDevice | undefined;
let last: SelfTestResult | undefined;

/** Register (or replace) a candidate variant. Called at module load by the ops that have variants. */
export function registerVariant(c: Candidate): void {
  candidates.set(c.name, c);
}

/** For tests: drop a candidate registered by a test. */
export function unregisterVariant(name: string): void {
  candidates.delete(name);
  active.delete(name);
}

/** Whether `name` passed the self-test on the current device (false before runSelfTest). */
export function variantActive(name: string): boolean {
  if (!active.size) return false;
  let dev: GPUDevice;
  try {
    dev = gpu().device;
  } catch {
    return false;
  }
  if (dev !== activeFor) { // a new device: its verdicts are not known yet
    active = new Set();
    return false;
  }
  return active.has(name);
}

/** The last self-test's verdicts (for the GPU badge and the bench report). */
export function selfTestResult(): SelfTestResult | undefined {
  return last;
}

/**
 * Check every registered candidate on the current device and activate those that pass.
 * `features` overrides the device's feature list (tests: pretend an adapter has a feature it
 * lacks, to see the candidate refused); `only` limits the run to some candidates.
 * PATCHWORK_VARIANTS=off (Node) or opts.disable turns every variant off without checking.
 */
export async function runSelfTest(opts: { features?: readonly string[]; only?: readonly string[]; disable?: boolean; ignoreSpeed?: boolean } = {}): Promise<SelfTestResult> {
  const g = gpu();
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.PATCHWORK_VARIANTS;
  const disabled = opts.disable || env === 'off' || env === '0';
  const have = new Set(opts.features ?? g.features);
  active = new Set();
  activeFor = g.device;
  const verdicts: Verdict[] = [];
  for (const c of candidates.values()) {
    if (opts.only && !opts.only.includes(c.name)) continue;
    if (disabled) { verdicts.push({ name: c.name, status: 'unavailable', reason: 'variants turned off', what: c.what }); continue; }
    if (!have.has(c.feature)) { verdicts.push({ name: c.name, status: 'unavailable', reason: `adapter has no ${c.feature}`, what: c.what }); continue; }
    try {
      throwPendingErrors(); // an earlier error must not be blamed on this candidate
      const { maxErr, tol } = await c.check();
      await g.device.queue.onSubmittedWorkDone();
      await pipelinesChecked(); // the compile errors of the check's kernels, however slow the compiler
      throwPendingErrors();
      if (Number.isFinite(maxErr) && maxErr <= tol) {
        const t = c.time && !opts.ignoreSpeed ? await c.time() : undefined;
        if (t && !(t.variantMs < t.f32Ms)) {
          verdicts.push({ name: c.name, status: 'refused', maxErr, tol, reason: `correct (max error ${fmt(maxErr)} ≤ ${fmt(tol)}) but slower here: ${t.variantMs.toFixed(2)} ms vs f32 ${t.f32Ms.toFixed(2)} ms at ${t.shape}`, what: c.what });
          continue;
        }
        active.add(c.name);
        verdicts.push({ name: c.name, status: 'active', maxErr, tol, what: c.what + (t ? `; ${t.variantMs.toFixed(2)} ms vs f32 ${t.f32Ms.toFixed(2)} ms at ${t.shape}` : '') });
      } else {
        verdicts.push({ name: c.name, status: 'refused', maxErr, tol, reason: `max error ${fmt(maxErr)} > tolerance ${fmt(tol)}`, what: c.what });
      }
    } catch (e) {
      verdicts.push({ name: c.name, status: 'refused', reason: (e as Error).message.split('\n').slice(0, 3).join(' '), what: c.what });
    }
  }
  const on = verdicts.filter((v) => v.status === 'active').map((v) => v.name);
  const lines = verdicts.map((v) => v.status === 'active'
    ? `${v.name}: active (${v.what}; max error ${fmt(v.maxErr)} ≤ ${fmt(v.tol)})`
    : `${v.name}: ${v.status}, f32 path used (${v.reason})`);
  last = { verdicts, active: on, summary: on.length ? `active: ${on.join(', ')}` : 'none active (f32 kernels only)', lines };
  return last;
}

/** What the page is told about each variant (structured-clone friendly). */
export interface VariantInfo {
  name: string;
  feature: string;
  status: Verdict['status'];
  /** the verdict in words: what it does and its error, or why the f32 path is used */
  detail: string;
}

export function variantInfo(r: SelfTestResult): VariantInfo[] {
  return r.verdicts.map((v, i) => ({ name: v.name, feature: candidates.get(v.name)?.feature ?? '', status: v.status, detail: r.lines[i].replace(`${v.name}: `, '') }));
}

const fmt = (x: number | undefined) => (x === undefined ? '?' : Number.isFinite(x) ? x.toExponential(2) : String(x));
