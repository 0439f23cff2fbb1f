// The Export screen: a run's adapter in peft's layout (adapter_model.safetensors + adapter_config.json),
// the merged model (the adapter added into the base, a whole Hugging Face folder), importing a peft
// adapter, the dataset, and "train on a cluster" (dataset + train.py + configs).
import { useEffect, useMemo, useState } from 'react';
import { zipSync } from 'fflate';
import { useTrainConfig } from '../store/runConfig.ts';
import { useRuns } from '../store/runs.ts';
import { trainer, useRuntime } from '../store/runtime.ts';
import { modelSpec, useTraining } from '../store/training.ts';
import { exportCurrent, initDatasets, useDatasetStore } from '../store/dataset.ts';
import { EXPORT_FORMATS, type ExportFormat } from '../data/formats/export.ts';
import type { AdapterFile, MergedProgress } from '../worker/api.ts';
import { callback } from '../worker/client.ts';
import { parseShardSize } from '../export/shardSize.ts';
import { fullPrecisionBaseId } from '../model/quant.ts';
import type { RunRecord } from '../store/runs.ts';
import { adapterConfig, type AdapterLayout } from './recipe.ts';
import { fmtBytes } from './GpuInfo.tsx';

/** Save bytes as a file through a temporary link. */
function download(name: string, data: Blob | Uint8Array, type = 'application/octet-stream'): void {
  const blob = data instanceof Blob ? data : new Blob([data as BlobPart], { type });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

const safeName = (s: string) => s.replace(/[^\w.-]+/g, '_').replace(/^_+|_+$/g, '') || 'adapter';

export function Export() {
  const config = useTrainConfig((s) => s.config);
  const runs = useRuns((s) => s.runs);
  const gpu = useRuntime((s) => s.gpu);
  const methods = useRuntime((s) => s.methods);
  const active = useTraining((s) => s.active);
  const [layout, setLayout] = useState<AdapterLayout>('transformers');
  const withCheckpoint = useMemo(() => runs.filter((r) => r.checkpointStep != null), [runs]);
  const [runPick, setRunPick] = useState<string | null>(null);
  const runId = runPick ?? withCheckpoint.at(-1)?.id ?? '';
  const run = runs.find((r) => r.id === runId);
  const [busy, setBusy] = useState<string | null>(null);
  const [note, setNote] = useState<{ level: 'ok' | 'error'; text: string } | null>(null);
  const [exported, setExported] = useState<{ runId: string; layout: AdapterLayout; json: string } | null>(null);
  const preview = exported && exported.runId === runId && exported.layout === layout ? exported.json : JSON.stringify(adapterConfig(run?.config ?? config, layout), null, 2);

  const engineOk = gpu.status !== 'unavailable' && gpu.status !== 'starting';
  let reason: string | undefined;
  if (gpu.status === 'unavailable') reason = 'WebGPU unavailable: see the message at the top';
  else if (gpu.status === 'starting') reason = 'engine starting…';
  else if (!methods.includes('exportAdapter')) reason = 'engine not loaded yet';
  else if (!run) reason = withCheckpoint.length ? 'choose a run' : 'train a run first: its checkpoint is what gets exported';
  else if (run.checkpointStep == null) reason = 'this run has no checkpoint yet';

  async function files(): Promise<AdapterFile[]> {
    const api = trainer();
    if (!api || !run) throw new Error('no run chosen');
    const f = await api.exportAdapter(layout === 'transformers' ? 'peft' : 'peft-legacy', run.id);
    const cfg = f.find((x) => x.name === 'adapter_config.json');
    if (cfg) setExported({ runId: run.id, layout, json: new TextDecoder().decode(cfg.bytes).trim() });
    return f;
  }

  async function act(what: string, fn: () => Promise<string>) {
    setBusy(what);
    setNote(null);
    try {
      setNote({ level: 'ok', text: await fn() });
    } catch (e) {
      setNote({ level: 'error', text: (e as Error).message });
    } finally {
      setBusy(null);
    }
  }

  const base = run ? `${safeName(run.name)}-step${run.checkpointStep ?? 0}` : 'adapter';
  const downloadZip = () =>
    act('zip', async () => {
      const f = await files();
      const zip = zipSync(Object.fromEntries(f.map((x) => [`${base}/${x.name}`, x.bytes])));
      download(`${base}-adapter.zip`, zip, 'application/zip');
      return `Saved ${base}-adapter.zip (${fmtBytes(zip.length)}): adapter_model.safetensors + adapter_config.json.`;
    });
  const downloadOne = (name: AdapterFile['name']) =>
    act(name, async () => {
      const f = (await files()).find((x) => x.name === name)!;
      download(name, f.bytes, name.endsWith('.json') ? 'application/json' : 'application/octet-stream');
      return `Saved ${name} (${fmtBytes(f.bytes.length)}).`;
    });

  return (
    <div className="screen export-screen" data-testid="export-screen">
      <section className="card">
        <div className="card-head">
          <h2>LoRA adapter (peft)</h2>
        </div>
        <p className="help">
          <code>adapter_model.safetensors</code> and <code>adapter_config.json</code> from the run's last checkpoint, loadable with{' '}
          <code>PeftModel.from_pretrained(model, folder)</code> in transformers / peft, or imported here to continue training.
        </p>
        <div className="grid">
          <label className="field">
            <span className="field-label">Run</span>
            <select name="run" value={runId} onChange={(e) => setRunPick(e.target.value)} data-testid="export-run-select">
              <option value="">{runs.length ? 'choose a run…' : 'no runs yet'}</option>
              {runs.map((r) => (
                <option key={r.id} value={r.id}>
                  {r.name} — {r.method.toUpperCase()}, {r.status}
                  {r.checkpointStep != null ? `, checkpoint step ${r.checkpointStep}` : ', no checkpoint'}
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
          <span title={reason ?? 'Download the adapter as a zip'}>
            <button className="primary" disabled={reason !== undefined || busy !== null} data-testid="export-adapter" onClick={() => void downloadZip()}>
              {busy === 'zip' ? 'Exporting…' : 'Download adapter (.zip)'}
            </button>
          </span>
          <button disabled={reason !== undefined || busy !== null} data-testid="export-safetensors" onClick={() => void downloadOne('adapter_model.safetensors')}>
            adapter_model.safetensors
          </button>
          <button disabled={reason !== undefined || busy !== null} data-testid="export-config" onClick={() => void downloadOne('adapter_config.json')}>
            adapter_config.json
          </button>
          {reason && <span className="muted small">{reason.charAt(0).toUpperCase() + reason.slice(1)}.</span>}
        </div>
        {note && (
          <p className={note.level === 'error' ? 'error-text' : 'muted'} data-testid="export-note" role={note.level === 'error' ? 'alert' : undefined}>
            {note.text}
          </p>
        )}
        <details className="code-preview" open>
          <summary>adapter_config.json{exported?.runId === runId && exported.layout === layout ? '' : ' (preview)'}</summary>
          <pre data-testid="adapter-config">{preview}</pre>
        </details>
      </section>
      <MergedExport
        run={run}
        engineReason={gpu.status === 'unavailable' || gpu.status === 'starting' || !methods.includes('exportMerged') ? (reason ?? 'engine not loaded yet') : undefined}
        runReason={reason}
      />
      <ImportAdapter disabled={!engineOk || !methods.includes('importAdapter') || (active !== null && active.state !== 'paused')} />
      <DatasetExport />
      <ClusterExport runConfig={run?.config} />
    </div>
  );
}

type DirPicker = (o?: { mode?: 'read' | 'readwrite'; id?: string }) => Promise<FileSystemDirectoryHandle>;

/**
 * "Export merged model": the run's adapter added into its base (full precision, also for a run on an
 * NF4 base), a complete transformers folder. With the File System Access API the worker writes
 * straight into a folder the user picks, file by file; otherwise each file is downloaded in turn.
 */
function MergedExport({ run, engineReason, runReason }: { run?: RunRecord; engineReason?: string; runReason?: string }) {
  const imported = useTraining((s) => s.imported);
  const [fromPick, setFrom] = useState<'run' | 'imported'>('run');
  const from = imported ? fromPick : 'run';
  const reason = engineReason ?? (from === 'run' ? runReason : undefined);
  const [maxShard, setMaxShard] = useState('5GB');
  const [busy, setBusy] = useState(false);
  const [cancelling, setCancelling] = useState(false);
  const [progress, setProgress] = useState<MergedProgress | null>(null);
  const [note, setNote] = useState<{ level: 'ok' | 'cancelled' | 'error'; text: string } | null>(null);
  const canCancel = useRuntime((s) => s.methods.includes('cancelExportMerged'));
  const picker = (window as Window & { showDirectoryPicker?: DirPicker }).showDirectoryPicker;
  let shardError: string | undefined;
  try {
    parseShardSize(maxShard);
  } catch (e) {
    shardError = (e as Error).message;
  }
  const m = from === 'run' ? run?.config.model : undefined;
  const hub = m?.source === 'hub' ? m.hubId.trim() : undefined;
  const fp = hub ? fullPrecisionBaseId(hub) : undefined;
  const nf4 = m?.quantize === 'nf4' || (hub !== undefined && fp !== hub);
  const disabled = reason !== undefined || busy || shardError !== undefined;

  async function go(toFolder: boolean) {
    const api = trainer();
    if (!api || (from === 'run' && !run)) return;
    setNote(null);
    let dir: FileSystemDirectoryHandle | undefined;
    if (toFolder) {
      try {
        dir = await picker!({ mode: 'readwrite', id: 'patchwork-merged' });
      } catch {
        return; // the user closed the picker
      }
    }
    setBusy(true);
    setCancelling(false);
    setProgress(null);
    try {
      const r = await api.exportMerged(
        { runId: from === 'run' ? run!.id : undefined, maxShardSize: maxShard.trim(), dir },
        dir ? undefined : callback(async (f: { name: string; blob: Blob }) => download(f.name, f.blob)),
        callback((p: MergedProgress) => setProgress(p)),
      );
      const shards = r.files.filter((f) => f.name.endsWith('.safetensors')).length;
      setNote({
        level: 'ok',
        text: `${dir ? `Wrote ${r.files.length} files into the folder "${dir.name}"` : `Downloaded ${r.files.length} files (put them in one folder)`}: ${r.files.map((f) => f.name).join(', ')}. ${(r.totalParameters / 1e6).toFixed(1)} M parameters, ${fmtBytes(r.totalSize)} BF16 in ${shards} shard${shards > 1 ? 's' : ''}, ${r.merged} layers merged into ${r.base}.${r.notes.length ? ` Note: ${r.notes.join('; ')}.` : ''} Load it with Qwen2_5_VLForConditionalGeneration.from_pretrained(folder).`,
      });
    } catch (e) {
      const text = (e as Error).message;
      // the engine's cancel message (Engine.exportMerged) is an outcome the user asked for, not a failure
      setNote({ level: /^Merged export cancelled/.test(text) ? 'cancelled' : 'error', text });
    } finally {
      setBusy(false);
      setCancelling(false);
    }
  }

  async function cancel() {
    setCancelling(true);
    await trainer()?.cancelExportMerged();
  }

  return (
    <section className="card" data-testid="export-merged">
      <div className="card-head">
        <h2>Merged model</h2>
      </div>
      <p className="help">
        The run's adapter added into the base weights (W + (lora_alpha / r)·B·A, as peft's <code>merge_and_unload()</code>), saved as transformers saves a model: BF16{' '}
        <code>model-0000i-of-0000n.safetensors</code> shards with <code>model.safetensors.index.json</code> (one <code>model.safetensors</code> when it fits in one shard),
        the base's <code>generation_config.json</code> and tokenizer (<code>tokenizer.json</code>, <code>tokenizer_config.json</code>, …), <code>chat_template.json</code>,{' '}
        <code>preprocessor_config.json</code>, and <code>config.json</code> last (a folder cut short has none, so it never passes for a model). A run trained on a 4-bit (NF4)
        base is merged into the full-precision base, as peft merges a QLoRA adapter. It loads with no adapter and no peft. Streamed one tensor at a time: the whole model is
        never in memory. {picker ? 'Pick an empty folder (or an earlier export to replace).' : 'This browser cannot write into a folder: the files download one by one (allow multiple downloads).'}
      </p>
      {nf4 && (
        <p className="muted small" data-testid="export-merged-nf4">
          Trained on a 4-bit (NF4) base: the adapter is merged into the full-precision weights{fp ? ` of ${fp}` : ''}, as peft merges a QLoRA adapter.
        </p>
      )}
      <div className="grid">
        {imported && (
          <label className="field">
            <span className="field-label">Adapter</span>
            <select name="merged-from" value={from} onChange={(e) => setFrom(e.target.value as 'run' | 'imported')} data-testid="export-merged-from">
              <option value="run">the run chosen above{run ? ` (${run.name})` : ''}</option>
              <option value="imported">the adapter on the model now ({imported.label})</option>
            </select>
          </label>
        )}
        <label className="field">
          <span className="field-label">Max shard size</span>
          <input name="max-shard-size" value={maxShard} onChange={(e) => setMaxShard(e.target.value)} data-testid="export-merged-shard" />
          <span className={shardError ? 'error-text small' : 'field-help'}>{shardError ?? 'As transformers\' max_shard_size ("5GB" = 5·10⁹ bytes; transformers 5 defaults to "50GB"). Smaller shards download more easily.'}</span>
        </label>
      </div>
      <div className="run-buttons">
        {picker && (
          <span title={reason ?? 'Write the merged model into a folder you pick'}>
            <button className="primary" disabled={disabled} data-testid="export-merged-folder" onClick={() => void go(true)}>
              {busy ? 'Exporting…' : 'Export merged model to a folder…'}
            </button>
          </span>
        )}
        <span title={reason ?? 'Download the merged model file by file'}>
          <button className={picker ? '' : 'primary'} disabled={disabled} data-testid="export-merged-download" onClick={() => void go(false)}>
            {busy && !picker ? 'Exporting…' : 'Download merged model files'}
          </button>
        </span>
        {busy && canCancel && (
          <button disabled={cancelling} data-testid="export-merged-cancel" onClick={() => void cancel()}>
            {cancelling ? 'Cancelling…' : 'Cancel'}
          </button>
        )}
        {reason && <span className="muted small">{reason.charAt(0).toUpperCase() + reason.slice(1)}.</span>}
      </div>
      {busy && progress && (
        <div data-testid="export-merged-progress">
          <progress max={progress.total} value={progress.bytes} />
          <span className="muted small" data-testid="export-merged-progress-text">
            {' '}
            {progress.file
              ? `file ${progress.filesDone + 1} of ${progress.files}: ${progress.file}${progress.tensor ? ` (${progress.tensor})` : ''}`
              : `all ${progress.files} files written`}{' '}
            — {fmtBytes(progress.bytes)} of {fmtBytes(progress.total)} ({Math.floor((100 * progress.bytes) / Math.max(1, progress.total))} %)
          </span>
        </div>
      )}
      {note && (
        <p className={note.level === 'error' ? 'error-text' : 'muted'} data-testid="export-merged-note" data-level={note.level} role={note.level === 'error' ? 'alert' : undefined}>
          {note.text}
        </p>
      )}
    </section>
  );
}

function ImportAdapter({ disabled }: { disabled: boolean }) {
  const config = useTrainConfig((s) => s.config);
  const imported = useTraining((s) => s.imported);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  async function onFiles(list: FileList | null) {
    const api = trainer();
    if (!api || !list?.length) return;
    setBusy(true);
    setError(undefined);
    try {
      const files = await Promise.all([...list].map(async (f) => ({ name: f.webkitRelativePath || f.name, bytes: new Uint8Array(await f.arrayBuffer()) })));
      const info = await api.importAdapter(files, await modelSpec(config));
      useTraining.setState({ imported: info });
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  }
  return (
    <section className="card" data-testid="import-adapter">
      <div className="card-head">
        <h2>Import a peft adapter</h2>
      </div>
      <p className="help">
        Pick <code>adapter_config.json</code> and <code>adapter_model.safetensors</code> (either tensor-name layout). The adapter goes on the Train screen's model: evaluate it
        in Predictions ("adapter on the model now"), or continue training it (Train → "continue from the imported adapter").
      </p>
      <div className="run-buttons">
        <input type="file" multiple accept=".json,.safetensors" disabled={disabled || busy} onChange={(e) => void onFiles(e.target.files)} data-testid="import-adapter-files" />
        {busy && <span className="muted small">Loading…</span>}
      </div>
      {imported && (
        <p className="ok-text" data-testid="import-adapter-info">
          {imported.label}: {imported.modules} modules, r = {imported.r}, {(imported.params / 1e6).toFixed(3)} M parameters.
        </p>
      )}
      {error && <p className="error-text">{error}</p>}
    </section>
  );
}

function DatasetExport() {
  const ds = useDatasetStore((s) => s.datasets.find((d) => d.id === s.currentId));
  useEffect(() => void initDatasets(), []);
  const formats = ds ? EXPORT_FORMATS.filter((f) => f.kinds.includes(ds.kind)) : [];
  const [format, setFormat] = useState<ExportFormat>('swift');
  const fmt = formats.find((f) => f.format === format) ?? formats[0];
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState<string>();
  async function run() {
    if (!fmt) return;
    setBusy(true);
    try {
      const r = await exportCurrent(fmt.format, true);
      if (r) {
        download(r.filename, r.blob);
        setNote(`Saved ${r.filename}${r.warnings.length ? ` — ${r.warnings.join('; ')}` : ''}.`);
      }
    } catch (e) {
      setNote(`Export failed: ${(e as Error).message}`);
    } finally {
      setBusy(false);
    }
  }
  return (
    <section className="card" data-testid="export-dataset">
      <div className="card-head">
        <h2>Dataset</h2>
        {ds && <span className="muted small">{ds.name}</span>}
      </div>
      {!ds ? (
        <p className="muted">No dataset open: add images on the Dataset screen.</p>
      ) : (
        <>
          <div className="run-buttons">
            <select value={fmt?.format} onChange={(e) => setFormat(e.target.value as ExportFormat)} name="dataset-format">
              {formats.map((f) => (
                <option key={f.format} value={f.format}>
                  {f.title}
                </option>
              ))}
            </select>
            <button onClick={() => void run()} disabled={busy} data-testid="export-dataset-run">
              {busy ? 'Exporting…' : 'Download dataset (.zip)'}
            </button>
          </div>
          <p className="help">{fmt?.hint}. Images included, as <code>images/&lt;name&gt;</code>.</p>
          {note && <p className="muted small">{note}</p>}
        </>
      )}
    </section>
  );
}

function ClusterExport({ runConfig }: { runConfig?: ReturnType<typeof useTrainConfig.getState>['config'] }) {
  const current = useTrainConfig((s) => s.config);
  const config = runConfig ?? current;
  const dsId = useDatasetStore((s) => s.currentId);
  const ds = useDatasetStore((s) => s.datasets.find((d) => d.id === s.currentId));
  const can = useRuntime((s) => s.methods.includes('clusterBundle'));
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState<{ level: 'ok' | 'error'; text: string }>();
  async function run() {
    const api = trainer();
    if (!api || !dsId) return;
    setBusy(true);
    try {
      const b = await api.clusterBundle(config, dsId);
      download(b.name, b.bytes, 'application/zip');
      setNote({ level: 'ok', text: `Saved ${b.name} (${fmtBytes(b.bytes.length)}): ${b.files.filter((f) => !f.startsWith('images/')).join(', ')} and ${b.files.filter((f) => f.startsWith('images/')).length} images.` });
    } catch (e) {
      setNote({ level: 'error', text: (e as Error).message });
    } finally {
      setBusy(false);
    }
  }
  return (
    <section className="card" data-testid="export-cluster">
      <div className="card-head">
        <h2>Train on a cluster</h2>
      </div>
      <p className="help">
        When one browser is not enough: the dataset (trl JSONL + images), <code>train.py</code> with these settings ({config.method.toUpperCase()}, r = {config.lora.r}, lr{' '}
        {config.optim.learningRate}), an accelerate config with DeepSpeed ZeRO-2, and a README with the command. It trains the same LoRA with trl on GPUs; the adapter
        comes back through "Import a peft adapter".
      </p>
      <div className="run-buttons">
        <button onClick={() => void run()} disabled={!can || !ds || busy} data-testid="export-cluster-run">
          {busy ? 'Packing…' : 'Download cluster bundle (.zip)'}
        </button>
        {!ds && <span className="muted small">Open a dataset first.</span>}
      </div>
      {note && <p className={note.level === 'error' ? 'error-text' : 'muted small'}>{note.text}</p>}
    </section>
  );
}
