// Page side of the Trainer worker: start it once, wrap it with comlink, report a worker that
// fails to load (syntax error in a bundle, blocked module worker) instead of hanging silently.
import * as Comlink from 'comlink';
import type { TrainerApi } from './api.ts';

export type Trainer = Comlink.Remote<TrainerApi>;

export interface TrainerClient {
  api: Trainer;
  worker: Worker;
  terminate(): void;
}

/** Start the engine worker. `onFatal` gets a readable message if the worker itself dies. */
export function startTrainer(onFatal: (message: string) => void): TrainerClient {
  const worker = new Worker(new URL('./trainer.worker.ts', import.meta.url), { type: 'module', name: 'patchwork-trainer' });
  worker.addEventListener('error', (e) => {
    e.preventDefault();
    const where = e.filename ? ` (${e.filename}:${e.lineno})` : '';
    onFatal(`The engine worker failed: ${e.message || 'it could not be loaded'}${where}.`);
  });
  worker.addEventListener('messageerror', () => onFatal('The engine worker sent a message that could not be read (structured clone failed).'));
  const api = Comlink.wrap<TrainerApi>(worker);
  return {
    api,
    worker,
    terminate() {
      api[Comlink.releaseProxy]();
      worker.terminate();
    },
  };
}

/** Wrap a callback so the worker can call it across the thread boundary. */
export const callback = Comlink.proxy;
