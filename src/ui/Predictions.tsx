// The Predictions screen: run an adapter on chosen images, draw its boxes over the labelled ones,
// IoU per image and the mean, and the base model side by side (before / after); or predict over a
// whole split (the run's eval split, its train split, the dataset) and see it in numbers, a
// histogram, a table and the worst examples (predictions/SplitResults.tsx).
import { useEffect, useMemo, useState } from 'react';
import { useRuns } from '../store/runs.ts';
import { useTrainConfig } from '../store/runConfig.ts';
import { useRuntime } from '../store/runtime.ts';
import { useTraining } from '../store/training.ts';
import { PLAYGROUND_BUSY, usePlayground } from '../store/playground.ts';
import { currentDataset, initDatasets, useDatasetStore } from '../store/dataset.ts';
import { meanIou, questionsOf, runPredictions, usePredictions, type Prediction, type Scored } from '../store/predictions.ts';
import { isLabelled } from '../data/formats/types.ts';
import { useUrl } from './dataset/urls.ts';
import { fmtValue } from './Charts.tsx';
import { cancelSplitPredictions, interrupted, runSplitPredictions, setPredictOver, useSplitPredictions, type SplitChoice } from '../store/splitPredictions.ts';
import { SplitResults } from './predictions/SplitResults.tsx';
import { latestEval } from './chartSeries.ts';

const MAX_IMAGES = 12;

export function Predictions() {
  const runs = useRuns((s) => s.runs);
  const config = useTrainConfig((s) => s.config);
  const gpu = useRuntime((s) => s.gpu);
  const hasGenerate = useRuntime((s) => s.methods.includes('generate'));
  const active = useTraining((s) => s.active);
  const playgroundBusy = usePlayground((s) => s.running);
  const images = useDatasetStore((s) => s.images);
  const dsId = useDatasetStore((s) => s.currentId);
  const datasets = useDatasetStore((s) => s.datasets);
  const ds = useMemo(() => (dsId ? datasets.find((d) => d.id === dsId) : undefined), [dsId, datasets]);
  const { running, done, total, results, adapterLabel, error } = usePredictions();
  useEffect(() => void initDatasets(), []);

  const trained = useMemo(() => runs.filter((r) => r.checkpointStep != null || r.status === 'done' || r.status === 'stopped'), [runs]);
  const [runId, setRunId] = useState<string | null>(null);
  const chosenRun = runId ?? trained.at(-1)?.id ?? '';
  const [compare, setCompare] = useState(true);
  const [maxNewTokens, setMaxNewTokens] = useState(48);
  const labelled = useMemo(() => (ds ? images.filter((r) => isLabelled(ds.kind, r.labels, ds.reward)) : []), [images, ds]);
  const [picked, setPicked] = useState<string[] | null>(null);
  const selected = (picked ?? labelled.slice(0, 3).map((r) => r.id)).filter((id) => labelled.some((r) => r.id === id));
  const split = useSplitPredictions();
  const over = split.over, setOver = setPredictOver;
  const busy = running || split.running;
  // the run's own settings decide its split (the engine recomputes it from them)
  const runRec = runs.find((r) => r.id === chosenRun);
  const { evalSplit, evalMaxNewTokens } = (runRec?.config ?? config).eval;
  // over a split, decode as the chosen run's evaluation does (also when another run is chosen)
  useEffect(() => {
    if (over !== 'images') setMaxNewTokens(evalMaxNewTokens);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [chosenRun, evalMaxNewTokens]);
  const lastEval = runRec && over === 'eval' ? latestEval(runRec.metrics) : undefined;

  let reason: string | undefined;
  if (gpu.status === 'unavailable') reason = 'WebGPU unavailable: see the message at the top';
  else if (gpu.status === 'lost') reason = 'GPU device lost: reconnect first';
  else if (gpu.status === 'starting') reason = 'engine starting…';
  else if (!hasGenerate) reason = 'engine not loaded yet';
  else if (active && active.state !== 'paused') reason = 'a run is training: pause or stop it first';
  else if (playgroundBusy) reason = PLAYGROUND_BUSY;
  else if (!ds) reason = 'open a dataset on the Dataset screen';
  else if (over === 'images' && !selected.length) reason = 'choose at least one labelled image';
  else if (over === 'eval' && !(evalSplit > 0)) reason = `${runRec ? 'this run' : 'the Train settings'} held out no images (eval split 0): choose the train split or the whole dataset`;
  else if (busy) reason = 'running…';

  const toggle = (id: string) => setPicked(selected.includes(id) ? selected.filter((x) => x !== id) : [...selected, id].slice(-MAX_IMAGES));
  const run = () => {
    if (!ds) return;
    if (over !== 'images') return void runSplitPredictions({ runId: chosenRun, split: over, compare, maxNewTokens, datasetId: runRec?.datasetId ?? ds.id, config });
    void runPredictions({ runId: chosenRun, compare, maxNewTokens, dataset: currentDataset() ?? ds, images: labelled.filter((r) => selected.includes(r.id)), config });
  };
  const mA = meanIou(results, 'adapter'), mB = meanIou(results, 'base');

  return (
    <div className="screen predictions-screen" data-testid="predictions-screen">
      <section className="card">
        <div className="card-head">
          <h2>Predictions</h2>
          {ds && <span className="muted small">dataset: {ds.name}</span>}
        </div>
        <p className="help">
          Runs the model on labelled images of the current dataset and draws the predicted boxes (dashed) over the labelled ones (solid), with the
          IoU per image and the mean. With comparison on, the base model (LoRA off) answers the same questions: before / after. Over a split (the run's
          held-out images, its training images or the whole dataset) every grounding question is answered, with the numbers training's evaluation logs,
          an IoU histogram, a sortable table and the worst examples.
        </p>
        <div className="grid">
          <label className="field">
            <span className="field-label">Adapter</span>
            <select value={chosenRun} onChange={(e) => setRunId(e.target.value)} name="adapter" data-testid="predict-adapter">
              <option value="">base model (no adapter)</option>
              <option value="current">adapter on the model now (last run or import)</option>
              {runs.map((r) => (
                <option key={r.id} value={r.id}>
                  {r.name} — {r.method.toUpperCase()}, {r.status}
                  {r.checkpointStep != null ? `, step ${r.checkpointStep}` : ''}
                </option>
              ))}
            </select>
            <span className="field-help">{runs.length ? "A run's last checkpoint." : 'No runs yet: train one on the Train screen.'}</span>
          </label>
          <label className="field">
            <span className="field-label">Predict over</span>
            <select
              value={over}
              onChange={(e) => {
                const v = e.target.value as typeof over;
                // over a split, decode as the run's evaluation does, so the numbers are comparable with its eval metrics
                if (v !== 'images' && over === 'images') setMaxNewTokens(evalMaxNewTokens);
                setOver(v);
              }}
              name="predictOver"
              data-testid="predict-over"
            >
              <option value="images">images I choose</option>
              <option value="eval">the eval split (held-out images)</option>
              <option value="train">the train split</option>
              <option value="all">the whole dataset</option>
            </select>
            <span className="field-help">
              {over === 'images'
                ? 'Every question of the chosen images.'
                : `Every grounding question, greedy; the split is the one ${runRec ? 'the run' : 'the Train settings'} made (eval split ${evalSplit}, seed ${(runRec?.config ?? config).optim.seed}).`}
            </span>
          </label>
          <label className="field toggle">
            <span className="field-label">Before / after</span>
            <span>
              <input type="checkbox" checked={compare} onChange={(e) => setCompare(e.target.checked)} name="compare" /> also run the base model
            </span>
            <span className="field-help">Shows what the fine-tuning changed.</span>
          </label>
          <label className="field">
            <span className="field-label">Max new tokens</span>
            <input name="maxNewTokens" inputMode="numeric" value={maxNewTokens} onChange={(e) => setMaxNewTokens(Math.max(1, Math.floor(Number(e.target.value) || 1)))} />
            <span className="field-help">
              Greedy decoding; one box answer is ~30 tokens.{over !== 'images' && ` The run's evaluation decodes ${evalMaxNewTokens}: the same gives its numbers.`}
            </span>
          </label>
        </div>
        {runRec && over === 'eval' && evalSplit > 0 && <EvalComparison lastEval={lastEval} checkpointStep={runRec.checkpointStep} maxNewTokens={maxNewTokens} evalMaxNewTokens={evalMaxNewTokens} />}
        {ds && (
          <p className="help">
            Images are resized with the dataset's min pixels {ds.minPixels.toLocaleString('en-US')} and max pixels {ds.maxPixels.toLocaleString('en-US')}, the frame its
            box answers were trained in; predicted boxes are mapped back to the original pixels.
          </p>
        )}
        {over === 'images' && (
          <div className="pick-grid" data-testid="predict-images">
            {labelled.length === 0 && <span className="muted">No labelled images in this dataset yet.</span>}
            {labelled.map((r) => (
              <PickTile key={r.id} id={r.id} name={r.name} checked={selected.includes(r.id)} onToggle={() => toggle(r.id)} question={questionsOf(r).map((q) => q.question).join('\n')} />
            ))}
          </div>
        )}
        <div className="run-buttons">
          <span title={reason ?? 'Run predictions'}>
            <button className="primary" disabled={reason !== undefined} data-testid="predict-button" onClick={run}>
              Run predictions
            </button>
          </span>
          {split.running ? (
            <>
              <span className="muted small" data-testid="split-progress">
                {split.total ? `${split.done} / ${split.total} questions…` : 'preparing the split…'}
              </span>
              <button onClick={() => void cancelSplitPredictions()} disabled={split.cancelling} data-testid="predict-cancel">
                {split.cancelling ? 'Cancelling…' : 'Cancel'}
              </button>
            </>
          ) : running ? (
            <span className="muted small" data-testid="predict-progress">
              {done} / {total} images…
            </span>
          ) : (
            reason && <span className="muted small">{reason.charAt(0).toUpperCase() + reason.slice(1)}.</span>
          )}
        </div>
        {(over === 'images' ? error : split.error) && (
          <p className="error-text" role="alert" data-testid="predict-error">
            {over === 'images' ? error : split.error}
          </p>
        )}
      </section>
      {over !== 'images' && (split.questions.length > 0 || split.info) && (
        <section className="card" data-testid="split-results">
          <div className="card-head">
            <h2>Predictions over {split.info ? SPLIT_NAMES[split.info.split] : 'the split'}</h2>
            {split.info && (
              <span className="muted small" data-testid="split-info">
                {split.info.dataset}: {split.info.total} grounding question{split.info.total === 1 ? '' : 's'} on {split.info.images} image{split.info.images === 1 ? '' : 's'}
                {split.skipped ? `, ${split.skipped} other record${split.skipped === 1 ? '' : 's'} left out` : ''}
                {split.cancelled ? ` — cancelled after ${split.questions.length}` : ''}
                {interrupted(split) ? ` — interrupted after ${split.questions.length} (the page was closed or reloaded while they ran): predict again for the rest` : ''}
              </span>
            )}
          </div>
          {split.info?.total === 0 ? <p className="muted">No grounding questions (answers with boxes) in this split.</p> : <SplitResults questions={split.questions} adapterLabel={split.adapterLabel} />}
        </section>
      )}
      {over === 'images' && results.length > 0 && (
        <section className="card" data-testid="predict-results">
          <div className="card-head">
            <h2>Results</h2>
            <span className="small" data-testid="predict-mean">
              mean IoU: {results.some((r) => r.adapter) && <b className="iou-adapter">{adapterLabel}: {fmtIou(mA)}</b>}
              {results.some((r) => r.base) && <b className="iou-base"> base: {fmtIou(mB)}</b>}
            </span>
          </div>
          <div className="legend small">
            <span className="key key-label" /> labelled <span className="key key-adapter" /> adapter <span className="key key-base" /> base model
          </div>
          <div className="pred-grid">
            {results.map((p) => (
              <PredictionCard key={`${p.imageId}:${p.questionIndex}`} p={p} />
            ))}
          </div>
        </section>
      )}
    </div>
  );
}

/**
 * Whether the adapter's figures over the eval split will be the run's own last eval_grounding/*
 * figures: they are when the adapter is the one that evaluation scored (the run's last checkpoint is
 * the step it evaluated) and the answers are decoded to the same length. What else can move them:
 * labels edited on the held-out images since (the split is recomputed from the dataset as it is now).
 */
function EvalComparison({ lastEval, checkpointStep, maxNewTokens, evalMaxNewTokens }: { lastEval?: ReturnType<typeof latestEval>; checkpointStep?: number | null; maxNewTokens: number; evalMaxNewTokens: number }) {
  if (!lastEval) return <p className="help" data-testid="eval-compare" data-same="false">The run has not evaluated yet: there are no eval figures to compare these with.</p>;
  const differs: string[] = [];
  if (checkpointStep != null && checkpointStep !== lastEval.step) differs.push(`the adapter is its checkpoint of step ${checkpointStep}, its last evaluation scored step ${lastEval.step}`);
  if (maxNewTokens !== evalMaxNewTokens) differs.push(`these answers decode up to ${maxNewTokens} new tokens, its evaluation decoded ${evalMaxNewTokens}`);
  return (
    <p className="help" data-testid="eval-compare" data-same={String(!differs.length)}>
      {differs.length
        ? `The adapter's figures can differ from the run's last evaluation (step ${lastEval.step}): ${differs.join('; ')}.`
        : `Same adapter (step ${lastEval.step}) and decoding length (${evalMaxNewTokens} tokens) as the run's last evaluation: the adapter's parse rate, mean IoU and accuracies are its eval figures, unless labels on the held-out images were edited since.`}
    </p>
  );
}

const SPLIT_NAMES: Record<SplitChoice, string> = { eval: 'the eval split', train: 'the train split', all: 'the whole dataset' };

const fmtIou = (v: number | null | undefined) => (v === null || v === undefined ? '–' : v.toFixed(3));

function PickTile({ id, name, checked, onToggle, question }: { id: string; name: string; checked: boolean; onToggle: () => void; question: string }) {
  const url = useUrl(id, 'thumb');
  return (
    <label className={checked ? 'pick on' : 'pick'} title={question} data-testid="predict-pick">
      <input type="checkbox" checked={checked} onChange={onToggle} />
      {url ? <img src={url} alt={name} /> : <span className="pick-ph" />}
      <span className="pick-name">{name}</span>
    </label>
  );
}

function PredictionCard({ p }: { p: Prediction }) {
  const url = useUrl(p.imageId, 'image');
  const box = (b: number[], cls: string, k: string) => <rect key={k} className={cls} x={b[0]} y={b[1]} width={Math.max(0, b[2] - b[0])} height={Math.max(0, b[3] - b[1])} />;
  return (
    <figure className="pred" data-testid="prediction">
      <div className="pred-img">
        {url && <img src={url} alt={p.name} />}
        <svg viewBox={`0 0 ${p.width} ${p.height}`} preserveAspectRatio="none">
          {p.labelled.map((b, i) => box(b, 'bx-label', `l${i}`))}
          {p.base?.boxes.map((b, i) => box(b.bbox, 'bx-base', `b${i}`))}
          {p.adapter?.boxes.map((b, i) => box(b.bbox, 'bx-adapter', `a${i}`))}
        </svg>
      </div>
      <figcaption>
        <div className="pred-q">
          <b>{p.name}</b>
          {p.questionCount > 1 && (
            <span className="muted small" data-testid="pred-qindex">
              {' '}
              (question {p.questionIndex + 1} of {p.questionCount})
            </span>
          )}{' '}
          — <span data-testid="pred-question">{p.question}</span>
        </div>
        {p.error && <div className="error-text">{p.error}</div>}
        {p.adapter && <Answer who="adapter" g={p.adapter} />}
        {p.base && <Answer who="base" g={p.base} />}
      </figcaption>
    </figure>
  );
}

function Answer({ who, g }: { who: 'adapter' | 'base'; g: Scored }) {
  return (
    <div className={`answer answer-${who}`} data-testid={`answer-${who}`}>
      <span className="answer-who">{who === 'adapter' ? 'adapter' : 'base'}</span>
      <span className="answer-iou" data-testid={`iou-${who}`} title={g.noBox ? 'No box in the answer: scored 0 in the mean' : 'IoU with the labelled box(es)'}>
        IoU {fmtIou(g.iou)}
      </span>
      {g.noBox ? (
        <span className="answer-nobox" data-testid={`nobox-${who}`} title={`${g.tokens} tokens, ${fmtValue(g.ms / 1000)} s`}>
          no box found in: <code>{g.text.trim() ? g.text : '(empty answer)'}</code>
        </span>
      ) : (
        <code className="answer-text" title={`${g.tokens} tokens, ${fmtValue(g.ms / 1000)} s`}>
          {g.text || '(empty)'}
        </code>
      )}
    </div>
  );
}
