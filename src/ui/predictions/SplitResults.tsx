// Predictions over a split, shown: the numbers (parse rate, mean IoU, acc@0.5 / 0.75) and the IoU
// histogram for the adapter and the base model side by side, a sortable per-question table (a row
// opens the question), and the worst-IoU questions as a gallery with the labelled and predicted
// boxes drawn in original pixels. The numbers are the ones training's evaluation logs (store/splitStats.ts).
import { useEffect, useMemo, useRef, useState } from 'react';
import type { SplitAnswer, SplitQuestion } from '../../worker/api.ts';
import { histogram, iousOf, sortQuestions, summary, worstK, type Sort, type SortKey, type Summary, type Who } from '../../store/splitStats.ts';
import { useUrl } from '../dataset/urls.ts';

const BINS = 10;
const WORST = 6;
const fmt = (v: number | undefined) => (v === undefined ? '–' : v.toFixed(3));
const pct = (v: number) => `${(100 * v).toFixed(0)}%`;

export function SplitResults({ questions, adapterLabel }: { questions: SplitQuestion[]; adapterLabel: string }) {
  const [open, setOpen] = useState<number | null>(null);
  const who: Who[] = (['adapter', 'base'] as const).filter((w) => questions.some((q) => q[w]));
  const sums = useMemo(() => Object.fromEntries(who.map((w) => [w, summary(questions, w)])) as Partial<Record<Who, Summary | null>>, [questions, who.join()]);
  const name = (w: Who) => (w === 'adapter' ? adapterLabel || 'adapter' : 'base model');
  const opened = questions.find((q) => q.index === open);
  const detail = useRef<HTMLDivElement>(null);
  // a row far down the table opens the question above it: bring it into view
  useEffect(() => detail.current?.scrollIntoView?.({ block: 'nearest', behavior: 'smooth' }), [open]);
  const worstOf: Who = who[0] ?? 'adapter';
  return (
    <>
      <div className="split-top">
        <table className="split-summary small" data-testid="split-summary">
          <thead>
            <tr>
              <th />
              <th>questions</th>
              <th>parse rate</th>
              <th>mean IoU</th>
              <th>acc@0.5</th>
              <th>acc@0.75</th>
            </tr>
          </thead>
          <tbody>
            {who.map((w) => {
              const s = sums[w];
              return (
                <tr key={w} data-testid={`summary-${w}`}>
                  <th className={`iou-${w}`}>{name(w)}</th>
                  <td>{s?.n ?? 0}</td>
                  {/* data-value: the unrounded figure, to set beside the run's eval_grounding/* */}
                  <td data-testid={`parse-rate-${w}`} data-value={s?.parseRate}>{s ? pct(s.parseRate) : '–'}</td>
                  <td data-testid={`mean-iou-${w}`} data-value={s?.meanIou}>{fmt(s?.meanIou)}</td>
                  <td data-testid={`acc50-${w}`} data-value={s?.acc50}>{s ? pct(s.acc50) : '–'}</td>
                  <td data-testid={`acc75-${w}`} data-value={s?.acc75}>{s ? pct(s.acc75) : '–'}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
        <Histogram questions={questions} who={who} means={Object.fromEntries(who.map((w) => [w, sums[w]?.meanIou]))} name={name} />
      </div>
      {opened && (
        <div className="split-detail" data-testid="split-detail" ref={detail}>
          <div className="card-head">
            <h3>
              {opened.name} — {opened.question}
            </h3>
            <button className="link" onClick={() => setOpen(null)} data-testid="split-detail-close">
              close
            </button>
          </div>
          <BoxedImage q={opened} big />
        </div>
      )}
      <h3>Worst {Math.min(WORST, questions.length)} by {name(worstOf)} IoU</h3>
      <div className="pred-grid" data-testid="worst-gallery">
        {worstK(questions, WORST, worstOf).map((q) => (
          <BoxedImage key={q.index} q={q} onOpen={() => setOpen(q.index)} />
        ))}
      </div>
      <h3>Every question</h3>
      <QuestionTable questions={questions} who={who} name={name} onOpen={setOpen} open={open} />
    </>
  );
}

function Histogram({ questions, who, means, name }: { questions: SplitQuestion[]; who: Who[]; means: Partial<Record<Who, number>>; name: (w: Who) => string }) {
  const W = 320, H = 150, L = 28, B = 22, T = 8;
  const hs = who.map((w) => ({ w, h: histogram(iousOf(questions, w), BINS) }));
  const max = Math.max(1, ...hs.flatMap((x) => x.h));
  const bw = (W - L - 4) / BINS, x = (v: number) => L + v * (W - L - 4), y = (c: number) => H - B - (c / max) * (H - B - T);
  return (
    <figure className="iou-hist" data-testid="iou-histogram">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label="IoU histogram">
        <line x1={L} x2={W - 4} y1={H - B} y2={H - B} className="axis" />
        <line x1={L} x2={L} y1={T} y2={H - B} className="axis" />
        <text x={L - 4} y={T + 8} className="tick" textAnchor="end">
          {max}
        </text>
        <text x={L - 4} y={H - B} className="tick" textAnchor="end">
          0
        </text>
        {[0, 0.25, 0.5, 0.75, 1].map((v) => (
          <text key={v} x={x(v)} y={H - B + 12} className="tick" textAnchor="middle">
            {v}
          </text>
        ))}
        <text x={(L + W) / 2} y={H - 1} className="tick" textAnchor="middle">
          IoU
        </text>
        {hs.map(({ w, h }, k) =>
          h.map((c, i) => (
            <rect
              key={`${w}${i}`} className={`bar bar-${w}`} data-testid="hist-bar" data-who={w} data-bin={i} data-count={c}
              x={L + i * bw + 1 + (k * (bw - 2)) / hs.length} width={(bw - 2) / hs.length} y={y(c)} height={H - B - y(c)}
            >
              <title>{`${name(w)}: ${c} question${c === 1 ? '' : 's'} with IoU ${(i / BINS).toFixed(1)}–${((i + 1) / BINS).toFixed(1)}`}</title>
            </rect>
          )),
        )}
        {who.map((w) => (means[w] === undefined ? null : <line key={w} className={`mean mean-${w}`} x1={x(means[w]!)} x2={x(means[w]!)} y1={T} y2={H - B} />))}
      </svg>
      <figcaption className="legend small">
        {who.map((w) => (
          <span key={w}>
            <span className={`swatch bar-${w}`} /> {name(w)} (mean {fmt(means[w])})
          </span>
        ))}
      </figcaption>
    </figure>
  );
}

const COLUMNS: { key: SortKey; label: string; who?: Who }[] = [
  { key: 'index', label: '#' },
  { key: 'image', label: 'image' },
  { key: 'question', label: 'question' },
  { key: 'iou', label: 'IoU', who: 'adapter' },
  { key: 'baseIou', label: 'IoU', who: 'base' },
  { key: 'parsed', label: 'parsed?' },
  { key: 'answer', label: 'answer' },
];

function QuestionTable({ questions, who, name, onOpen, open }: { questions: SplitQuestion[]; who: Who[]; name: (w: Who) => string; onOpen: (i: number) => void; open: number | null }) {
  const [sort, setSort] = useState<Sort>({ key: 'iou', desc: false });
  // with only the base model, its IoU is the 'iou' column (sortQuestions falls back to it)
  const cols = COLUMNS.filter((c) => c.key !== 'baseIou' || (who.includes('adapter') && who.includes('base')));
  const rows = useMemo(() => sortQuestions(questions, sort), [questions, sort]);
  const click = (key: SortKey) => setSort((s) => (s.key === key ? { key, desc: !s.desc } : { key, desc: false }));
  const main = (q: SplitQuestion): SplitAnswer | undefined => q.adapter ?? q.base;
  return (
    <div className="split-wrap">
      <table className="split-table small" data-testid="split-table">
        <thead>
          <tr>
            {cols.map((c) => (
              <th key={c.key} aria-sort={sort.key === c.key ? (sort.desc ? 'descending' : 'ascending') : 'none'}>
                <button className="link" onClick={() => click(c.key)} data-testid={`sort-${c.key}`}>
                  {c.key === 'iou' ? `IoU ${name(who[0] ?? 'adapter')}` : c.who ? `${c.label} ${name(c.who)}` : c.label}
                  {sort.key === c.key ? (sort.desc ? ' ▼' : ' ▲') : ''}
                </button>
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((q) => {
            const a = main(q);
            return (
              <tr key={q.index} data-testid="split-row" data-index={q.index} className={open === q.index ? 'on' : undefined} onClick={() => onOpen(q.index)} title="Open this question">
                <td>{q.index + 1}</td>
                <td data-testid="row-image">{q.name}</td>
                <td data-testid="row-question">{q.question}</td>
                <td data-testid="row-iou">{fmt(a?.iou)}</td>
                {cols.some((c) => c.key === 'baseIou') && <td data-testid="row-iou-base">{fmt(q.base?.iou)}</td>}
                <td>{a ? (a.parsed ? 'yes' : 'no') : '–'}</td>
                <td className="answer-cell">
                  <code>{a?.text.trim() || '(empty)'}</code>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

/** The image with the labelled boxes (solid) and each model's boxes (dashed), in original pixels, and the answers under it. */
function BoxedImage({ q, onOpen, big }: { q: SplitQuestion; onOpen?: () => void; big?: boolean }) {
  const url = useUrl(q.imageId, 'image');
  const box = (b: number[], cls: string, k: string) => <rect key={k} className={cls} x={b[0]} y={b[1]} width={Math.max(0, b[2] - b[0])} height={Math.max(0, b[3] - b[1])} />;
  return (
    <figure className={big ? 'pred pred-big' : 'pred'} data-testid={big ? 'split-detail-image' : 'worst-card'} onClick={onOpen} style={onOpen ? { cursor: 'pointer' } : undefined}>
      <div className="pred-img">
        {url && <img src={url} alt={q.name} />}
        <svg viewBox={`0 0 ${q.width} ${q.height}`} preserveAspectRatio="none">
          {q.labelled.map((b, i) => box(b, 'bx-label', `l${i}`))}
          {q.base?.boxes.map((b, i) => box(b, 'bx-base', `b${i}`))}
          {q.adapter?.boxes.map((b, i) => box(b, 'bx-adapter', `a${i}`))}
        </svg>
      </div>
      <figcaption>
        <div className="pred-q">
          <b>{q.name}</b> — {q.question}
        </div>
        {(['adapter', 'base'] as const).map((w) => {
          const a = q[w];
          if (!a) return null;
          return (
            <div key={w} className={`answer answer-${w}`}>
              <span className="answer-who">{w}</span>
              <span className="answer-iou">IoU {fmt(a.iou)}</span>
              {a.parsed ? <code className="answer-text">{a.text}</code> : <span className="answer-nobox">no box found in: <code>{a.text.trim() || '(empty answer)'}</code></span>}
            </div>
          );
        })}
      </figcaption>
    </figure>
  );
}
