// Engine status as the UI sees it: the worker, its WebGPU device, the self-test, and which Trainer
// API methods exist. Not persisted: it is re-learned from the worker on every load.
import { create } from 'zustand';
import type { GpuReport, SelfTestResult } from '../worker/api.ts';
import { callback, startTrainer, type Trainer, type TrainerClient } from '../worker/client.ts';

export type GpuProblem = 'no-webgpu' | 'no-adapter' | 'device-failed' | 'worker-failed';

export type GpuState =
  | { status: 'starting' }
  | { status: 'ready'; report: GpuReport }
  | { status: 'unavailable'; problem: GpuProblem; message: string; pageHasWebGpu: boolean }
  | { status: 'lost'; report: GpuReport; reason: string };

export type SelfTestState =
  | { status: 'idle' }
  | { status: 'running' }
  | { status: 'done'; result: SelfTestResult }
  | { status: 'error'; message: string };

interface RuntimeStore {
  gpu: GpuState;
  selfTest: SelfTestState;
  /** Trainer API methods the worker implements (from init); buttons check this list */
  methods: string[];
  boot(): void;
  /** Create a new device after a loss (or retry after a failure). */
  reconnect(): Promise<void>;
  runSelfTest(): Promise<void>;
}

let client: TrainerClient | undefined;

/** The worker's API; undefined until boot(). */
export function trainer(): Trainer | undefined {
  return client?.api;
}

function pageHasWebGpu(): boolean {
  return typeof navigator !== 'undefined' && !!(navigator as Navigator & { gpu?: GPU }).gpu;
}

export const useRuntime = create<RuntimeStore>()((set, get) => {
  async function init(): Promise<void> {
    const api = client!.api;
    set({ gpu: { status: 'starting' }, selfTest: { status: 'idle' } });
    let r;
    try {
      r = await api.init();
    } catch (e) {
      set({ gpu: { status: 'unavailable', problem: 'worker-failed', message: (e as Error).message, pageHasWebGpu: pageHasWebGpu() } });
      return;
    }
    set({ methods: r.methods });
    if (!r.ok) {
      set({ gpu: { status: 'unavailable', problem: r.kind, message: r.message, pageHasWebGpu: pageHasWebGpu() } });
      return;
    }
    const { methods: _m, ...report } = r;
    set({ gpu: { status: 'ready', report } });
    try {
      await api.watchDeviceLost(
        callback(({ reason }) => {
          const g = get().gpu;
          if (g.status === 'ready') set({ gpu: { status: 'lost', report: g.report, reason } });
        }),
      );
    } catch (e) {
      // lost between init and here
      set({ gpu: { status: 'lost', report, reason: (e as Error).message } });
      return;
    }
    await get().runSelfTest();
  }

  return {
    gpu: { status: 'starting' },
    selfTest: { status: 'idle' },
    methods: [],

    boot() {
      if (client) return; // once per page (React StrictMode mounts effects twice)
      client = startTrainer((message) => {
        set({ gpu: { status: 'unavailable', problem: 'worker-failed', message, pageHasWebGpu: pageHasWebGpu() } });
      });
      void init();
    },

    async reconnect() {
      if (!client) return get().boot();
      await init();
    },

    async runSelfTest() {
      const api = client?.api;
      if (!api || get().gpu.status !== 'ready') return;
      set({ selfTest: { status: 'running' } });
      try {
        set({ selfTest: { status: 'done', result: await api.selfTest() } });
      } catch (e) {
        set({ selfTest: { status: 'error', message: (e as Error).message } });
      }
    },
  };
});

/** True when the worker implements `method` and has a live device. */
export function useEngineCan(method: string): boolean {
  return useRuntime((s) => s.gpu.status === 'ready' && s.methods.includes(method));
}
