// The Predictions screen: run an adapter on chosen images, draw its boxes over the labelled ones,
// IoU per image and the mean, and the base model side by side. Running needs the engine's
// `generate` (and a loaded model); until the worker has it the run button says so.
import { useState } from 'react';
import { useRuns } from '../store/runs.ts';
import { useTrainConfig } from '../store/runConfig.ts';
import { useRuntime } from '../store/runtime.ts';

export function Predictions() {
  const runs = useRuns((s) => s.runs);
  const data = useTrainConfig((s) => s.config.data);
  const gpu = useRuntime((s) => s.gpu);
  const hasGenerate = useRuntime((s) => s.methods.includes('generate'));
  const [runId, setRunId] = useState<string>('');
  const [compare, setCompare] = useState(true);
  const [maxNewTokens, setMaxNewTokens] = useState(128);

  let reason: string | undefined;
  if (gpu.status === 'unavailable') reason = 'WebGPU unavailable: see the message at the top';
  else if (gpu.status === 'lost') reason = 'GPU device lost: reconnect first';
  else if (gpu.status === 'starting') reason = 'engine starting…';
  else if (!hasGenerate) reason = 'engine not loaded yet';

  return (
    <div className="screen predictions-screen" data-testid="predictions-screen">
      <section className="card">
        <div className="card-head">
          <h2>Predictions</h2>
        </div>
        <p className="help">
          Runs the model on images of the current dataset and draws the predicted boxes (dashed) over the labelled ones, with the IoU
          per image and the mean. With comparison on, the base model (LoRA off) answers the same questions side by side.
        </p>
        <div className="grid">
          <label className="field">
            <span className="field-label">Adapter</span>
            <select value={runId} onChange={(e) => setRunId(e.target.value)} name="adapter">
              <option value="">base model (no adapter)</option>
              {runs.map((r) => (
                <option key={r.id} value={r.id}>
                  {r.name} — {r.method.toUpperCase()}, {r.status}
                </option>
              ))}
            </select>
            <span className="field-help">{runs.length ? 'A run from the history.' : 'No runs yet: train one on the Train screen.'}</span>
          </label>
          <label className="field toggle">
            <span className="field-label">Before / after</span>
            <span>
              <input type="checkbox" checked={compare} onChange={(e) => setCompare(e.target.checked)} /> also run the base model
            </span>
            <span className="field-help">Shows what the fine-tuning changed.</span>
          </label>
          <label className="field">
            <span className="field-label">Max new tokens</span>
            <input name="maxNewTokens" inputMode="numeric" value={maxNewTokens} onChange={(e) => setMaxNewTokens(Math.max(1, Math.floor(Number(e.target.value) || 1)))} />
            <span className="field-help">Greedy decoding; one box answer is ~30 tokens.</span>
          </label>
        </div>
        <p className="help">
          Images are resized with min pixels {data.minPixels.toLocaleString('en-US')} and max pixels {data.maxPixels.toLocaleString('en-US')}, the
          values of the Train screen: boxes are predicted in that frame and mapped back to the original pixels.
        </p>
        <div className="run-buttons">
          <span title={reason ?? 'Run predictions'}>
            <button className="primary" disabled={reason !== undefined} data-testid="predict-button">
              Run predictions
            </button>
          </span>
          {reason && <span className="muted small">{reason.charAt(0).toUpperCase() + reason.slice(1)}.</span>}
        </div>
      </section>
    </div>
  );
}
