// npm run estimate -- --model <hub id|folder|tiny> [--quantize nf4] [--no-quantize-vision]
//   [--image WxH]... [--text N] [--r N] [--alpha N] [--targets LIST] [--recompute] [--batch N] [--endpoint URL]
// The GPU memory estimate of one LoRA training step (src/model/memory.ts), printed as its
// breakdown and, last, `total: X GiB`. Only config.json is read: a folder holding just that is
// enough. A bitsandbytes 4-bit checkpoint (config.json quantization_config) is estimated in NF4.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseConfig, type QwenVLConfig } from '../model/config.ts';
import { defaultLoraConfig, targetRegexFromNames, TEXT_LORA_MODULES } from '../model/lora.ts';
import { estimateMemory, formatEstimate, type MemoryRequest } from '../model/memory.ts';
import { parseQuantizationConfig } from '../model/quant.ts';
import { hubSource } from '../model/sources/hub.ts';
import { tinyConfig } from '../model/tiny.ts';

const USAGE = 'usage: npm run estimate -- --model <hub id|folder|tiny> [--quantize nf4] [--no-quantize-vision] [--image WxH]... [--text N] [--r N] [--alpha N] [--targets q_proj,v_proj,...] [--recompute] [--batch N] [--endpoint URL]';

export interface EstimateArgs {
  model: string;
  quantize?: 'nf4';
  quantizeVision: boolean;
  images: { width: number; height: number }[];
  text: number;
  r: number;
  alpha?: number;
  targets: string[];
  recompute: boolean;
  batch: number;
  endpoint?: string;
}

/** Parse argv; every problem reported at once. */
export function parseEstimateArgs(argv: string[]): EstimateArgs {
  const errs: string[] = [];
  const a: EstimateArgs = { model: '', quantizeVision: true, images: [], text: 64, r: 16, targets: [...TEXT_LORA_MODULES], recompute: false, batch: 1 };
  const int = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n < min) { errs.push(`${flag} needs an integer ≥ ${min}, got ${v === undefined ? 'nothing' : JSON.stringify(v)}`); return min; }
    return n;
  };
  let imageGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    const val = () => argv[++i];
    switch (f) {
      case '--model': a.model = val() ?? ''; break;
      case '--quantize': {
        const v = val();
        if (v === 'nf4') a.quantize = 'nf4';
        else if (v !== 'none') errs.push(`--quantize ${JSON.stringify(v)}: only "nf4" (or "none") is supported`);
        break;
      }
      case '--no-quantize-vision': a.quantizeVision = false; break;
      case '--image': {
        const v = val() ?? '';
        const m = /^(\d+)x(\d+)$/.exec(v);
        imageGiven = true;
        if (!m || +m[1] < 1 || +m[2] < 1) errs.push(`--image needs WxH in pixels (e.g. 448x448), got ${JSON.stringify(v)}`);
        else a.images.push({ width: +m[1], height: +m[2] });
        break;
      }
      case '--no-image': imageGiven = true; break;
      case '--text': a.text = int(f, val(), 1); break;
      case '--r': a.r = int(f, val(), 1); break;
      case '--alpha': a.alpha = int(f, val(), 1); break;
      case '--batch': a.batch = int(f, val(), 1); break;
      case '--targets': a.targets = (val() ?? '').split(',').map((s) => s.trim()).filter(Boolean); break;
      case '--recompute': a.recompute = true; break;
      case '--endpoint': a.endpoint = val(); break;
      case '-h': case '--help': throw new Error(USAGE);
      default: errs.push(`unknown argument ${JSON.stringify(f)}`);
    }
  }
  if (!a.model) errs.push('--model is required (a hub id, a folder with config.json, or tiny)');
  if (!imageGiven) a.images = [{ width: 448, height: 448 }];
  try {
    targetRegexFromNames(a.targets, '--targets');
  } catch (e) {
    errs.push((e as Error).message);
  }
  if (errs.length) throw new Error(`${errs.join('\n')}\n${USAGE}`);
  return a;
}

/** config.json of a folder, the built-in tiny model, or a hub repo. */
export async function readModelConfig(spec: string, endpoint?: string): Promise<QwenVLConfig> {
  if (spec === 'tiny') return tinyConfig();
  if (existsSync(spec)) {
    const file = existsSync(join(spec, 'config.json')) ? join(spec, 'config.json') : spec;
    return parseConfig(await readFile(resolve(file), 'utf8'), file);
  }
  const src = hubSource(spec, { endpoint, cache: null });
  return parseConfig(new TextDecoder().decode(await src.read('config.json')), `${src.id}: config.json`);
}

/** The memory request of these arguments (a bitsandbytes 4-bit config is estimated in NF4). */
export function estimateRequest(cfg: QwenVLConfig, a: EstimateArgs): MemoryRequest {
  const bnb = parseQuantizationConfig(cfg);
  const lora = defaultLoraConfig({ r: a.r, loraAlpha: a.alpha ?? 2 * a.r, targetModules: targetRegexFromNames(a.targets) });
  return {
    config: cfg, lora, images: a.images, textTokens: a.text, batch: a.batch, recompute: a.recompute,
    quantize: a.quantize ?? (bnb ? 'nf4' : undefined), quantizeVision: a.quantizeVision, doubleQuant: bnb ? bnb.doubleQuant : true,
  };
}

/** The printed report: the breakdown, then `total: X GiB` as the last line. */
export function estimateReport(cfg: QwenVLConfig, a: EstimateArgs): string {
  const req = estimateRequest(cfg, a);
  const est = estimateMemory(req);
  const q = req.quantize ? `NF4 base (Linear layers${req.quantizeVision ? ', vision tower included' : ', vision tower BF16'}; double-quantised absmax ${req.doubleQuant ? 'on' : 'off'})` : 'BF16 base';
  const head = `model ${a.model}: ${cfg.text.numHiddenLayers} decoder layers, hidden ${cfg.text.hiddenSize}, vision depth ${cfg.vision.depth}; ${q}; LoRA r ${a.r} on ${a.targets.join(', ')}; images ${a.images.map((i) => `${i.width}x${i.height}`).join(', ') || 'none'}; ${a.text} text tokens`;
  return `${head}\n${formatEstimate(est)}\ntotal: ${(est.totalBytes / 2 ** 30).toFixed(2)} GiB`;
}

async function main(): Promise<void> {
  const a = parseEstimateArgs(process.argv.slice(2));
  console.log(estimateReport(await readModelConfig(a.model, a.endpoint), a));
}

if (process.argv[1] && /estimate\.ts$/.test(process.argv[1])) {
  main().catch((e) => {
    console.error((e as Error).message);
    process.exit(1);
  });
}
