// Live metric charts on uPlot: each run's raw series (faint) and its TensorBoard-style debiased
// EMA (solid), several runs overlaid, one shared smoothing slider. uPlot redraws 10k points in a
// few ms, so a chart takes new data on every step without throttling. A held-out evaluation's line
// (ui/chartSeries.ts) is smoothed by the same rule, dashed, with its points shown: it has a point
// every eval.evalSteps steps only, and a single point draws no line.
import { useEffect, useMemo, useRef, useState } from 'react';
import uPlot from 'uplot';
import { debiasedEma } from './smoothing.ts';
import type { ChartLine } from './chartSeries.ts';

/** One line: a run's metric (chartSeries.ts makes them; `eval`: a held-out evaluation's line, dashed, points shown). */
export type ChartSeries = ChartLine;

/** Align several (step, value) series on the union of their steps; missing points are null. */
export function alignSeries(series: ChartSeries[]): { x: number[]; ys: (number | null)[][] } {
  const steps = new Set<number>();
  for (const s of series) for (const x of s.step) steps.add(x);
  const x = [...steps].sort((a, b) => a - b);
  const at = new Map(x.map((v, i) => [v, i]));
  const ys = series.map((s) => {
    const y: (number | null)[] = new Array(x.length).fill(null);
    s.step.forEach((st, i) => (y[at.get(st)!] = s.value[i]));
    return y;
  });
  return { x, ys };
}

export function fmtValue(v: number | null | undefined): string {
  if (v === null || v === undefined) return '–';
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return Number(v.toPrecision(4)).toString();
}

/** tick labels: short, exponent form only for very small or large numbers ("2e-4", "1.5e-4") */
function fmtAxis(v: number): string {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2).replace(/\.?0+e/, 'e').replace('e+', 'e');
  return String(Number(v.toPrecision(6)));
}

function withAlpha(hex: string, a: number): string {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}

interface MetricChartProps {
  title: string;
  series: ChartSeries[];
  /** EMA weight in [0, 1); 0 draws the raw values only */
  smoothing: number;
  height?: number;
  /** apply smoothing (off for e.g. the learning rate, which is not noisy) */
  smooth?: boolean;
  logY?: boolean;
  /** a fixed y range (shares such as the eval parse rate: [0, 1]) */
  range?: [number, number];
}

export function MetricChart({ title, series, smoothing, height = 200, smooth = true, logY = false, range }: MetricChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const [cursorIdx, setCursorIdx] = useState<number | null>(null);
  const live = useMemo(() => series.filter((s) => s.step.length > 0), [series]);
  const showRaw = smooth && smoothing > 0;

  const { x, ys } = useMemo(() => alignSeries(live), [live]);
  const smoothed = useMemo(() => ys.map((y) => (showRaw ? debiasedEma(y, smoothing) : y)), [ys, smoothing, showRaw]);
  const data = useMemo<uPlot.AlignedData>(() => [x, ...ys.flatMap((y, i) => (showRaw ? [y, smoothed[i]] : [y]))], [x, ys, smoothed, showRaw]);
  // Rebuild the plot only when the set of lines changes; new points go through setData.
  const shape = `${live.map((s) => `${s.id}:${s.color}:${!!s.eval}`).join(',')}|${showRaw}|${logY}|${range ?? ''}`;

  useEffect(() => {
    const el = box.current;
    if (!el || !live.length) return;
    const lines: uPlot.Series[] = [{}];
    for (const s of live) {
      const dash = s.eval ? { dash: [6, 4] } : {};
      if (showRaw) lines.push({ label: `${s.label} raw`, stroke: withAlpha(s.color, 0.28), width: 1, spanGaps: true, points: { show: false }, ...dash });
      lines.push({ label: s.label, stroke: s.color, width: 2, spanGaps: true, points: s.eval ? { show: true, size: 6, fill: s.color } : { show: false }, ...dash });
    }
    const u = new uPlot(
      {
        width: Math.max(200, el.clientWidth),
        height,
        series: lines,
        legend: { show: false },
        cursor: { drag: { x: true, y: false }, points: { size: 6 } },
        scales: { x: { time: false }, y: logY ? { distr: 3 } : range ? { range: [range[0], range[1]] } : {} },
        axes: [
          { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e5e7eb' }, size: 32 },
          {
            stroke: '#6b7280',
            grid: { stroke: '#eef0f3' },
            ticks: { stroke: '#e5e7eb' },
            values: (_u, vals) => vals.map((v) => fmtAxis(v)),
            // wide enough for the longest tick label (uPlot's default clips "1.5e-4")
            size: (_u, vals) => 18 + 7 * Math.max(3, ...(vals ?? []).map((v) => String(v).length)),
          },
        ],
        hooks: { setCursor: [(uu) => setCursorIdx(uu.cursor.idx ?? null)] },
      },
      data,
      el,
    );
    plot.current = u;
    const ro = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
    // data is applied by the effect below; the plot is rebuilt only when its shape changes
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [shape, height]);

  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);

  const idx = cursorIdx ?? x.length - 1;
  return (
    <figure className="chart" data-metric={title}>
      <figcaption>
        <span className="chart-title">{title}</span>
        {live.length > 0 && <span className="chart-step">step {x[idx] ?? '–'}</span>}
      </figcaption>
      {live.length === 0 ? (
        <div className="chart-empty" style={{ height }}>
          No data yet
        </div>
      ) : (
        <div ref={box} className="chart-plot" />
      )}
      {live.length > 0 && (
        <ul className="chart-legend">
          {live.map((s, i) => (
            <li key={s.id} data-eval={s.eval ? 'true' : undefined}>
              <span className={s.eval ? 'swatch swatch-eval' : 'swatch'} style={s.eval ? { borderColor: s.color } : { background: s.color }} />
              <span className="legend-name">{s.label}</span>
              <span className="legend-value" title={showRaw ? 'smoothed (raw)' : 'value'}>
                {fmtValue(lastAtOrBefore(smoothed[i], idx))}
                {showRaw && <span className="raw"> ({fmtValue(lastAtOrBefore(ys[i], idx))})</span>}
              </span>
            </li>
          ))}
        </ul>
      )}
    </figure>
  );
}

/** the value at idx, or the last one before it when this run has no point there */
function lastAtOrBefore(y: (number | null)[] | undefined, idx: number): number | null {
  if (!y) return null;
  for (let i = Math.min(idx, y.length - 1); i >= 0; i--) if (y[i] !== null) return y[i];
  return null;
}

export function SmoothingSlider({ value, onChange }: { value: number; onChange: (v: number) => void }) {
  return (
    <label className="smoothing">
      <span title="Exponential moving average, debiased like TensorBoard's. 0 shows the raw values.">Smoothing</span>
      <input type="range" min={0} max={0.99} step={0.01} value={value} onChange={(e) => onChange(Number(e.target.value))} aria-label="Smoothing" />
      <output>{value.toFixed(2)}</output>
    </label>
  );
}

/** Persisted slider value (like TensorBoard, one setting for all charts). */
export function useSmoothing(): [number, (v: number) => void] {
  const [v, setV] = useState(() => {
    const raw = globalThis.localStorage?.getItem('patchwork.smoothing');
    const s = raw == null ? NaN : Number(raw);
    return Number.isFinite(s) && s >= 0 && s < 1 ? s : 0.6;
  });
  return [
    v,
    (x: number) => {
      setV(x);
      globalThis.localStorage?.setItem('patchwork.smoothing', String(x));
    },
  ];
}
