import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, type TrainConfig } from '../config/config.ts';
import { parseGroundings } from '../data/bbox.ts';
import { smartResize } from '../data/image.ts';
import { exactMatchReward, formatReward, iouReward } from '../train/rewards.ts';
import { BNB_REQUIREMENT, clusterBundle, clusterSettings, deepspeedConfig, loraTargetRegex, pyLit, trainScript, type BundleFile } from './cluster.ts';
import { bitsandbytesConfig } from '../model/quant.ts';

const dec = new TextDecoder();
const tmpRoot = mkdtempSync(join(tmpdir(), 'cluster-test-'));
afterAll(() => rmSync(tmpRoot, { recursive: true, force: true }));
let dirCount = 0;

const user = (text: string) => ({ role: 'user', content: [{ type: 'image' }, { type: 'text', text }] });
const assistant = (text: string) => ({ role: 'assistant', content: [{ type: 'text', text }] });
const IMAGES = [
  { name: 'cat.png', bytes: Uint8Array.from([137, 80, 78, 71, 1, 2, 3]) },
  { name: 'sub/dog 1.jpg', bytes: Uint8Array.from([255, 216, 255, 0, 9]) },
];
const RECORDS: Record<string, object[]> = {
  sft: [
    { messages: [user('Where is the cat?'), assistant('{"bbox_2d": [1, 2, 30, 40], "label": "cat"}')], images: ['images/cat.png'] },
    { messages: [user('Describe "this"\n\u2028 image.'), assistant('A dog.')], images: ['images/sub/dog 1.jpg'] },
  ],
  dpo: [{ prompt: [user('Which?')], chosen: [assistant('left')], rejected: [assistant('right')], images: ['images/cat.png'] }],
  grpo: [
    { prompt: [user('Find the cat.')], images: ['images/cat.png'], solution: '[{"bbox_2d": [1, 2, 30, 40], "label": "cat"}]', reward: 'iou' },
    { prompt: [user('What animal?')], images: ['images/sub/dog 1.jpg'], solution: 'Dog', reward: 'exact' },
  ],
};
RECORDS.ppo = RECORDS.grpo;

function cfg(over: Partial<TrainConfig> = {}): TrainConfig {
  return { ...DEFAULT_CONFIG, model: { ...DEFAULT_CONFIG.model, source: 'hub' }, ...over };
}

function bundle(config: TrainConfig, records = RECORDS[config.method === 'ppo' ? 'grpo' : config.method]): BundleFile[] {
  return clusterBundle(config, { records, images: IMAGES }, { numProcesses: 4 });
}

/** Write the bundle to a fresh folder; returns its path. */
function writeBundle(files: BundleFile[]): string {
  const dir = join(tmpRoot, `b${dirCount++}`);
  for (const f of files) {
    mkdirSync(dirname(join(dir, f.name)), { recursive: true });
    writeFileSync(join(dir, f.name), f.bytes);
  }
  return dir;
}

const file = (files: BundleFile[], name: string) => {
  const f = files.find((x) => x.name === name);
  if (!f) throw new Error(`no ${name} in the bundle`);
  return dec.decode(f.bytes);
};

/** Run Python code with the generated train.py loaded as module `m` (main() not run); stdin = JSON. */
function py(dir: string, code: string, input: unknown = null, env: Record<string, string> = {}): unknown {
  const prelude = [
    'import importlib.util, json, sys',
    `spec = importlib.util.spec_from_file_location("train", ${JSON.stringify(join(dir, 'train.py'))})`,
    'm = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)',
    'inp = json.loads(sys.stdin.read())',
  ].join('\n');
  const out = execFileSync('python3', ['-c', `${prelude}\n${code}`], { input: JSON.stringify(input), env: { ...process.env, ...env }, encoding: 'utf8' });
  return JSON.parse(out);
}

function dryRun(dir: string, args: string[] = [], env: Record<string, string> = {}): Record<string, any> {
  const out = execFileSync('python3', [join(dir, 'train.py'), '--dry_run', ...args], { env: { ...process.env, WORLD_SIZE: '1', ...env }, encoding: 'utf8' });
  return JSON.parse(out);
}

const argDefaults = (dir: string) => py(dir, 'print(json.dumps(vars(m.build_parser().parse_args([]))))') as Record<string, any>;

describe('clusterBundle', () => {
  it('holds the dataset, the images, the script, the configs, requirements and README', () => {
    const files = bundle(cfg());
    const names = files.map((f) => f.name).sort();
    expect(names).toEqual(['README.md', 'accelerate_config.yaml', 'train.jsonl', 'ds_zero2.json', 'images/cat.png', 'images/sub/dog 1.jpg', 'requirements.txt', 'train.py'].sort());
    expect(files.find((f) => f.name === 'images/cat.png')!.bytes).toEqual(IMAGES[0].bytes);
    const lines = file(files, 'train.jsonl').split('\n');
    expect(lines.at(-1)).toBe('');
    expect(lines.slice(0, -1).map((l) => JSON.parse(l))).toEqual(RECORDS.sft);
    // U+2028 is escaped, so no reader splits the record there
    expect(file(files, 'train.jsonl')).not.toMatch(/\u2028/);
    const req = file(files, 'requirements.txt');
    for (const pkg of ['torch>=', 'transformers>=4.52', 'trl>=0.2', 'peft>=', 'accelerate>=', 'deepspeed>=', 'datasets>=', 'Pillow>=']) expect(req).toContain(pkg);
    const readme = file(files, 'README.md');
    expect(readme).toContain('accelerate launch --config_file accelerate_config.yaml train.py');
    expect(readme).toMatch(/GPU memory/);
    expect(readme).toMatch(/Import a peft adapter/);
    expect(readme).toContain('adapter_model.safetensors');
  });

  it('ds_zero2.json parses: ZeRO-2, bf16 and the Trainer-filled values left "auto"', () => {
    const ds = JSON.parse(file(bundle(cfg()), 'ds_zero2.json'));
    expect(ds).toEqual(deepspeedConfig());
    expect(ds.zero_optimization.stage).toBe(2);
    expect(ds.bf16.enabled).toBe('auto');
    for (const k of ['gradient_accumulation_steps', 'gradient_clipping', 'train_batch_size', 'train_micro_batch_size_per_gpu']) expect(ds[k]).toBe('auto');
  });

  it('accelerate_config.yaml: DeepSpeed ZeRO-2, bf16, a num_processes placeholder with a comment', () => {
    const y = file(bundle(cfg()), 'accelerate_config.yaml');
    const lines = y.split('\n');
    const top = (k: string) => lines.find((l) => l.startsWith(`${k}:`));
    expect(top('distributed_type')).toBe('distributed_type: DEEPSPEED');
    expect(top('mixed_precision')).toBe('mixed_precision: bf16');
    expect(top('num_processes')).toMatch(/^num_processes: 4 +# .*GPUs/);
    expect(top('num_machines')).toBe('num_machines: 1');
    expect(top('deepspeed_config')).toBe('deepspeed_config:');
    expect(lines).toContain('  zero_stage: 2');
    expect(lines).toContain('  offload_optimizer_device: none');
    // accumulation and clipping come from train.py (a value here would clash with the Trainer's)
    expect(y).not.toMatch(/gradient_accumulation_steps|gradient_clipping|deepspeed_config_file/);
    for (const l of lines) if (l.trim() && !l.trim().startsWith('#')) expect(l).toMatch(/^( {2})?[a-z_0-9]+:( .*)?$/);
  });

  it('train.py compiles for each method (python3 -m py_compile)', () => {
    for (const method of ['sft', 'dpo', 'grpo', 'ppo'] as const) {
      const dir = writeBundle(bundle(cfg({ method })));
      execFileSync('python3', ['-m', 'py_compile', join(dir, 'train.py')]);
      expect(existsSync(join(dir, 'train.py'))).toBe(true);
      expect(file(bundle(cfg({ method })), 'train.py')).toMatch(/^[\x00-\x7f]*$/); // pure ASCII source
    }
  });

  it('src/export/train.py is a real Python file: it compiles, runs --help, and is the export of the default settings', () => {
    const py = fileURLToPath(new URL('./train.py', import.meta.url));
    // compiled to a temp file so no __pycache__ lands in the source tree
    execFileSync('python3', ['-B', '-c', 'import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)', py, join(tmpRoot, 'train.pyc')]);
    expect(execFileSync('python3', ['-B', py, '--help'], { encoding: 'utf8' })).toMatch(/--learning_rate/);
    // regenerate after changing the defaults or the settings block: npx tsx --import ./scripts/raw-loader.mjs scripts/train-py.ts
    expect(readFileSync(py, 'utf8')).toBe(trainScript(clusterSettings(DEFAULT_CONFIG)));
  });

  it('the baked settings block carries the exported method', () => {
    expect(trainScript(clusterSettings(cfg({ method: 'dpo' })))).toMatch(/# >>> patchwork:settings\nMETHOD = "dpo"/);
  });
});

describe('train.py defaults equal the Train settings', () => {
  const c = cfg({
    lora: { r: 24, alpha: 12.5, dropout: 0.125, targetModules: ['q_proj', 'v_proj', 'down_proj'], useRslora: true },
    optim: { ...DEFAULT_CONFIG.optim, learningRate: 3.5e-5, lrScheduler: 'linear', warmupSteps: 7, numEpochs: 2.5, maxSteps: 0, batchSize: 2, gradAccumSteps: 6, maxGradNorm: 0.75, weightDecay: 0.01, seed: 1234567 },
    data: { minPixels: 28 * 28 * 4, maxPixels: 28 * 28 * 300, maxLength: 1536 },
  });

  it('LoRA, optimizer, schedule, pixels (parsed back from argparse)', () => {
    const a = argDefaults(writeBundle(bundle(c)));
    expect(a.lora_r).toBe(24);
    expect(a.lora_alpha).toBe(12.5);
    expect(a.lora_dropout).toBe(0.125);
    expect(a.use_rslora).toBe(true);
    expect(a.target_modules).toBe(loraTargetRegex(['q_proj', 'v_proj', 'down_proj']));
    expect(a.learning_rate).toBe(3.5e-5);
    expect(a.lr_scheduler_type).toBe('linear');
    expect(a.warmup_steps).toBe(7);
    expect(a.num_train_epochs).toBe(2.5);
    expect(a.max_steps).toBe(0);
    expect(a.per_device_train_batch_size).toBe(2);
    expect(a.gradient_accumulation_steps).toBe(6);
    expect(a.max_grad_norm).toBe(0.75);
    expect(a.weight_decay).toBe(0.01);
    expect(a.seed).toBe(1234567);
    expect([a.adam_beta1, a.adam_beta2, a.adam_epsilon]).toEqual([0.9, 0.999, 1e-8]);
    expect([a.min_pixels, a.max_pixels, a.max_length]).toEqual([3136, 235200, 1536]);
    expect(a.model).toBe('Qwen/Qwen2.5-VL-3B-Instruct');
  });

  it('the trl / peft keyword arguments train.py builds (--dry_run, no trl needed)', () => {
    const dir = writeBundle(bundle(c));
    const p = dryRun(dir);
    expect(p.lora).toEqual({ r: 24, lora_alpha: 12.5, lora_dropout: 0.125, target_modules: loraTargetRegex(['q_proj', 'v_proj', 'down_proj']), use_rslora: true, bias: 'none', task_type: 'CAUSAL_LM' });
    expect(p.trainer).toMatchObject({
      learning_rate: 3.5e-5, lr_scheduler_type: 'linear', warmup_steps: 7, num_train_epochs: 2.5, max_steps: -1, per_device_train_batch_size: 2, gradient_accumulation_steps: 6,
      max_grad_norm: 0.75, weight_decay: 0.01, seed: 1234567, bf16: true, gradient_checkpointing: true, optim: 'adamw_torch', remove_unused_columns: false,
      dataset_kwargs: { skip_prepare_dataset: true },
    });
    expect(p.records).toBe(2);
    expect(p.images).toBe(2);
    // 12 examples per step over 3 GPUs: accumulation 6 → 2 per GPU, same global batch
    expect(dryRun(dir, [], { WORLD_SIZE: '3' }).trainer).toMatchObject({ per_device_train_batch_size: 2, gradient_accumulation_steps: 2 });
    // 12 over 4: accumulation does not divide, the batch does → 3 per device, no accumulation
    expect(dryRun(dir, [], { WORLD_SIZE: '4' }).trainer).toMatchObject({ per_device_train_batch_size: 3, gradient_accumulation_steps: 1 });
    expect(dryRun(dir, ['--no-match_global_batch'], { WORLD_SIZE: '4' }).trainer).toMatchObject({ per_device_train_batch_size: 2, gradient_accumulation_steps: 6 });
    const off = dryRun(dir, [], { WORLD_SIZE: '5' });
    expect(off.batch_note).toMatch(/do not split/);
    expect(p.trainer.use_cpu).toBeUndefined();
    expect(dryRun(dir, ['--cpu']).trainer.use_cpu).toBe(true);
  });

  it('an NF4 base (model.quantize nf4): --dry_run prints the BitsAndBytesConfig arguments without importing bitsandbytes, torch or transformers', () => {
    const q = (quantizeVision: boolean) => cfg({ model: { ...DEFAULT_CONFIG.model, source: 'hub', quantize: 'nf4', quantizeVision } });
    const files = bundle(q(true));
    const dir = writeBundle(files);
    // main() with the heavy imports made to fail: the dry run must not need them
    const guard = [
      'import builtins',
      'real = builtins.__import__',
      'def guard(name, *a, **k):',
      '    if name.split(".")[0] in ("bitsandbytes", "torch", "transformers", "peft", "trl", "accelerate"):',
      '        raise ImportError("the dry run imported " + name)',
      '    return real(name, *a, **k)',
      'builtins.__import__ = guard',
      'm.main(["--dry_run"])',
    ].join('\n');
    const p = py(dir, guard, null, { WORLD_SIZE: '1' }) as Record<string, any>;
    expect(p.bnb).toEqual(bitsandbytesConfig({ quantizeVision: true }));
    expect(p.bnb).toMatchObject({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, llm_int8_skip_modules: ['lm_head'] });
    expect(dryRun(dir).bnb).toEqual(p.bnb); // and as a script
    expect(dryRun(dir, ['--no-load_in_4bit']).bnb).toBeUndefined();
    expect(file(files, 'requirements.txt')).toContain(BNB_REQUIREMENT);
    expect(file(files, 'train.py')).toMatch(/prepare_model_for_kbit_training\(model, use_gradient_checkpointing=args\.gradient_checkpointing/);
    expect(file(files, 'README.md')).toMatch(/4-bit NF4 base/);
    // the vision tower kept BF16: skipped by the module names of both transformers layouts
    expect(dryRun(writeBundle(bundle(q(false)))).bnb.llm_int8_skip_modules).toEqual(['lm_head', 'model.visual', 'visual']);
    // a BF16 run has no bnb, no bitsandbytes requirement, and --load_in_4bit turns it on with the baked settings
    const plain = bundle(cfg());
    const pdir = writeBundle(plain);
    expect(dryRun(pdir).bnb).toBeUndefined();
    expect(file(plain, 'requirements.txt')).not.toContain('bitsandbytes');
    expect(dryRun(pdir, ['--load_in_4bit']).bnb).toEqual(bitsandbytesConfig({ quantizeVision: true }));
  });

  it('constant schedule with warmup runs as constant_with_warmup; max_steps passes through', () => {
    const dir = writeBundle(bundle(cfg({ optim: { ...DEFAULT_CONFIG.optim, lrScheduler: 'constant', warmupSteps: 3, maxSteps: 40 } })));
    expect(dryRun(dir).trainer).toMatchObject({ lr_scheduler_type: 'constant_with_warmup', max_steps: 40, save_strategy: 'steps', save_steps: DEFAULT_CONFIG.optim.saveSteps });
    expect(dryRun(dir, ['--warmup_steps', '0']).trainer.lr_scheduler_type).toBe('constant');
  });

  it('DPO: beta, sigmoid loss, no left truncation of prompts', () => {
    const dir = writeBundle(bundle(cfg({ method: 'dpo', dpo: { ...DEFAULT_CONFIG.dpo, beta: 0.25 } })));
    expect(argDefaults(dir)).toMatchObject({ dpo_beta: 0.25, dpo_loss_type: 'sigmoid' });
    expect(dryRun(dir).trainer).toMatchObject({ beta: 0.25, loss_type: 'sigmoid', max_prompt_length: null, truncation_mode: 'keep_start', max_length: 2048 });
  });

  it('GRPO: generations, beta, temperature, completion length, rewards and weights; completions per device', () => {
    const grpo = { ...DEFAULT_CONFIG.grpo, numGenerations: 6, beta: 0.02, temperature: 0.7, maxNewTokens: 96, rewards: ['iou', 'exact'] as TrainConfig['grpo']['rewards'] };
    const dir = writeBundle(bundle(cfg({ method: 'grpo', grpo, optim: { ...DEFAULT_CONFIG.optim, batchSize: 1, gradAccumSteps: 2 } })));
    expect(argDefaults(dir)).toMatchObject({ num_generations: 6, grpo_beta: 0.02, temperature: 0.7, max_completion_length: 96, epsilon: 0.2, rewards: ['iou', 'exact'], reward_weights: [1, 1], per_device_train_batch_size: 6, gradient_accumulation_steps: 2 });
    expect(dryRun(dir).trainer).toMatchObject({ num_generations: 6, beta: 0.02, temperature: 0.7, max_completion_length: 96, loss_type: 'grpo', epsilon: 0.2, reward_weights: [1, 1], top_k: 0, top_p: 1 });
  });

  it('PPO is exported as GRPO with the PPO run\'s temperature, length, KL and clip, and says so', () => {
    const ppo = { ...DEFAULT_CONFIG.ppo, clipRange: 0.15, klCoef: 0.03, temperature: 1.1, maxNewTokens: 64, rewards: ['format'] as TrainConfig['ppo']['rewards'] };
    const files = bundle(cfg({ method: 'ppo', ppo }));
    const dir = writeBundle(files);
    expect(argDefaults(dir)).toMatchObject({ grpo_beta: 0.03, epsilon: 0.15, temperature: 1.1, max_completion_length: 64, rewards: ['format'], num_generations: DEFAULT_CONFIG.grpo.numGenerations });
    expect(dryRun(dir)).toMatchObject({ method: 'grpo', requested_method: 'ppo' });
    expect(file(files, 'README.md')).toMatch(/PPOTrainer.*cannot train Qwen2\.5-VL/s);
    expect(file(files, 'train.py')).toMatch(/# This run was set to PPO/);
  });
});

describe('LoRA targets', () => {
  const full = (re: string, name: string) => new RegExp(`^(?:${re})$`).test(name);
  it('decoder only unless vision targets were chosen; both transformers layouts', () => {
    const re = loraTargetRegex(['q_proj', 'gate_proj']);
    expect(full(re, 'model.language_model.layers.3.self_attn.q_proj')).toBe(true);
    expect(full(re, 'model.layers.3.mlp.gate_proj')).toBe(true);
    expect(full(re, 'model.language_model.layers.3.self_attn.k_proj')).toBe(false);
    expect(full(re, 'model.visual.blocks.0.mlp.gate_proj')).toBe(false);
    const both = loraTargetRegex(['q_proj', 'visual.attn.qkv', 'merger.mlp.0']);
    expect(full(both, 'model.visual.blocks.31.attn.qkv')).toBe(true);
    expect(full(both, 'model.visual.merger.mlp.0')).toBe(true);
    expect(full(both, 'model.visual.blocks.31.attn.proj')).toBe(false);
    expect(() => loraTargetRegex(['qkv_proj'])).toThrow(/unknown LoRA target module "qkv_proj"/);
  });
});

describe('no injection into Python', () => {
  const evil = 'x"); open("PWNED","w").write("1") #\n\'\'\'"""\\\\n ${x} \u2028\u0000 é 😀 \ud800';
  it('strings become escaped literals that parse back exactly and execute nothing', () => {
    const c = cfg({ model: { ...DEFAULT_CONFIG.model, source: 'hub', hubId: evil, endpoint: 'https://mirror.example/"\\', revision: 'v1\nimport os', local: null } });
    const files = bundle(c);
    const dir = writeBundle(files);
    execFileSync('python3', ['-m', 'py_compile', join(dir, 'train.py')]);
    const a = argDefaults(dir);
    expect(a.model).toBe(evil.trim());
    expect(a.revision).toBe('v1\nimport os');
    expect(a.hf_endpoint).toBe('https://mirror.example/"\\');
    dryRun(dir);
    expect(existsSync(join(dir, 'PWNED'))).toBe(false);
    expect(existsSync('PWNED')).toBe(false);
  });

  it('a local folder name with newlines cannot leave a comment line', () => {
    const name = 'my model\nimport os; os.system("touch PWNED")\r\n\u2028x';
    const files = bundle(cfg({ model: { ...DEFAULT_CONFIG.model, source: 'local', local: { name, files: [] } } }));
    const src = file(files, 'train.py');
    expect(src.split('\n').filter((l) => l.includes('os.system'))).toSatisfy((ls: string[]) => ls.every((l) => l.startsWith('#') || l.includes('default=')));
    const dir = writeBundle(files);
    expect(argDefaults(dir).model).toBe(name);
    expect(existsSync(join(dir, 'PWNED'))).toBe(false);
  });

  it('pyLit: ASCII literals Python reads back equal; non-finite numbers refused', () => {
    const values = [evil, '', 'a\tb\rc', { 'k"ey': [1, 2.5, -0.001, true, null, 'v'] }, 1e-8, 123456789012];
    const src = pyLit(values);
    expect(src).toMatch(/^[\x20-\x7e]*$/);
    const back = execFileSync('python3', ['-c', `import json,sys; v = ${src}; print(json.dumps(v))`], { encoding: 'utf8' });
    // lone surrogates aside (JSON cannot carry them back), the values round-trip
    const clean = JSON.parse(JSON.stringify(values).replace(/\\ud800/g, ''));
    expect(JSON.parse(back.replace(/\\ud800/g, ''))).toEqual(clean);
    expect(() => pyLit(NaN)).toThrow(/non-finite/);
    expect(() => pyLit(Infinity)).toThrow(/non-finite/);
  });

  it('unknown methods, rewards and non-finite settings are refused before any code is written', () => {
    expect(() => bundle({ ...cfg(), method: 'sft"; import os' as never })).toThrow(/method: The method is one of sft, dpo, grpo, ppo/);
    expect(() => bundle(cfg({ method: 'grpo', grpo: { ...DEFAULT_CONFIG.grpo, rewards: ['iou")#' as never] } }))).toThrow(/grpo\.rewards: Choose one or more rewards/);
    expect(() => bundle(cfg({ optim: { ...DEFAULT_CONFIG.optim, learningRate: NaN } }))).toThrow(/learningRate/);
    expect(() => bundle(cfg({ lora: { ...DEFAULT_CONFIG.lora, r: 2.5 } }))).toThrow(/lora\.r/);
  });
});

describe('data checks', () => {
  it('refuses unsafe image names, missing images and records of another method', () => {
    expect(() => clusterBundle(cfg(), { records: RECORDS.sft, images: [...IMAGES, { name: '../evil.png', bytes: new Uint8Array(1) }] })).toThrow(/unsafe image name/);
    expect(() => clusterBundle(cfg(), { records: RECORDS.sft, images: [IMAGES[0]] })).toThrow(/refers to "images\/sub\/dog 1.jpg"/);
    expect(() => clusterBundle(cfg({ method: 'dpo' }), { records: RECORDS.sft, images: IMAGES })).toThrow(/record 0 lacks prompt, chosen, rejected/);
    expect(() => clusterBundle(cfg(), { records: [], images: [] })).toThrow(/no records/);
  });

  it('train.py --dry_run reports records whose images are missing', () => {
    const files = bundle(cfg()).filter((f) => f.name !== 'images/cat.png');
    const dir = writeBundle(files);
    expect(() => execFileSync('python3', [join(dir, 'train.py'), '--dry_run'], { stdio: 'pipe' })).toThrow(/images\/cat\.png not found/);
  });
});

describe('train.py internals (stdlib only)', () => {
  const dir = writeBundle(bundle(cfg({ method: 'grpo' })));

  it('rewards equal Patchwork\'s rewards.ts on the same texts', () => {
    const completions = [
      '{"bbox_2d": [10, 10, 30, 30], "label": "red circle"}',
      '```json\n[{"bbox_2d": [10, 10, 30, 30]}]\n```',
      '```json\n[\n\t{"bbox_2d": [0, 0, 10, 10], "label": "a"},\n\t{"bbox_2d": [20, 0, 30, 10], "label": "b"}\n]\n```',
      "The box is {'bbox_2d': [12, 8, 28, 33], 'label': 'x',} ok",
      '[{"bbox_2d": ["12", " 0x10 ", 28, "3e1"]}, {"bbox_2d": [1, 2, 3]}',
      '{"bbox_2d": [1, 2, 3, NaN]}',
      '{"bbox_2d": [1, 2, 3, 1e400]}',
      '{"bbox_2d": [true, 2, 3, 4]}',
      '{"outer": {"bbox_2d": [5, 5, 15, 15]}}',
      '[{"bbox_2d": [0, 0, 10, 10]}, {"bbox_2d": [20, 0, 30, 10]}, {"bbox_2d": [40, 0, 50, 10]}]',
      '\u00a0\ufeff {"bbox_2d": [10, 10, 30, 30]} \u3000',
      '{"bbox_2d": [10, 10, 30, 30]} trailing prose',
      '{"bbox": [10, 10, 30, 30], "label": 3}',
      '{"a": "}", "bbox_2d": [1, 1, 9, 9]}',
      '  A Dog.  ',
      'a   DOG!!。',
      'dog\u000b',
      'cat',
      '',
      '{"bbox_2d": [10, 10, 30',
    ];
    const refs = [
      { boxes: [[10, 10, 30, 30]] as [number, number, number, number][], answer: 'dog' },
      { boxes: [[20, 0, 30, 10], [0, 0, 10, 10]] as [number, number, number, number][] },
      { answer: 'A dog' },
      {},
    ];
    const nan = (v: number) => (Number.isNaN(v) ? null : v);
    const ts = refs.map((r) => completions.map((c) => [nan(iouReward(c, r)), formatReward(c), nan(exactMatchReward(c, r))]));
    const pyOut = py(dir, [
      'out = []',
      'for r in inp["refs"]:',
      '    out.append([[m.iou_score(c, r.get("boxes")), m.format_score(c), m.exact_score(c, r.get("answer"))] for c in inp["completions"]])',
      'print(json.dumps(out))',
    ].join('\n'), { completions, refs }) as (number | null)[][][];
    for (let i = 0; i < refs.length; i++) for (let j = 0; j < completions.length; j++) {
      const [a, b] = [ts[i][j], pyOut[i][j]];
      for (let k = 0; k < 3; k++) {
        if (a[k] === null) expect(b[k], `ref ${i} completion ${j} fn ${k}`).toBeNull();
        else expect(b[k], `ref ${i} completion ${j} fn ${k}: ${JSON.stringify(completions[j])}`).toBeCloseTo(a[k] as number, 12);
      }
    }
    const groundings = py(dir, 'print(json.dumps([m.parse_groundings(c) for c in inp]))', completions) as { bbox: number[]; label?: string }[][];
    expect(groundings).toEqual(completions.map((c) => parseGroundings(c)));
  });

  it('trl reward functions read solution / reward columns; None where a reward does not apply', () => {
    const out = py(dir, [
      'fs = {n: m.make_reward_func(n) for n in ("iou", "format", "exact")}',
      'comps = [[{"role": "assistant", "content": c}] for c in inp["completions"]]',
      'print(json.dumps({n: [f.__name__, f(prompts=None, completions=comps, solution=inp["solution"], reward=inp["reward"], image=None)] for n, f in fs.items()}))',
    ].join('\n'), {
      completions: ['{"bbox_2d": [1, 2, 30, 40]}', 'dog.', '{"bbox_2d": [1, 2, 30, 40]}'],
      solution: ['[{"bbox_2d": [1, 2, 30, 40], "label": "cat"}]', 'Dog', '{"bbox_2d": [1, 2, 30, 40]}'],
      reward: ['iou', 'exact', null],
    }) as Record<string, [string, (number | null)[]]>;
    expect(out.iou).toEqual(['iou', [1, null, 1]]);
    expect(out.format).toEqual(['format', [1, 0, 1]]);
    expect(out.exact).toEqual(['exact', [null, 1, null]]);
  });

  it('smart_resize matches Patchwork\'s', () => {
    const sizes = [[1000, 700], [60, 90], [3024, 4032], [28, 28], [17, 3000], [1080, 1920], [333, 777]];
    for (const [lo, hi] of [[3136, 401408], [784 * 4, 784 * 300], [56 * 56, 28 * 28 * 1280]]) {
      const got = py(dir, 'print(json.dumps([list(m.smart_resize(h, w, 28, inp["lo"], inp["hi"])) for h, w in inp["s"]]))', { s: sizes, lo, hi });
      expect(got).toEqual(sizes.map(([h, w]) => smartResize(h, w, 28, lo, hi)));
    }
  });

  it('SFT labels: each assistant turn and its <|im_end|>, nothing else', () => {
    const sft = writeBundle(bundle(cfg()));
    // ids: <|im_start|>=1 <|im_end|>=2 "assistant"=5 "\n"=6, pad 0
    const got = py(sft, [
      'c = m.AssistantOnlyCollator.__new__(m.AssistantOnlyCollator)',
      'c.im_start, c.im_end, c.assistant, c.newline = 1, 2, [5], [6]',
      'print(json.dumps([c._labels(ids) for ids in inp]))',
    ].join('\n'), [
      [1, 9, 6, 7, 2, 6, 1, 4, 6, 8, 8, 2, 6, 1, 5, 6, 11, 12, 2, 6, 1, 4, 6, 8, 2, 6, 1, 5, 6, 13, 2, 6, 0, 0],
      [1, 5, 14, 15, 2, 6],
      [1, 5, 6, 16, 17],
    ]);
    const I = -100;
    expect(got).toEqual([
      [I, I, I, I, I, I, I, I, I, I, I, I, I, I, I, I, 11, 12, 2, I, I, I, I, I, I, I, I, I, I, 13, 2, I, I, I],
      [I, I, 14, 15, 2, I], // a token merging "\n" with the answer counts as answer
      [I, I, I, 16, 17], // cut before <|im_end|>: the tail is still answer
    ]);
  });

  it('the script is the same text for the same settings', () => {
    const s = clusterSettings(cfg({ method: 'dpo' }));
    expect(trainScript(s)).toBe(trainScript(clusterSettings(cfg({ method: 'dpo' }))));
    expect(readFileSync(join(dir, 'train.py'), 'utf8')).toContain('reward_funcs=[make_reward_func(n) for n in args.rewards]');
  });
});
