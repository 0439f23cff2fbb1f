// The Train screen: model, method, presets, LoRA and optimizer settings (persisted), the run
// controls, live charts of the runs, and the run history.
import { useEffect, useMemo, useRef, useState, type ReactNode } from 'react';
import { set as idbSet } from 'idb-keyval';
import {
  DECODER_TARGETS,
  KNOWN_DECODERS,
  PRESETS,
  loraParamCount,
  loraScale,
  missingModelFiles,
  useTrainConfig,
  type Method,
  type ModelSource,
  type Reward,
  type TrainConfig,
} from '../store/runConfig.ts';
import { runDb } from '../store/runPersist.ts';
import { useRuns, type RunRecord } from '../store/runs.ts';
import { trainer, useRuntime } from '../store/runtime.ts';
import { initDatasets, useDatasetStore } from '../store/dataset.ts';
import {
  continueRun, deleteRunEverywhere, localModelFiles, pauseRun, resumeRun, setLocalModelFiles, startRun, stopRun, trainableOf, useTraining, type ActiveRun,
} from '../store/training.ts';
import { formErrors, trainWarnings, type FieldMessages } from './trainWarnings.ts';
import type { EstimateResult } from '../worker/api.ts';
import { useSplitPredictions } from '../store/splitPredictions.ts';
import { usePredictions } from '../store/predictions.ts';
import { PLAYGROUND_BUSY, usePlayground } from '../store/playground.ts';
import { MetricChart, SmoothingSlider, fmtValue, useSmoothing } from './Charts.tsx';
import { chartLines, chartSpecs, latestEval } from './chartSeries.ts';
import { DEFAULT_CONFIG, evalImageCount } from '../config/config.ts';
import { GpuInfo, fmtBytes } from './GpuInfo.tsx';

// ---- small form pieces ----------------------------------------------------------------------

/** A labelled input with its error (blocks Train), else its warning (legal but odd; never blocks), else its help. */
function Field({ label, help, error, warn, children, wide }: { label: string; help?: ReactNode; error?: string; warn?: string; children: ReactNode; wide?: boolean }) {
  return (
    <label className={`field${error ? ' has-error' : warn ? ' has-warn' : ''}${wide ? ' wide' : ''}`}>
      <span className="field-label">{label}</span>
      {children}
      {error ? <span className="field-error">{error}</span> : warn ? <span className="field-warn" data-testid="field-warn">{warn}</span> : help ? <span className="field-help">{help}</span> : null}
    </label>
  );
}

/** A number input that lets the user type intermediate text ("1e-", "0.") and commits valid numbers. */
function NumInput({ value, onChange, step, min, max, name }: { value: number; onChange: (v: number) => void; step?: number; min?: number; max?: number; name: string }) {
  const [text, setText] = useState(String(value));
  const focused = useRef(false);
  useEffect(() => {
    if (!focused.current) setText(String(value));
  }, [value]);
  return (
    <input
      name={name}
      inputMode="decimal"
      value={text}
      step={step}
      min={min}
      max={max}
      onFocus={() => (focused.current = true)}
      onBlur={() => {
        focused.current = false;
        setText(String(value));
      }}
      onChange={(e) => {
        setText(e.target.value);
        const v = Number(e.target.value);
        if (e.target.value.trim() !== '' && Number.isFinite(v)) onChange(v);
      }}
    />
  );
}

function Section({ title, children, aside }: { title: string; children: ReactNode; aside?: ReactNode }) {
  return (
    <section className="card">
      <div className="card-head">
        <h2>{title}</h2>
        {aside}
      </div>
      {children}
    </section>
  );
}

// ---- settings ---------------------------------------------------------------------------------

const METHODS: { id: Method; name: string; text: string }[] = [
  { id: 'sft', name: 'SFT', text: 'Supervised fine-tuning: learn to give the labelled answers (boxes, captions). Start here.' },
  { id: 'dpo', name: 'DPO', text: 'Preference pairs: make the chosen answer more likely than the rejected one, relative to the base model.' },
  { id: 'grpo', name: 'GRPO', text: 'Sample a group of answers per prompt, score them with rewards, reinforce those above the group mean.' },
  { id: 'ppo', name: 'PPO', text: 'Rewards with a learned value head and clipped updates; heavier than GRPO, steadier on long answers.' },
];

const SOURCES: { id: ModelSource; name: string; text: string }[] = [
  { id: 'tiny', name: 'Built-in tiny', text: 'A few-layer Qwen2.5-VL with the real architecture; trains in seconds, for trying the pipeline.' },
  { id: 'hub', name: 'Hugging Face Hub', text: 'Download a model folder (config, tokenizer, safetensors) by id; cached in the browser.' },
  { id: 'local', name: 'Local folder', text: 'A Hugging Face model folder on this computer; nothing is uploaded.' },
];

const REWARDS: { id: Reward; name: string; text: string }[] = [
  { id: 'iou', name: 'IoU', text: 'overlap of the predicted box with the labelled one' },
  { id: 'format', name: 'Format', text: 'the answer parses as {"bbox_2d": [...], "label": ...}' },
  { id: 'exact', name: 'Exact match', text: 'the text answer equals the label' },
];

function ModelPicker({ c, errors, update, memory }: { c: TrainConfig; errors: Record<string, string>; update: Update; memory?: EstimateResult['memory'] }) {
  const fileInput = useRef<HTMLInputElement>(null);
  const [pickError, setPickError] = useState<string>();
  const m = c.model;

  async function pickFolder() {
    setPickError(undefined);
    const w = window as Window & { showDirectoryPicker?: (o?: { mode?: 'read' }) => Promise<FileSystemDirectoryHandle> };
    if (!w.showDirectoryPicker) return fileInput.current?.click();
    try {
      const handle = await w.showDirectoryPicker({ mode: 'read' });
      const files: string[] = [];
      const picked: File[] = [];
      const it = (handle as unknown as { values(): AsyncIterable<FileSystemHandle> }).values();
      for await (const entry of it) {
        if (entry.kind !== 'file') continue;
        files.push(entry.name);
        picked.push(await (entry as FileSystemFileHandle).getFile());
      }
      setLocalModelFiles(picked);
      // The handle itself is kept in IndexedDB so the engine can reopen the folder after a reload.
      await idbSet('model.localHandle', handle, runDb());
      update({ model: { local: { name: handle.name, files: files.sort() } } });
    } catch (e) {
      if ((e as DOMException).name !== 'AbortError') setPickError(`Could not read the folder: ${(e as Error).message}`);
    }
  }

  function fromInput(list: FileList | null) {
    if (!list?.length) return;
    const first = list[0].webkitRelativePath.split('/')[0] || 'folder';
    const top = [...list].filter((f) => f.webkitRelativePath.split('/').length === 2);
    setLocalModelFiles(top);
    const files = top.map((f) => f.name);
    update({ model: { local: { name: first, files: files.sort() } } });
  }

  const known = KNOWN_DECODERS[m.hubId.trim()];
  return (
    <Section title="Model">
      <div className="segmented" role="radiogroup" aria-label="Model source">
        {SOURCES.map((s) => (
          <button key={s.id} role="radio" aria-checked={m.source === s.id} className={m.source === s.id ? 'seg active' : 'seg'} onClick={() => update({ model: { source: s.id } })} title={s.text}>
            {s.name}
          </button>
        ))}
      </div>
      <p className="help">{SOURCES.find((s) => s.id === m.source)?.text}</p>
      {m.source === 'hub' && (
        <div className="grid">
          <Field label="Model id" error={errors['model.hubId']} wide help={known ? `decoder: ${known.layers} layers, hidden ${known.hidden}` : 'a Qwen2.5-VL checkpoint'}>
            <input name="hubId" list="hub-models" value={m.hubId} onChange={(e) => update({ model: { hubId: e.target.value } })} spellCheck={false} />
            <datalist id="hub-models">
              <option value="Qwen/Qwen2.5-VL-3B-Instruct" />
              <option value="Qwen/Qwen2.5-VL-7B-Instruct" />
              <option value="unsloth/Qwen2.5-VL-3B-Instruct-unsloth-bnb-4bit" />
            </datalist>
          </Field>
          <Field label="Endpoint" error={errors['model.endpoint']} help="https://huggingface.co, or a mirror / your own server with the same URL layout">
            <input name="endpoint" value={m.endpoint} onChange={(e) => update({ model: { endpoint: e.target.value } })} spellCheck={false} />
          </Field>
          <Field label="Revision" help="branch, tag or commit">
            <input name="revision" value={m.revision} onChange={(e) => update({ model: { revision: e.target.value } })} spellCheck={false} />
          </Field>
        </div>
      )}
      {m.source === 'local' && (
        <div className="local-folder">
          <button onClick={() => void pickFolder()}>Choose folder…</button>
          <input
            ref={fileInput}
            type="file"
            hidden
            webkitdirectory=""
            multiple
            onChange={(e) => fromInput(e.target.files)}
          />
          {m.local ? (
            <div className="folder-check">
              <b>{m.local.name}</b>: {m.local.files.length} files
              {missingModelFiles(m.local.files).length === 0 ? (
                <span className="ok-text"> — config.json, tokenizer.json and weights found</span>
              ) : (
                <span className="error-text"> — missing {missingModelFiles(m.local.files).join(', ')}</span>
              )}
            </div>
          ) : (
            <span className="muted">Needs config.json, tokenizer.json and *.safetensors (optionally model.safetensors.index.json).</span>
          )}
          {pickError && <div className="error-text">{pickError}</div>}
        </div>
      )}
      <BasePrecision c={c} errors={errors} update={update} memory={memory} />
    </Section>
  );
}

/** model.quantize / model.quantizeVision, each choice with its memory estimate (engine estimate → memoryReport.byPrecision). */
function BasePrecision({ c, errors, update, memory }: { c: TrainConfig; errors: Record<string, string>; update: Update; memory?: EstimateResult['memory'] }) {
  const m = c.model;
  const pre = !!memory?.prequantized;
  const nf4 = m.quantize === 'nf4' || pre;
  const size = (b?: number) => (b === undefined ? null : <span className="muted small"> ~{fmtBytes(b)}</span>);
  const choices = [
    { id: 'none' as const, name: 'BF16', bytes: memory?.byPrecision.bf16, text: 'The frozen base in bfloat16, as the checkpoint ships it.' },
    { id: 'nf4' as const, name: '4-bit NF4', bytes: memory?.byPrecision.nf4, text: 'QLoRA: the frozen Linear weights in bitsandbytes NF4 (about a quarter of the memory); the LoRA trains in full precision.' },
  ];
  return (
    <div className={`base-precision${errors['model.quantize'] ? ' has-error' : ''}`} data-testid="base-precision">
      <span className="field-label">Base precision</span>
      <div className="segmented" role="radiogroup" aria-label="Base precision">
        {choices.map((q) => (
          <button key={q.id} role="radio" aria-checked={(q.id === 'nf4') === nf4} className={(q.id === 'nf4') === nf4 ? 'seg active' : 'seg'} disabled={pre && q.id === 'none'} title={q.text} onClick={() => update({ model: { quantize: q.id } })}>
            {q.name}
            {size(q.bytes)}
          </button>
        ))}
      </div>
      <label className="check">
        <input type="checkbox" name="model.quantizeVision" checked={m.quantizeVision} disabled={!nf4} onChange={(e) => update({ model: { quantizeVision: e.target.checked } })} /> quantise the vision tower too
      </label>
      {pre ? (
        <p className="help" data-testid="prequantized">This checkpoint is bitsandbytes 4-bit (config.json quantization_config): it loads as NF4 whatever is chosen here.</p>
      ) : (
        <p className="help">{choices.find((q) => (q.id === 'nf4') === nf4)?.text}{memory ? ' The sizes are one training step with these settings.' : ''}</p>
      )}
      {errors['model.quantize'] && <div className="error-text">{errors['model.quantize']}</div>}
    </div>
  );
}

type Update = (patch: Parameters<ReturnType<typeof useTrainConfig.getState>['update']>[0]) => void;

function MethodPicker({ c, errors, update }: { c: TrainConfig; errors: Record<string, string>; update: Update }) {
  return (
    <Section title="Method">
      <div className="method-grid" role="radiogroup" aria-label="Training method">
        {METHODS.map((m) => (
          <button key={m.id} role="radio" aria-checked={c.method === m.id} className={c.method === m.id ? 'method active' : 'method'} onClick={() => update({ method: m.id })}>
            <b>{m.name}</b>
            <span>{m.text}</span>
          </button>
        ))}
      </div>
      {c.method === 'dpo' && (
        <div className="grid">
          <Field label="β" error={errors['dpo.beta']} help="How far the policy may move from the reference; smaller = further. 0.1 is usual.">
            <NumInput name="dpo.beta" value={c.dpo.beta} onChange={(v) => update({ dpo: { beta: v } })} />
          </Field>
        </div>
      )}
      {c.method === 'grpo' && (
        <div className="grid">
          <Field label="Generations per prompt" error={errors['grpo.numGenerations']} help="The group whose mean reward is the baseline.">
            <NumInput name="grpo.numGenerations" value={c.grpo.numGenerations} onChange={(v) => update({ grpo: { numGenerations: v } })} />
          </Field>
          <Field label="β (KL)" error={errors['grpo.beta']} help="Penalty for drifting from the base model; 0 turns it off.">
            <NumInput name="grpo.beta" value={c.grpo.beta} onChange={(v) => update({ grpo: { beta: v } })} />
          </Field>
          <Field label="Temperature" error={errors['grpo.temperature']} help="Sampling temperature of the generations.">
            <NumInput name="grpo.temperature" value={c.grpo.temperature} onChange={(v) => update({ grpo: { temperature: v } })} />
          </Field>
          <Field label="Max new tokens" error={errors['grpo.maxNewTokens']}>
            <NumInput name="grpo.maxNewTokens" value={c.grpo.maxNewTokens} onChange={(v) => update({ grpo: { maxNewTokens: v } })} />
          </Field>
          <RewardPicker value={c.grpo.rewards} error={errors['grpo.rewards']} onChange={(rewards) => update({ grpo: { rewards } })} />
        </div>
      )}
      {c.method === 'ppo' && (
        <div className="grid">
          <Field label="Clip range ε" error={errors['ppo.clipRange']} help="How far one update may move the policy ratio.">
            <NumInput name="ppo.clipRange" value={c.ppo.clipRange} onChange={(v) => update({ ppo: { clipRange: v } })} />
          </Field>
          <Field label="Value loss weight" error={errors['ppo.vfCoef']}>
            <NumInput name="ppo.vfCoef" value={c.ppo.vfCoef} onChange={(v) => update({ ppo: { vfCoef: v } })} />
          </Field>
          <Field label="KL weight" error={errors['ppo.klCoef']} help="Per-token penalty against the base model.">
            <NumInput name="ppo.klCoef" value={c.ppo.klCoef} onChange={(v) => update({ ppo: { klCoef: v } })} />
          </Field>
          <Field label="γ" error={errors['ppo.gamma']} help="Discount; 1 for one reward at the end.">
            <NumInput name="ppo.gamma" value={c.ppo.gamma} onChange={(v) => update({ ppo: { gamma: v } })} />
          </Field>
          <Field label="λ (GAE)" error={errors['ppo.lam']}>
            <NumInput name="ppo.lam" value={c.ppo.lam} onChange={(v) => update({ ppo: { lam: v } })} />
          </Field>
          <Field label="Temperature" error={errors['ppo.temperature']}>
            <NumInput name="ppo.temperature" value={c.ppo.temperature} onChange={(v) => update({ ppo: { temperature: v } })} />
          </Field>
          <Field label="Max new tokens" error={errors['ppo.maxNewTokens']}>
            <NumInput name="ppo.maxNewTokens" value={c.ppo.maxNewTokens} onChange={(v) => update({ ppo: { maxNewTokens: v } })} />
          </Field>
          <RewardPicker value={c.ppo.rewards} error={errors['ppo.rewards']} onChange={(rewards) => update({ ppo: { rewards } })} />
        </div>
      )}
    </Section>
  );
}

function RewardPicker({ value, error, onChange }: { value: Reward[]; error?: string; onChange: (r: Reward[]) => void }) {
  return (
    <div className={`field wide${error ? ' has-error' : ''}`}>
      <span className="field-label">Rewards</span>
      <div className="chips">
        {REWARDS.map((r) => (
          <label key={r.id} className="chip" title={r.text}>
            <input type="checkbox" checked={value.includes(r.id)} onChange={(e) => onChange(e.target.checked ? [...value, r.id] : value.filter((x) => x !== r.id))} />
            {r.name}
          </label>
        ))}
      </div>
      {error ? <span className="field-error">{error}</span> : <span className="field-help">Summed per answer. IoU needs box labels.</span>}
    </div>
  );
}

function LoraSettings({ c, errors, update, engineParams }: { c: TrainConfig; errors: Record<string, string>; update: Update; engineParams?: number }) {
  const l = c.lora;
  const known = c.model.source === 'hub' ? KNOWN_DECODERS[c.model.hubId.trim()] : undefined;
  const params = engineParams ?? (known ? loraParamCount(known, l) : undefined);
  return (
    <Section title="LoRA" aside={<span className="muted small">scale = {l.useRslora ? 'α/√r' : 'α/r'} = {fmtValue(loraScale(l))}</span>}>
      <div className="grid">
        <Field label="Rank r" error={errors['lora.r']} help="Size of the low-rank update; 8–64. Higher learns more, costs more.">
          <NumInput name="lora.r" value={l.r} onChange={(v) => update({ lora: { r: v } })} />
        </Field>
        <Field label="Alpha α" error={errors['lora.alpha']} help="Scales the update; often 2·r.">
          <NumInput name="lora.alpha" value={l.alpha} onChange={(v) => update({ lora: { alpha: v } })} />
        </Field>
        <Field label="Dropout" error={errors['lora.dropout']} help="peft's lora_dropout: drops LoRA inputs in SFT training forwards (seeded, so runs repeat); off for DPO/GRPO/PPO, as trl does for DPO. 0–0.1.">
          <NumInput name="lora.dropout" value={l.dropout} onChange={(v) => update({ lora: { dropout: v } })} />
        </Field>
        <label className="field toggle">
          <span className="field-label">rsLoRA</span>
          <span>
            <input type="checkbox" name="lora.useRslora" checked={l.useRslora} onChange={(e) => update({ lora: { useRslora: e.target.checked } })} /> scale by α/√r
          </span>
          <span className="field-help">Keeps high ranks from learning slower.</span>
        </label>
        <div className={`field wide${errors['lora.targetModules'] ? ' has-error' : ''}`}>
          <span className="field-label">Target modules (decoder)</span>
          <div className="chips">
            {DECODER_TARGETS.map((t) => (
              <label key={t} className="chip mono">
                <input
                  type="checkbox"
                  checked={l.targetModules.includes(t)}
                  onChange={(e) => update({ lora: { targetModules: e.target.checked ? DECODER_TARGETS.filter((x) => x === t || l.targetModules.includes(x)) : l.targetModules.filter((x) => x !== t) } })}
                />
                {t}
              </label>
            ))}
          </div>
          {errors['lora.targetModules'] ? (
            <span className="field-error">{errors['lora.targetModules']}</span>
          ) : (
            <span className="field-help">Attention (q, k, v, o) and MLP (gate, up, down) projections of every decoder layer. The vision tower stays frozen.</span>
          )}
        </div>
      </div>
      <p className="help">
        {params !== undefined ? (
          <>
            Trainable: <b>{(params / 1e6).toFixed(2)} M</b> parameters — adapter {fmtBytes(params * 4)} in f32; with gradients and AdamW
            state {fmtBytes(params * 16)} on the GPU, besides the frozen base weights.
          </>
        ) : (
          <>The trainable parameter count is shown for known hub models, and once the engine has read the model's config.</>
        )}
      </p>
    </Section>
  );
}

function OptimizerSettings({ c, errors, warnings, update }: { c: TrainConfig; errors: Record<string, string>; warnings: FieldMessages; update: Update }) {
  const o = c.optim;
  return (
    <Section title="Optimizer (AdamW)">
      <div className="grid">
        <Field label="Learning rate" error={errors['optim.learningRate']} help="Peak rate after warmup. LoRA SFT: 1e-4 – 3e-4.">
          <NumInput name="optim.learningRate" value={o.learningRate} onChange={(v) => update({ optim: { learningRate: v } })} />
        </Field>
        <Field label="Schedule" help="How the rate decays after warmup.">
          <select name="optim.lrScheduler" value={o.lrScheduler} onChange={(e) => update({ optim: { lrScheduler: e.target.value as TrainConfig['optim']['lrScheduler'] } })}>
            <option value="cosine">cosine</option>
            <option value="linear">linear</option>
            <option value="constant">constant</option>
          </select>
        </Field>
        <Field label="Warmup steps" error={errors['optim.warmupSteps']} warn={warnings['optim.warmupSteps']} help="Rate rises linearly from 0; avoids early blow-ups.">
          <NumInput name="optim.warmupSteps" value={o.warmupSteps} onChange={(v) => update({ optim: { warmupSteps: v } })} />
        </Field>
        <Field label="Epochs" error={errors['optim.numEpochs']} warn={warnings['optim.numEpochs']} help="Passes over the dataset (when max steps is 0).">
          <NumInput name="optim.numEpochs" value={o.numEpochs} onChange={(v) => update({ optim: { numEpochs: v } })} />
        </Field>
        <Field label="Max steps" error={errors['optim.maxSteps']} warn={warnings['optim.maxSteps']} help="Optimizer steps; overrides epochs when > 0.">
          <NumInput name="optim.maxSteps" value={o.maxSteps} onChange={(v) => update({ optim: { maxSteps: v } })} />
        </Field>
        <Field label="Batch size" error={errors['optim.batchSize']} help="Samples per forward pass.">
          <NumInput name="optim.batchSize" value={o.batchSize} onChange={(v) => update({ optim: { batchSize: v } })} />
        </Field>
        <Field
          label="Gradient accumulation"
          error={errors['optim.gradAccumSteps']}
          help={`Passes summed per optimizer step: effective batch ${o.batchSize * o.gradAccumSteps}.`}
        >
          <NumInput name="optim.gradAccumSteps" value={o.gradAccumSteps} onChange={(v) => update({ optim: { gradAccumSteps: v } })} />
        </Field>
        <Field label="Max grad norm" error={errors['optim.maxGradNorm']} help="Clip the global gradient norm; 0 = off.">
          <NumInput name="optim.maxGradNorm" value={o.maxGradNorm} onChange={(v) => update({ optim: { maxGradNorm: v } })} />
        </Field>
        <Field label="Weight decay" error={errors['optim.weightDecay']} help="Decoupled (AdamW); 0 is common for LoRA.">
          <NumInput name="optim.weightDecay" value={o.weightDecay} onChange={(v) => update({ optim: { weightDecay: v } })} />
        </Field>
        <Field label="Seed" error={errors['optim.seed']} help="Same seed, data and settings → the same run.">
          <NumInput name="optim.seed" value={o.seed} onChange={(v) => update({ optim: { seed: v } })} />
        </Field>
        <Field label="Checkpoint every" error={errors['optim.saveSteps']} help="Steps between checkpoints in the browser (also on pause, stop and the end); 0 = only then.">
          <NumInput name="optim.saveSteps" value={o.saveSteps ?? 20} onChange={(v) => update({ optim: { saveSteps: v } })} />
        </Field>
      </div>
    </Section>
  );
}

function DataSettings({ c, errors, update }: { c: TrainConfig; errors: Record<string, string>; update: Update }) {
  const d = c.data;
  const tokens = (px: number) => Math.floor(px / (28 * 28));
  return (
    <Section title="Images and sequence">
      <div className="grid">
        <Field label="Min pixels" error={errors['data.minPixels']} help={`≥ ${tokens(d.minPixels)} image tokens`}>
          <NumInput name="data.minPixels" value={d.minPixels} onChange={(v) => update({ data: { minPixels: v } })} />
        </Field>
        <Field label="Max pixels" error={errors['data.maxPixels']} help={`≤ ${tokens(d.maxPixels)} image tokens (28×28 pixels each)`}>
          <NumInput name="data.maxPixels" value={d.maxPixels} onChange={(v) => update({ data: { maxPixels: v } })} />
        </Field>
        <Field label="Max length" error={errors['data.maxLength']} help="Tokens per sample, image tokens included.">
          <NumInput name="data.maxLength" value={d.maxLength} onChange={(v) => update({ data: { maxLength: v } })} />
        </Field>
      </div>
      <p className="help">
        Images are resized to multiples of 28 within these bounds, and boxes are answered in that resized frame. A dataset carries its own
        bounds (Dataset → settings): training, predictions and the cluster export use the dataset's, so its boxes stay in their frame; these
        values size the estimate when no dataset is chosen.
      </p>
    </Section>
  );
}

/**
 * eval.*: the held-out split (by image, seeded by the seed), how often it is evaluated, and the greedy
 * decoding length of the grounding / reward evaluation; each field names its default. `images`: the
 * chosen dataset's images with examples for the method (undefined until known).
 */
function EvalSettings({ c, errors, warnings, update, images }: { c: TrainConfig; errors: Record<string, string>; warnings: FieldMessages; update: Update; images?: number }) {
  const e = c.eval, d = DEFAULT_CONFIG.eval;
  const held = images ? evalImageCount(e, images) : 0;
  const decodes = c.method !== 'dpo'; // DPO's evaluation scores the pairs, it generates nothing
  let split: string;
  if (!(e.evalSplit > 0)) split = 'No evaluation (the default, 0).';
  else if (!images) split = e.evalSplit < 1 ? `${Math.round(e.evalSplit * 100)} % of the images held out.` : `${Math.floor(e.evalSplit)} image${e.evalSplit >= 2 ? 's' : ''} held out.`;
  else split = `${held} of the dataset's ${images} image${images > 1 ? 's' : ''} held out, ${images - held} to train on.`;
  return (
    <Section title="Evaluation">
      <div className="grid">
        <Field
          label="Eval split"
          error={errors['eval.evalSplit']}
          help={`${split} 0 = none (default ${d.evalSplit}); below 1 a fraction of the images (0.2 = 20 %), else a number of images. By image: every question about an image stays on one side; drawn by the seed.`}
        >
          <NumInput name="eval.evalSplit" value={e.evalSplit} onChange={(v) => update({ eval: { evalSplit: v } })} />
        </Field>
        <Field label="Evaluate every" error={errors['eval.evalSteps']} warn={warnings['eval.evalSteps']} help={`Optimizer steps between evaluations, and always at the end; 0 = at the end only (default ${d.evalSteps}).`}>
          <NumInput name="eval.evalSteps" value={e.evalSteps} onChange={(v) => update({ eval: { evalSteps: v } })} />
        </Field>
        {decodes && (
          <Field label="Eval max new tokens" error={errors['eval.evalMaxNewTokens']} help={`Greedy answer length for the box / reward scores (default ${d.evalMaxNewTokens}; a box answer is ~30 tokens).`}>
            <NumInput name="eval.evalMaxNewTokens" value={e.evalMaxNewTokens} onChange={(v) => update({ eval: { evalMaxNewTokens: v } })} />
          </Field>
        )}
      </div>
      <p className="help">
        The held-out images are never trained on. Each evaluation reports {c.method === 'sft' ? 'eval loss and token accuracy' : c.method === 'dpo' ? 'eval loss and the DPO rewards, accuracies and margins' : 'the mean eval reward'}
        {decodes ? '; with box labels, a greedy answer per question scored by parse rate, mean IoU and accuracy at IoU ≥ 0.5 / 0.75' : ''}. Training waits while it runs.
      </p>
    </Section>
  );
}

// ---- run controls, charts, history -------------------------------------------------------------

function fmtDuration(sec: number): string {
  if (!Number.isFinite(sec)) return '–';
  if (sec < 90) return `${Math.max(1, Math.round(sec))} s`;
  if (sec < 5400) return `${Math.round(sec / 60)} min`;
  return `${(sec / 3600).toFixed(1)} h`;
}

const STATE_TEXT: Record<string, string> = {
  loading: 'Loading', running: 'Training', pausing: 'Pausing after this step…', paused: 'Paused', stopping: 'Stopping after this step…',
};

function RunStatusLine({ a }: { a: ActiveRun }) {
  const p = a.progress;
  if (a.state === 'loading') {
    const pct = p && p.total > 0 ? Math.round((100 * p.loaded) / p.total) : undefined;
    const what = p ? { config: 'reading config.json', tokenizer: 'loading the tokenizer', weights: 'uploading weights to the GPU', data: 'decoding images' }[p.phase] : 'starting';
    return (
      <div className="run-status" data-testid="run-state" data-state={a.state}>
        <span>Loading: {what}{pct !== undefined ? ` ${pct}%` : '…'}</span>
        <progress max={100} value={pct ?? undefined} />
      </div>
    );
  }
  const left = a.totalSteps > a.step && a.secPerStep ? (a.totalSteps - a.step) * a.secPerStep : undefined;
  const ev = a.evaluating;
  return (
    <div className="run-status" data-testid="run-state" data-state={a.state}>
      <span className={`status status-${a.state === 'paused' ? 'paused' : 'running'}`}>{STATE_TEXT[a.state] ?? a.state}</span>
      {ev && (
        <span data-testid="eval-progress" title="Training waits while the held-out split is evaluated">
          evaluating the held-out split after step {ev.step}: {ev.done} / {ev.total}
          <progress max={Math.max(1, ev.total)} value={ev.done} />
        </span>
      )}
      <span>
        step <b data-testid="current-step">{a.step}</b>
        {a.totalSteps ? ` / ${a.totalSteps}` : ''}
      </span>
      <span>
        loss <b data-testid="current-loss">{fmtValue(a.loss)}</b>
      </span>
      {a.tokensPerS !== undefined && <span>{Math.round(a.tokensPerS).toLocaleString('en-US')} tok/s</span>}
      {a.epoch !== undefined && <span>epoch {a.epoch.toFixed(2)}</span>}
      {a.gpuBytes !== undefined && <span title="GPU memory the engine's tensors hold">GPU {fmtBytes(a.gpuBytes)}</span>}
      {left !== undefined && <span className="muted">≈ {fmtDuration(left)} left</span>}
      {a.totalSteps > 0 && <progress max={a.totalSteps} value={a.step} />}
      {a.data && (
        <span className="muted small run-data">
          {a.data.examples} example{a.data.examples === 1 ? '' : 's'}; images resized within the dataset's {a.data.minPixels.toLocaleString('en-US')}–
          {a.data.maxPixels.toLocaleString('en-US')} pixels
          {a.data.evalExamples ? `; ${a.data.evalExamples} held out for evaluation (${a.data.evalImages} of ${a.data.datasetImages} images)` : ''}
        </span>
      )}
      <LatestEval runId={a.runId} />
    </div>
  );
}

/** A run's latest evaluation, as figures (the run summary and the history row). */
function EvalFigures({ metrics, testId }: { metrics: RunRecord['metrics']; testId?: string }) {
  const ev = useMemo(() => latestEval(metrics), [metrics]);
  if (!ev) return null;
  return (
    <span className="eval-figures" data-testid={testId} data-step={ev.step}>
      <span className="muted">eval @ {ev.step}:</span>
      {ev.figures.map((f) => (
        <span key={f.key} data-metric={f.key}>
          {f.label} <b>{fmtValue(f.value)}</b>
        </span>
      ))}
    </span>
  );
}

function LatestEval({ runId }: { runId: string }) {
  const metrics = useRuns((s) => s.runs.find((r) => r.id === runId)?.metrics);
  return metrics ? <EvalFigures metrics={metrics} testId="run-eval" /> : null;
}

/**
 * Why training cannot start (or resume) now because the Predictions screen or the Playground is
 * using the model: the engine refuses train() / resume() while predictions over a split or an
 * answer run, and answers would be decoded by a model that training changes under them.
 * Undefined when none run.
 */
function usePredictionsBusy(): string | undefined {
  const split = useSplitPredictions((s) => s.running);
  const images = usePredictions((s) => s.running);
  const playground = usePlayground((s) => s.running);
  if (split) return 'predictions over a split are running (Predictions screen): cancel them or wait for them to end';
  if (images) return 'predictions are running (Predictions screen): wait for them to end';
  if (playground) return PLAYGROUND_BUSY;
  return undefined;
}

function RunControls({ errors, config, datasetId, setDatasetId, untrainable }: { errors: Record<string, string>; config: TrainConfig; datasetId: string; setDatasetId: (id: string) => void; untrainable?: string }) {
  const gpu = useRuntime((s) => s.gpu);
  const hasTrain = useRuntime((s) => s.methods.includes('train'));
  const datasets = useDatasetStore((s) => s.datasets);
  const counts = useDatasetStore((s) => s.counts);
  const { active, warnings, message, busy, imported } = useTraining();
  const [fromImported, setFromImported] = useState(true);
  const predicting = usePredictionsBusy();
  const live = datasets.filter((d) => !d.deletedAt);
  const nErr = Object.keys(errors).length;
  let reason: string | undefined;
  if (gpu.status === 'starting') reason = 'engine starting…';
  else if (gpu.status === 'unavailable') reason = 'WebGPU unavailable: see the message at the top';
  else if (gpu.status === 'lost') reason = 'GPU device lost: reconnect first';
  else if (!hasTrain) reason = 'engine not loaded yet';
  else if (nErr) reason = `fix ${nErr} setting${nErr > 1 ? 's' : ''} first`;
  else if (!live.length) reason = 'add images on the Dataset screen first';
  else if (!datasetId) reason = 'choose a dataset';
  else if (active) reason = 'a run is in progress';
  else if (predicting) reason = predicting;
  else if (untrainable) reason = untrainable;
  const state = active?.state;
  return (
    <section className="card run-controls" data-testid="run-controls">
      <div className="run-dataset">
        <label className="field">
          <span className="field-label">Dataset</span>
          <select name="dataset" value={datasetId} onChange={(e) => setDatasetId(e.target.value)} disabled={!!active} data-testid="train-dataset">
            {!live.length && <option value="">no datasets yet</option>}
            {live.map((d) => (
              <option key={d.id} value={d.id}>
                {d.name} — {d.kind}, {counts[d.id] ?? 0} images
              </option>
            ))}
          </select>
        </label>
      </div>
      {imported && !active && (
        <label className="toggle-inline small" data-testid="train-from-imported">
          <input type="checkbox" checked={fromImported} onChange={(e) => setFromImported(e.target.checked)} /> continue from the imported adapter ({imported.label}, r = {imported.r}); its LoRA
          settings replace the ones below
        </label>
      )}
      <div className="run-buttons">
        {!active ? (
          /* A disabled button gets no pointer events in some browsers: the wrapper carries the tooltip. */
          <span title={reason ?? 'Start training with these settings'} data-testid="train-tooltip">
            <button className="primary" disabled={reason !== undefined} data-testid="train-button" onClick={() => void startRun(config, datasetId, { startFrom: imported && fromImported ? 'imported' : 'fresh' })}>
              Train
            </button>
          </span>
        ) : (
          <>
            {state === 'paused' ? (
              <span title={predicting ?? 'Continue training'}>
                <button className="primary" onClick={() => void continueRun()} disabled={busy || !!predicting} data-testid="resume-button">
                  Resume
                </button>
              </span>
            ) : (
              <button onClick={() => void pauseRun()} disabled={busy || state !== 'running'} data-testid="pause-button" title="Pause after the current step; a checkpoint is saved">
                Pause
              </button>
            )}
            <button onClick={() => void stopRun()} disabled={state === 'stopping'} data-testid="stop-button" title="Stop after the current step; a checkpoint is saved">
              Stop
            </button>
          </>
        )}
        <span className="muted small" data-testid="train-reason">
          {active ? (state === 'paused' && predicting ? predicting.charAt(0).toUpperCase() + predicting.slice(1) + '.' : '') : reason ? reason.charAt(0).toUpperCase() + reason.slice(1) + '.' : 'Ready.'}
        </span>
      </div>
      {active && <RunStatusLine a={active} />}
      {nErr > 0 && (
        <ul className="error-list">
          {Object.entries(errors).map(([k, v]) => (
            <li key={k}>{v}</li>
          ))}
        </ul>
      )}
      {warnings.length > 0 && (
        <ul className="warn-list" data-testid="train-warnings">
          {warnings.map((w) => (
            <li key={w}>{w}</li>
          ))}
        </ul>
      )}
      {message && (
        <p className={message.level === 'error' ? 'error-text run-message' : 'muted run-message'} data-testid="train-message" role={message.level === 'error' ? 'alert' : undefined}>
          {message.text}
          {message.skipInvalid && (
            <>
              {' '}
              <button type="button" data-testid="skip-invalid" onClick={message.skipInvalid}>
                Skip them and train on the rest
              </button>
            </>
          )}
        </p>
      )}
    </section>
  );
}

/** The engine's memory and time estimate for these settings, refreshed as they change. */
function useEstimate(config: TrainConfig, datasetId: string, errors: Record<string, string>): { est?: EstimateResult; error?: string; loading: boolean } {
  const ready = useRuntime((s) => s.gpu.status === 'ready' && s.methods.includes('estimate'));
  const busy = useTraining((s) => s.active !== null);
  const [out, setOut] = useState<{ est?: EstimateResult; error?: string; loading: boolean }>({ loading: false });
  const key = JSON.stringify([config.model, config.method, config.lora, config.optim, config.data, config.eval?.evalSplit, config.grpo.numGenerations, config.grpo.maxNewTokens, datasetId]);
  const nErr = Object.keys(errors).length;
  useEffect(() => {
    const api = trainer();
    if (!ready || busy || !api || nErr) return;
    let cancelled = false;
    setOut((o) => ({ ...o, loading: true }));
    const t = setTimeout(async () => {
      try {
        const files = config.model.source === 'local' ? await localModelFiles().catch(() => undefined) : undefined;
        const est = await api.estimate(config, datasetId || undefined, files);
        if (!cancelled) setOut({ est, loading: false });
      } catch (e) {
        if (!cancelled) setOut({ error: (e as Error).message, loading: false });
      }
    }, 400);
    return () => {
      cancelled = true;
      clearTimeout(t);
    };
    // config is read through `key`
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, ready, busy, nErr]);
  return out;
}

function EstimateCard({ e }: { e: ReturnType<typeof useEstimate> }) {
  const est = e.est;
  return (
    <section className="card" data-testid="estimate">
      <div className="card-head">
        <h2>Estimate</h2>
        {e.loading && <span className="muted small">updating…</span>}
      </div>
      {e.error && <p className="error-text">{e.error}</p>}
      {!est && !e.error && <p className="muted">The memory and time of a step appear here once the engine has started.</p>}
      {est && (
        <>
          <dl className="kv">
            <dt>GPU memory</dt>
            <dd data-testid="estimate-memory">
              {est.memory.ok ? <span className="ok-text">fits</span> : <span className="error-text">does not fit</span>} — about {fmtBytes(est.memory.totalBytes)} per step: weights {fmtBytes(est.memory.weightsBytes)}, LoRA + AdamW{' '}
              {fmtBytes(est.memory.loraBytes)}, activations {fmtBytes(est.memory.activationBytes)} ({est.memory.seqLen} tokens, {est.memory.imageTokens} of them image)
            </dd>
            <dt>Base precision</dt>
            <dd data-testid="estimate-precision">
              {est.memory.base === 'nf4' ? '4-bit NF4' : 'BF16'}
              {est.memory.prequantized ? ' (a bitsandbytes 4-bit checkpoint)' : ''} — BF16 base {est.memory.byPrecision.bf16 !== undefined ? fmtBytes(est.memory.byPrecision.bf16) : 'n/a'}, NF4 base {fmtBytes(est.memory.byPrecision.nf4)}
            </dd>
            <dt>Time</dt>
            <dd data-testid="estimate-time">
              {est.secondsPerStep !== undefined ? (
                <>
                  ~{est.secondsPerStep < 10 ? est.secondsPerStep.toFixed(1) : Math.round(est.secondsPerStep)} s a step
                  {est.totalSteps ? ` × ${est.totalSteps} steps ≈ ${fmtDuration(est.totalSeconds ?? NaN)}` : ''}{' '}
                  <span className="muted small">({est.timeBasis === 'measured' ? 'from the last run of this model here' : 'rough: FLOPs ÷ this GPU’s measured matmul rate'})</span>
                </>
              ) : (
                <span className="muted">after the first steps</span>
              )}
            </dd>
            {est.examples !== undefined && (
              <>
                <dt>Examples</dt>
                <dd data-testid="estimate-examples">
                  {est.examples} to train on
                  {est.evalExamples
                    ? `; ${est.evalExamples} held out for evaluation (${est.evalImages} of ${est.datasetImages} image${est.datasetImages === 1 ? '' : 's'}), not trained on`
                    : ''}
                </dd>
              </>
            )}
          </dl>
          {!est.memory.ok && <p className="error-text">{est.memory.message}</p>}
          {est.notes.map((n) => (
            <p key={n} className="help">
              {n}
            </p>
          ))}
          <details className="code-preview">
            <summary>breakdown</summary>
            <pre>{est.memory.text}</pre>
          </details>
        </>
      )}
    </section>
  );
}

export function RunCharts() {
  const runs = useRuns((s) => s.runs);
  const [smoothing, setSmoothing] = useSmoothing();
  const visible = useMemo(() => runs.filter((r) => r.visible), [runs]);
  // the standard four (eval loss with the loss), the grounding evaluation, then every other metric the
  // runs report (DPO rewards, GRPO/PPO stats, ...), each with its eval line when there is one
  const charts = useMemo(() => chartSpecs(visible).map((c) => ({ ...c, series: chartLines(c, visible) })), [visible]);
  return (
    <section className="card charts-card">
      <div className="card-head">
        <h2>Charts</h2>
        <SmoothingSlider value={smoothing} onChange={setSmoothing} />
      </div>
      {runs.length === 0 && <p className="muted">No runs yet. Each run's loss, learning rate, grad norm and throughput (and, with an eval split, its held-out evaluations, dashed) are drawn here live and kept after a reload.</p>}
      <div className="charts">
        {charts.map((c) => (
          <MetricChart key={c.key} title={c.title} series={c.series} smoothing={c.smooth ? smoothing : 0} smooth={c.smooth} logY={c.logY} range={c.range} />
        ))}
      </div>
    </section>
  );
}

function RunHistory() {
  const runs = useRuns((s) => s.runs);
  const active = useTraining((s) => s.active);
  const ready = useRuntime((s) => s.gpu.status === 'ready' && s.methods.includes('resumeRun'));
  const canTrain = !usePredictionsBusy() && ready;
  const { toggleVisible, rename } = useRuns.getState();
  if (runs.length === 0) return null;
  return (
    <section className="card">
      <div className="card-head">
        <h2>Run history</h2>
      </div>
      <table className="runs" data-testid="run-history">
        <thead>
          <tr>
            <th>Show</th>
            <th>Run</th>
            <th>Method</th>
            <th>Model</th>
            <th>Steps</th>
            <th>Last loss</th>
            <th>Last eval</th>
            <th>Status</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {[...runs].reverse().map((r) => (
            <RunRow
              key={r.id}
              r={r}
              live={active?.runId === r.id}
              onResume={r.datasetId && (r.status === 'stopped' || r.status === 'failed') && !active && canTrain ? () => void resumeRun(r.id) : undefined}
              onToggle={() => toggleVisible(r.id)}
              onRemove={() => confirm(`Delete the run "${r.name}", its charts and its checkpoints?`) && void deleteRunEverywhere(r.id)}
              onRename={(n) => rename(r.id, n)}
            />
          ))}
        </tbody>
      </table>
    </section>
  );
}

function RunRow({ r, live, onResume, onToggle, onRemove, onRename }: { r: RunRecord; live: boolean; onResume?: () => void; onToggle: () => void; onRemove: () => void; onRename: (n: string) => void }) {
  const loss = r.metrics.loss;
  return (
    <tr data-testid="run-row" data-run={r.id}>
      <td>
        <input type="checkbox" checked={r.visible} onChange={onToggle} aria-label={`show ${r.name}`} />
      </td>
      <td>
        <span className="swatch" style={{ background: r.color }} />
        <input className="inline-edit" value={r.name} onChange={(e) => onRename(e.target.value)} aria-label="run name" />
        <div className="muted small">{new Date(r.createdAt).toLocaleString()}</div>
      </td>
      <td>{r.method.toUpperCase()}</td>
      <td className="mono small">{r.model}</td>
      <td>{loss?.step.at(-1) ?? 0}</td>
      <td>{fmtValue(loss?.value.at(-1))}</td>
      <td className="small">
        <EvalFigures metrics={r.metrics} testId="run-row-eval" />
      </td>
      <td>
        <span className={`status status-${r.status}`} title={r.error} data-testid="run-status">
          {r.status}
        </span>
        {r.error && <div className="run-error small">{r.error}</div>}
        {r.checkpointStep != null && <div className="muted small">checkpoint: step {r.checkpointStep}</div>}
      </td>
      <td className="run-actions">
        {onResume && (
          <button className="link" onClick={onResume} data-testid="run-resume" title="Continue from the last checkpoint (reloads the model if needed)">
            resume
          </button>
        )}
        {!live && (
          <button className="link danger" onClick={onRemove}>
            delete
          </button>
        )}
      </td>
    </tr>
  );
}

// ---- the screen --------------------------------------------------------------------------------

/**
 * The chosen dataset's trainable records for the method, re-read from IndexedDB when the screen opens
 * and whenever the dataset's images or labels change in this tab (undefined until read).
 */
function useTrainable(datasetId: string, method: Method) {
  const count = useDatasetStore((s) => (datasetId ? s.counts[datasetId] : undefined));
  const images = useDatasetStore((s) => s.images);
  const [t, setT] = useState<Awaited<ReturnType<typeof trainableOf>> & { key: string }>();
  const key = `${datasetId}|${method}`;
  useEffect(() => {
    if (!datasetId) return setT(undefined);
    let cancelled = false;
    const timer = setTimeout(() => {
      trainableOf(datasetId, method).then((r) => !cancelled && setT({ ...r, key }), () => undefined);
    }, 150); // label edits reach IndexedDB in batches
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [datasetId, method, count, images, key]);
  return t?.key === key ? t : undefined;
}

export function TrainPanel() {
  const config = useTrainConfig((s) => s.config);
  const update = useTrainConfig((s) => s.update);
  const applyPreset = useTrainConfig((s) => s.applyPreset);
  const reset = useTrainConfig((s) => s.reset);
  const [hydrated, setHydrated] = useState(() => useTrainConfig.persist.hasHydrated());
  useEffect(() => useTrainConfig.persist.onFinishHydration(() => setHydrated(true)), []);
  const [datasetPick, setDatasetPick] = useState('');
  const currentDataset = useDatasetStore((s) => s.currentId);
  useEffect(() => void initDatasets(), []);
  const datasets = useDatasetStore((s) => s.datasets);
  const datasetId = datasetPick && datasets.some((d) => d.id === datasetPick && !d.deletedAt) ? datasetPick : (currentDataset ?? '');
  const trainable = useTrainable(datasetId, config.method);
  const ctx = useMemo(() => ({ datasetSize: trainable?.examples || undefined, datasetImages: trainable?.exampleImages || undefined }), [trainable?.examples, trainable?.exampleImages]);
  const errors = useMemo(() => formErrors(config, ctx), [config, ctx]);
  const estimate = useEstimate(config, datasetId, errors);
  const secondsPerStep = estimate.est?.secondsPerStep;
  const warnings = useMemo(() => trainWarnings(config, { ...ctx, secondsPerStep }, errors), [config, ctx, secondsPerStep, errors]);

  return (
    <div className="train-screen" data-testid="train-screen">
      <div className="train-settings">
        <div className="presets">
          <span className="field-label">Presets</span>
          {PRESETS.map((p) => (
            <button key={p.id} className="preset" title={p.description} onClick={() => applyPreset(p.id)} disabled={!hydrated}>
              {p.name}
            </button>
          ))}
          <button className="link" onClick={() => confirm('Reset every training setting to its default?') && reset()}>
            reset
          </button>
        </div>
        {hydrated ? (
          <>
            <ModelPicker c={config} errors={errors} update={update} memory={estimate.est?.memory} />
            <MethodPicker c={config} errors={errors} update={update} />
            <LoraSettings c={config} errors={errors} update={update} engineParams={estimate.est?.loraParams} />
            <OptimizerSettings c={config} errors={errors} warnings={warnings} update={update} />
            <DataSettings c={config} errors={errors} update={update} />
            <EvalSettings c={config} errors={errors} warnings={warnings} update={update} images={trainable?.exampleImages || undefined} />
          </>
        ) : (
          <p className="muted">Loading saved settings…</p>
        )}
      </div>
      <div className="train-side">
        <RunControls errors={errors} config={config} datasetId={datasetId} setDatasetId={setDatasetPick} untrainable={trainable?.reason} />
        <EstimateCard e={estimate} />
        <RunCharts />
        <RunHistory />
        <section className="card">
          <div className="card-head">
            <h2>Engine</h2>
          </div>
          <GpuInfo />
        </section>
      </div>
    </div>
  );
}
