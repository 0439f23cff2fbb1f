// The Export screen: the trained adapter in peft's layout, and its adapter_config.json.
import { useState } from 'react';
import { useTrainConfig } from '../store/runConfig.ts';
import { useRuns } from '../store/runs.ts';
import { useRuntime } from '../store/runtime.ts';
import { adapterConfig, type AdapterLayout } from './recipe.ts';

export function Export() {
  const config = useTrainConfig((s) => s.config);
  const runs = useRuns((s) => s.runs);
  const gpu = useRuntime((s) => s.gpu);
  const hasExport = useRuntime((s) => s.methods.includes('exportAdapter'));
  const [layout, setLayout] = useState<AdapterLayout>('transformers');
  const [runId, setRunId] = useState('');
  const run = runs.find((r) => r.id === runId);
  const json = JSON.stringify(adapterConfig(run?.config ?? config, layout), null, 2);

  let reason: string | undefined;
  if (gpu.status === 'unavailable') reason = 'WebGPU unavailable: see the message at the top';
  else if (gpu.status === 'starting') reason = 'engine starting…';
  else if (!hasExport) reason = 'engine not loaded yet';
  else if (!run) reason = 'choose a run';

  return (
    <div className="screen export-screen" data-testid="export-screen">
      <section className="card">
        <div className="card-head">
          <h2>LoRA adapter (peft)</h2>
        </div>
        <p className="help">
          <code>adapter_model.safetensors</code> and <code>adapter_config.json</code>, loadable with{' '}
          <code>PeftModel.from_pretrained(model, folder)</code> in transformers / peft, or imported here to continue training.
        </p>
        <div className="grid">
          <label className="field">
            <span className="field-label">Run</span>
            <select name="run" value={runId} onChange={(e) => setRunId(e.target.value)}>
              <option value="">{runs.length ? 'choose a run…' : 'no runs yet'}</option>
              {runs.map((r) => (
                <option key={r.id} value={r.id}>
                  {r.name} — {r.method.toUpperCase()}, {r.status}
                </option>
              ))}
            </select>
            <span className="field-help">{run ? `${run.model}` : 'The preview below uses the current Train settings.'}</span>
          </label>
          <label className="field">
            <span className="field-label">Tensor names</span>
            <select name="layout" value={layout} onChange={(e) => setLayout(e.target.value as AdapterLayout)}>
              <option value="transformers">transformers ≥ 4.52 (model.language_model.layers.N)</option>
              <option value="legacy">older transformers (model.layers.N)</option>
            </select>
            <span className="field-help">Match the transformers version that will load the adapter.</span>
          </label>
        </div>
        <div className="run-buttons">
          <span title={reason ?? 'Download the adapter'}>
            <button className="primary" disabled={reason !== undefined} data-testid="export-adapter">
              Download adapter
            </button>
          </span>
          {reason && <span className="muted small">{reason.charAt(0).toUpperCase() + reason.slice(1)}.</span>}
        </div>
        <details className="code-preview" open>
          <summary>adapter_config.json</summary>
          <pre data-testid="adapter-config">{json}</pre>
        </details>
      </section>
    </div>
  );
}
