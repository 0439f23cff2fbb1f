// The Playground screen: ask any question about any image (a dataset image, or a file dropped in
// or chosen from disk) with the adapter on, off, or both side by side; the answer streams in token
// by token and the boxes found in it (parsed and mapped back to original pixels by the engine, as
// for Predictions) are drawn on the image as they appear. Sampling settings name their defaults.
import { useEffect, useMemo, useState, type DragEvent } from 'react';
import { useRuns } from '../store/runs.ts';
import { useTrainConfig } from '../store/runConfig.ts';
import { useRuntime } from '../store/runtime.ts';
import { useTraining } from '../store/training.ts';
import { initDatasets, useDatasetStore } from '../store/dataset.ts';
import { questionsOf } from '../store/predictionScore.ts';
import { ask, askProblem, loadModelDefaults, resetSampling, setImage, setSampling, sidesOf, stopAsking, usePlayground, type Answer, type Mode, type PlaygroundImage, type Side } from '../store/playground.ts';
import { samplingProblems, type ModelDefaults, type Sampling } from '../store/playgroundSettings.ts';
import { usePredictions } from '../store/predictions.ts';
import { useSplitPredictions } from '../store/splitPredictions.ts';
import { useUrl } from './dataset/urls.ts';
import { fmtValue } from './Charts.tsx';

const MODES: { id: Mode; label: string }[] = [
  { id: 'adapter', label: 'Adapter on' },
  { id: 'base', label: 'Adapter off (base)' },
  { id: 'both', label: 'Both, side by side' },
];

export function Playground() {
  const pg = usePlayground();
  const runs = useRuns((s) => s.runs);
  const config = useTrainConfig((s) => s.config);
  const gpu = useRuntime((s) => s.gpu);
  const canStream = useRuntime((s) => s.methods.includes('cancelGenerate'));
  const hasGenerationConfig = useRuntime((s) => s.methods.includes('generationConfig'));
  const predicting = useSplitPredictions((s) => s.running) || usePredictions((s) => s.running);
  const active = useTraining((s) => s.active);
  const images = useDatasetStore((s) => s.images);
  const dsId = useDatasetStore((s) => s.currentId);
  const datasets = useDatasetStore((s) => s.datasets);
  const ds = useMemo(() => (dsId ? datasets.find((d) => d.id === dsId) : undefined), [dsId, datasets]);
  useEffect(() => void initDatasets(), []);
  // the model's generation_config.json gives the sampling defaults (as transformers' generate())
  useEffect(() => void loadModelDefaults(config), [config.model, hasGenerationConfig]); // eslint-disable-line react-hooks/exhaustive-deps
  const [fileError, setFileError] = useState<string>();

  let reason: string | undefined;
  if (gpu.status === 'unavailable') reason = 'WebGPU unavailable: see the message at the top';
  else if (gpu.status === 'lost') reason = 'GPU device lost: reconnect first';
  else if (gpu.status === 'starting') reason = 'engine starting…';
  else if (!canStream) reason = 'engine not loaded yet';
  else if (active && active.state !== 'paused') reason = 'a run is training: pause or stop it first';
  else if (predicting && !pg.running) reason = 'predictions are running (Predictions screen): cancel them or wait for them to end';
  else reason = askProblem(pg);

  const pickDataset = (id: string) => {
    const r = images.find((x) => x.id === id);
    if (!r || !ds) return;
    const img: PlaygroundImage = { kind: 'dataset', imageId: r.id, name: r.name, width: r.origWidth, height: r.origHeight, minPixels: ds.minPixels, maxPixels: ds.maxPixels };
    setImage(img);
    const q = questionsOf(r)[0]?.question ?? r.labels.question;
    if (q && !usePlayground.getState().question.trim()) usePlayground.setState({ question: q });
  };
  const pickFile = async (file: File | undefined) => {
    setFileError(undefined);
    if (!file) return;
    try {
      const bmp = await createImageBitmap(file); // its size, oriented as the worker decodes it
      const size = { width: bmp.width, height: bmp.height };
      bmp.close();
      setImage({ kind: 'file', file, url: URL.createObjectURL(file), name: file.name, ...size, minPixels: config.data.minPixels, maxPixels: config.data.maxPixels });
    } catch {
      setFileError(`"${file.name}" could not be read as an image (${file.type || 'unknown type'}).`);
    }
  };
  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    void pickFile([...e.dataTransfer.files].find((f) => f.type.startsWith('image/')) ?? e.dataTransfer.files[0]);
  };

  return (
    <div className="screen playground-screen" data-testid="playground-screen">
      <section className="card">
        <div className="card-head">
          <h2>Playground</h2>
          {pg.adapterLabel && <span className="muted small">adapter: {pg.adapterLabel}</span>}
        </div>
        <p className="help">
          Ask the model anything about an image. The answer streams in as it is generated; boxes in it (<code>{'{"bbox_2d": [x1, y1, x2, y2]}'}</code>) are drawn on the
          image, mapped back from the resized frame the model sees to the original pixels.
        </p>
        <div className="pg-source">
          <div className="pg-drop" onDragOver={(e) => e.preventDefault()} onDrop={onDrop} data-testid="pg-drop">
            <label>
              Drop an image here or <span className="pg-link">choose a file</span>
              <input type="file" accept="image/*" hidden onChange={(e) => void pickFile(e.target.files?.[0])} data-testid="pg-file" />
            </label>
            <span className="field-help">
              Resized with the Train settings' min / max pixels ({config.data.minPixels.toLocaleString('en-US')} / {config.data.maxPixels.toLocaleString('en-US')}).
            </span>
          </div>
          {ds && images.length > 0 && (
            <div>
              <span className="field-label">or an image of “{ds.name}”</span>{' '}
              <span className="field-help">(its min / max pixels, the frame its boxes were trained in)</span>
              <div className="pick-grid" data-testid="pg-images">
                {images.map((r) => (
                  <Thumb key={r.id} id={r.id} name={r.name} on={pg.image?.kind === 'dataset' && pg.image.imageId === r.id} onPick={() => pickDataset(r.id)} />
                ))}
              </div>
            </div>
          )}
        </div>
        {fileError && <p className="error-text">{fileError}</p>}
        <label className="field wide pg-question">
          <span className="field-label">Question</span>
          <textarea rows={2} value={pg.question} onChange={(e) => usePlayground.setState({ question: e.target.value })} name="question" data-testid="pg-question" placeholder="Where is the cat? Answer with bbox_2d." />
        </label>
        <div className="grid">
          <div className="field">
            <span className="field-label">Adapter</span>
            <div className="pg-modes" role="radiogroup" aria-label="Adapter">
              {MODES.map((m) => (
                <label key={m.id} className={pg.mode === m.id ? 'pg-mode on' : 'pg-mode'}>
                  <input type="radio" name="pg-mode" checked={pg.mode === m.id} onChange={() => usePlayground.setState({ mode: m.id })} data-testid={`pg-mode-${m.id}`} /> {m.label}
                </label>
              ))}
            </div>
          </div>
          <label className="field">
            <span className="field-label">Which adapter</span>
            <select value={pg.runId} onChange={(e) => usePlayground.setState({ runId: e.target.value })} disabled={pg.mode === 'base'} data-testid="pg-adapter">
              <option value="">the adapter on the model now (last run or import)</option>
              {runs.map((r) => (
                <option key={r.id} value={r.id}>
                  {r.name} — {r.method.toUpperCase()}, {r.status}
                  {r.checkpointStep != null ? `, step ${r.checkpointStep}` : ''}
                </option>
              ))}
            </select>
            <span className="field-help">A run's last checkpoint, or an imported adapter.</span>
          </label>
        </div>
        <SamplingForm s={pg.sampling} d={pg.defaults} />
        <div className="run-buttons">
          <span title={reason ?? 'Ask'}>
            <button className="primary" disabled={reason !== undefined} onClick={() => void ask(config)} data-testid="pg-ask">
              Ask
            </button>
          </span>
          <button disabled={!pg.running || pg.stopping} onClick={() => void stopAsking()} data-testid="pg-stop">
            Stop
          </button>
          {reason && !pg.running && <span className="muted small">{reason.charAt(0).toUpperCase() + reason.slice(1)}.</span>}
        </div>
        {pg.error && (
          <p className="error-text" role="alert" data-testid="pg-error">
            {pg.error}
          </p>
        )}
      </section>
      {pg.image && (
        <section className="card" data-testid="pg-results">
          <div className="card-head">
            <h2>Answers</h2>
            <span className="muted small" data-testid="pg-image">
              {pg.image.name} — {pg.image.width}×{pg.image.height} px{pg.image.kind === 'dataset' ? ' (dataset image)' : ''}
            </span>
          </div>
          <div className={`pg-panes${Object.keys(pg.answers).length > 1 ? ' two' : ''}`}>
            {(Object.keys(pg.answers).length ? (Object.keys(pg.answers) as Side[]) : sidesOf(pg.mode).slice(0, 1)).map((side) => (
              <Pane key={side} side={side} image={pg.image!} answer={pg.answers[side]} />
            ))}
          </div>
        </section>
      )}
    </div>
  );
}

function Thumb({ id, name, on, onPick }: { id: string; name: string; on: boolean; onPick: () => void }) {
  const url = useUrl(id, 'thumb');
  return (
    <button type="button" className={on ? 'pick on' : 'pick'} onClick={onPick} title={name} data-testid="pg-pick">
      {url ? <img src={url} alt={name} /> : <span className="pick-ph" />}
      <span className="pick-name">{name}</span>
    </button>
  );
}

function ImageOf({ image }: { image: PlaygroundImage }) {
  const stored = useUrl(image.kind === 'dataset' ? image.imageId : '', 'image');
  const url = image.kind === 'file' ? image.url : stored;
  return url ? <img src={url} alt={image.name} /> : null;
}

const STATUS: Record<Answer['status'], string> = { waiting: 'waiting', streaming: 'generating…', done: 'done', stopped: 'stopped', skipped: 'not run (stopped)', error: 'failed' };

function Pane({ side, image, answer }: { side: Side; image: PlaygroundImage; answer?: Answer }) {
  const cls = side === 'adapter' ? 'bx-adapter' : 'bx-base';
  return (
    <figure className={`pred pg-pane answer-${side}`} data-testid={`pg-answer-${side}`} data-status={answer?.status ?? 'none'}>
      <div className="pred-img">
        <ImageOf image={image} />
        <svg viewBox={`0 0 ${image.width} ${image.height}`} preserveAspectRatio="none">
          {answer?.boxes.map((b, i) => (
            <rect key={i} className={cls} x={b.bbox[0]} y={b.bbox[1]} width={Math.max(0, b.bbox[2] - b.bbox[0])} height={Math.max(0, b.bbox[3] - b.bbox[1])} data-testid={`pg-box-${side}`}>
              {b.label && <title>{b.label}</title>}
            </rect>
          ))}
        </svg>
      </div>
      <figcaption>
        <div>
          <span className="answer-who">{side === 'adapter' ? 'adapter on' : 'base model (adapter off)'}</span>{' '}
          <span className="muted small" data-testid={`pg-status-${side}`}>
            {answer ? STATUS[answer.status] : 'ask a question'}
            {answer && answer.tokens > 0 && ` · ${answer.tokens} tokens`}
            {answer?.ms !== undefined && answer.tokens > 0 && ` · ${fmtValue(answer.tokens / (answer.ms / 1000))} tok/s`}
            {answer && answer.boxes.length > 0 && ` · ${answer.boxes.length} box${answer.boxes.length > 1 ? 'es' : ''}`}
          </span>
        </div>
        {answer?.error && <div className="error-text">{answer.error}</div>}
        <code className="answer-text pg-text" data-testid={`pg-text-${side}`}>
          {answer?.text ?? ''}
        </code>
      </figcaption>
    </figure>
  );
}

function SamplingForm({ s, d }: { s: Sampling; d: ModelDefaults }) {
  const problems = samplingProblems(s);
  const def = (k: keyof Sampling) => `default ${String(d.sampling[k])} (${d.sources[k]})`;
  return (
    <>
      <div className="grid pg-sampling">
        <label className="field toggle">
          <span className="field-label">Decoding</span>
          <span>
            <input type="checkbox" checked={s.greedy} onChange={(e) => setSampling({ greedy: e.target.checked })} name="greedy" data-testid="pg-greedy" /> greedy
          </span>
          <span className="field-help">
            Default {d.sampling.greedy ? 'greedy' : 'sampling'} ({d.sources.greedy}); off: temperature → top-k → top-p, seeded.
          </span>
        </label>
        <NumField k="temperature" label="Temperature" s={s} disabled={s.greedy} help={def('temperature')} error={problems.temperature} />
        <NumField k="topK" label="Top-k" s={s} disabled={s.greedy} help={`${def('topK')}; 0 keeps all`} error={problems.topK} />
        <NumField k="topP" label="Top-p" s={s} disabled={s.greedy} help={`${def('topP')}; 1 keeps all`} error={problems.topP} />
        <NumField k="maxNewTokens" label="Max new tokens" s={s} help={def('maxNewTokens')} error={problems.maxNewTokens} />
        <NumField k="seed" label="Seed" s={s} disabled={s.greedy} help={`${def('seed')}; same seed, same answer`} error={problems.seed} />
        <NumField k="repetitionPenalty" label="Repetition penalty" s={s} help={`${def('repetitionPenalty')}; 1 is off`} error={problems.repetitionPenalty} />
        <div className="field">
          <span className="field-label">&nbsp;</span>
          <button type="button" onClick={resetSampling} data-testid="pg-defaults">
            Reset to defaults
          </button>
        </div>
      </div>
      <GenerationNotes d={d} />
    </>
  );
}

/** What the model's generation_config.json gave that the form does not show: bad fields, settings not applied, stop ids. */
function GenerationNotes({ d }: { d: ModelDefaults }) {
  if (!d.warnings.length && !d.notApplied.length && !d.eosTokenIds) return null;
  return (
    <ul className="warn-list pg-gen-notes" data-testid="pg-gen-notes">
      {d.warnings.map((w) => (
        <li key={w} data-testid="pg-gen-warning">
          {w}
        </li>
      ))}
      {d.notApplied.map((w) => (
        <li key={w} data-testid="pg-gen-not-applied">
          {w}
        </li>
      ))}
      {d.eosTokenIds && <li className="muted">Stops at token {d.eosTokenIds.length > 1 ? 'ids' : 'id'} {d.eosTokenIds.join(', ')} (eos_token_id from the model's generation_config.json) and at the end of the chat turn.</li>}
    </ul>
  );
}

/** The number typed ('' is no number: NaN, which the checks name). */
const parseNum = (t: string) => (t.trim() === '' ? NaN : Number(t));

function NumField({ k, label, s, help, error, disabled }: { k: Exclude<keyof Sampling, 'greedy'>; label: string; s: Sampling; help: string; error?: string; disabled?: boolean }) {
  // the typed text is kept while it does not parse ("0.", ""), the number goes to the store
  const [text, setText] = useState(String(s[k]));
  const value = s[k];
  useEffect(() => {
    if (!Object.is(parseNum(text), value)) setText(String(value)); // changed elsewhere (a reset)
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [value]);
  return (
    <label className={`field${error && !disabled ? ' has-error' : ''}`}>
      <span className="field-label">{label}</span>
      <input
        name={k}
        inputMode="decimal"
        value={text}
        disabled={disabled}
        data-testid={`pg-${k}`}
        onChange={(e) => {
          setText(e.target.value);
          setSampling({ [k]: parseNum(e.target.value) });
        }}
      />
      {error && !disabled ? <span className="field-error">{error}</span> : <span className="field-help">{help}</span>}
    </label>
  );
}
