// What the engine's WebGPU device is and can do: header badge, details card, self-test result,
// and the banner that explains a missing or lost GPU.
import { useEffect, useRef, useState, type ReactNode } from 'react';
import { KEY_LIMITS, type GpuReport } from '../worker/api.ts';
import { useRuntime, type GpuState } from '../store/runtime.ts';

const BYTE_LIMITS = new Set(['maxBufferSize', 'maxStorageBufferBindingSize', 'maxUniformBufferBindingSize', 'maxComputeWorkgroupStorageSize']);

export function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${+(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${+(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${+(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

function fmtLimit(name: string, v: number): string {
  return BYTE_LIMITS.has(name) ? `${fmtBytes(v)} (${v.toLocaleString('en-US')})` : v.toLocaleString('en-US');
}

function badgeOf(g: GpuState): { tone: string; text: string } {
  switch (g.status) {
    case 'starting':
      return { tone: 'pending', text: 'Starting GPU…' };
    case 'ready':
      return { tone: 'ok', text: shortName(g.report) };
    case 'lost':
      return { tone: 'warn', text: 'GPU lost' };
    case 'unavailable':
      return { tone: 'bad', text: g.problem === 'no-webgpu' ? 'No WebGPU' : g.problem === 'no-adapter' ? 'No GPU adapter' : 'GPU error' };
  }
}

function shortName(r: GpuReport): string {
  const name = [r.vendor, r.architecture].filter(Boolean).join(' ') || r.adapterName;
  const on = activeFeatures(r);
  return `WebGPU · ${name}${on.length ? ` · ${on.join(' + ')} kernels` : ''}`;
}

/** features whose kernel variants passed the startup self-test on this adapter ("subgroups", "shader-f16") */
export function activeFeatures(r: GpuReport): string[] {
  return [...new Set((r.variants ?? []).filter((v) => v.status === 'active').map((v) => v.feature))];
}

/** Header badge; click for the details. */
export function GpuBadge() {
  const g = useRuntime((s) => s.gpu);
  const [open, setOpen] = useState(false);
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!open) return;
    const close = (e: MouseEvent) => ref.current && !ref.current.contains(e.target as Node) && setOpen(false);
    const esc = (e: KeyboardEvent) => e.key === 'Escape' && setOpen(false);
    document.addEventListener('mousedown', close);
    document.addEventListener('keydown', esc);
    return () => {
      document.removeEventListener('mousedown', close);
      document.removeEventListener('keydown', esc);
    };
  }, [open]);
  const b = badgeOf(g);
  return (
    <div className="gpu-badge-wrap" ref={ref}>
      <button className={`gpu-badge tone-${b.tone}`} data-testid="gpu-badge" aria-expanded={open} onClick={() => setOpen(!open)} title="WebGPU device of the engine worker">
        <span className="dot" />
        {b.text}
      </button>
      {open && (
        <div className="popover" role="dialog" aria-label="GPU details">
          <GpuInfo />
        </div>
      )}
    </div>
  );
}

/** Adapter, key limits, features and the self-test. */
export function GpuInfo() {
  const g = useRuntime((s) => s.gpu);
  if (g.status === 'starting') return <div className="gpu-info muted">Starting the engine worker and its WebGPU device…</div>;
  if (g.status === 'unavailable') return <div className="gpu-info muted">{g.message}</div>;
  const r = g.report;
  return (
    <div className="gpu-info" data-testid="gpu-info">
      <dl className="kv">
        <dt>Adapter</dt>
        <dd data-testid="gpu-adapter">
          {r.adapterName}
          {r.isFallback && <span className="tag" title="A CPU implementation of WebGPU: correct but slow; fine for the tiny model.">software</span>}
        </dd>
        {KEY_LIMITS.map((k) => (
          <LimitRow key={k} name={k} value={r.limits[k]} />
        ))}
        <dt>shader-f16</dt>
        <dd data-testid="gpu-f16">{r.hasF16 ? 'yes' : 'no (f32 math; BF16 weights are widened in the kernels)'}</dd>
        <dt>Kernel variants</dt>
        <dd data-testid="gpu-variants">
          {!r.variants?.length ? (
            <span className="muted">f32 kernels only (no feature variants checked)</span>
          ) : (
            <ul className="variant-list">
              {r.variants.map((v) => (
                <li key={v.name} data-variant={v.name} data-status={v.status} className={v.status === 'active' ? 'ok-text' : 'muted'} title={v.detail}>
                  {v.name}: {v.status === 'active' ? 'active' : `${v.status} — f32 path`} <span className="small">({v.detail})</span>
                </li>
              ))}
            </ul>
          )}
        </dd>
      </dl>
      {g.status === 'lost' && <p className="error-text">Device lost: {g.reason}</p>}
      <SelfTest />
      <details className="all-limits">
        <summary>All limits and features</summary>
        <dl className="kv small">
          {Object.keys(r.limits)
            .sort()
            .map((k) => (
              <LimitRow key={k} name={k} value={r.limits[k]} />
            ))}
          <dt>features</dt>
          <dd>{r.features.length ? r.features.join(', ') : 'none'}</dd>
        </dl>
      </details>
    </div>
  );
}

function LimitRow({ name, value }: { name: string; value: number | undefined }) {
  return (
    <>
      <dt>{name}</dt>
      <dd data-limit={name}>{value === undefined ? '–' : fmtLimit(name, value)}</dd>
    </>
  );
}

export function SelfTest() {
  const st = useRuntime((s) => s.selfTest);
  const ready = useRuntime((s) => s.gpu.status === 'ready');
  const run = useRuntime((s) => s.runSelfTest);
  let line: ReactNode;
  if (st.status === 'idle') line = <span className="muted">GPU self-test: not run</span>;
  else if (st.status === 'running') line = <span className="muted">GPU self-test: running…</span>;
  else if (st.status === 'error') line = <span className="error-text">GPU self-test: ERROR — {st.message}</span>;
  else {
    const r = st.result;
    line = (
      <span className={r.pass ? 'ok-text' : 'error-text'}>
        GPU self-test: {r.pass ? 'PASS' : 'FAIL'}, max error {r.maxAbsError.toExponential(2)} (tolerance {r.tolerance.toExponential(0)})
      </span>
    );
  }
  return (
    <div className="selftest" data-testid="selftest">
      <div className="selftest-line" data-testid="selftest-line">
        {line}
        <button className="link" onClick={() => void run()} disabled={!ready || st.status === 'running'}>
          run again
        </button>
      </div>
      {st.status === 'done' && (
        <>
          <p className="muted small">
            {st.result.kernel}, M×N×K = {st.result.shape.join('×')}, in the worker on {st.result.adapterName}: {st.result.ms.toFixed(1)} ms
            (upload, dispatch, readback).
          </p>
          <table className="selftest-table small">
            <thead>
              <tr>
                <th />
                {st.result.gpuSample.map((_, i) => (
                  <th key={i}>y[{['0', '1', 'n−2', 'n−1'][i] ?? i}]</th>
                ))}
              </tr>
            </thead>
            <tbody>
              <tr>
                <th>GPU</th>
                {st.result.gpuSample.map((v, i) => (
                  <td key={i}>{v.toFixed(6)}</td>
                ))}
              </tr>
              <tr>
                <th>CPU (f64)</th>
                {st.result.cpuSample.map((v, i) => (
                  <td key={i}>{v.toFixed(6)}</td>
                ))}
              </tr>
            </tbody>
          </table>
        </>
      )}
    </div>
  );
}

/** Full-width notice when the engine has no GPU: what, why, what to do. The dataset still works. */
export function GpuProblemBanner() {
  const g = useRuntime((s) => s.gpu);
  const reconnect = useRuntime((s) => s.reconnect);
  if (g.status === 'lost') {
    return (
      <div className="banner warn" role="alert" data-testid="gpu-lost">
        <strong>The GPU device was lost</strong> ({g.reason}). The browser or the driver reset it, so whatever the engine held on
        the GPU is gone; datasets, settings and saved checkpoints are kept in the browser.
        <button onClick={() => void reconnect()}>Reconnect GPU</button>
      </div>
    );
  }
  if (g.status !== 'unavailable') return null;
  const where = g.pageHasWebGpu ? 'in the engine worker' : 'in this page and in the engine worker';
  let what: string, why: string, remedy: ReactNode;
  switch (g.problem) {
    case 'no-webgpu':
      what = 'WebGPU is not available in this browser';
      why = `navigator.gpu is undefined ${where}, so the engine cannot train, predict or run kernels.`;
      remedy = (
        <>
          Use a current Chrome or Edge (version 113 or later) on Windows, macOS or ChromeOS, or Safari 26+, or Firefox 141+ on Windows.
          On Linux start Chrome with <code>--enable-unsafe-webgpu --enable-features=Vulkan</code>. Check <code>chrome://gpu</code> for
          “WebGPU: Hardware accelerated”.
        </>
      );
      break;
    case 'no-adapter':
      what = 'WebGPU found no GPU adapter';
      why = 'navigator.gpu exists but requestAdapter() returned null: the GPU is blocklisted, disabled, or has no supported driver.';
      remedy = (
        <>
          Turn on “Use graphics acceleration when available” in the browser settings, update the GPU driver (Vulkan on Linux), and check{' '}
          <code>chrome://gpu</code>. On Linux Chrome may need <code>--enable-unsafe-webgpu --enable-features=Vulkan</code>.
        </>
      );
      break;
    case 'device-failed':
      what = 'The GPU device could not be created';
      why = g.message;
      remedy = 'Close other GPU-heavy tabs and reload; if it persists, update the GPU driver.';
      break;
    case 'worker-failed':
      what = 'The engine worker could not start';
      why = g.message;
      remedy = 'Reload the page. A browser without module workers (very old versions) cannot run the engine.';
      break;
  }
  return (
    <div className="banner bad" role="alert" data-testid="no-webgpu">
      <strong>{what}.</strong> {why}
      <div className="banner-remedy">
        <b>What to do:</b> {remedy}
      </div>
      <div className="banner-still">Datasets and box labelling work without a GPU; training, predictions and adapter export need it.</div>
    </div>
  );
}
