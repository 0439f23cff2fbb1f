// WebGPU in Node through Dawn (the `webgpu` npm package), for tests, the CLI and benchmarks.
// On a Linux machine without a GPU driver, Dawn finds no adapter; Debian's chromium package ships
// SwiftShader (a CPU Vulkan driver), so we point the Vulkan loader at it, as the README says.
import { existsSync } from 'node:fs';
import { destroyGpu, initGpu, GpuError, type Gpu } from './device.ts';

const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

let ready: Promise<Gpu> | undefined;
// Dawn's instance lives only as long as the object create() returns: if it is garbage-collected
// while the device is alive, the next mapAsync crashes the process. Hold it here; closeGpu drops it.
let instance: GPU | undefined;

async function create(): Promise<Gpu> {
  const { create: createGpu, globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  // PATCHWORK_F16=0 / PATCHWORK_SUBGROUPS=0 leave those features off the device: a peer in the
  // bench (ORT Web 1.30's attention) computes wrong results with subgroups on SwiftShader.
  const tryInit = async () => {
    const api = (instance = createGpu([]) as unknown as GPU);
    return (await api.requestAdapter()) ? initGpu(api, { f16: process.env.PATCHWORK_F16 !== '0', subgroups: process.env.PATCHWORK_SUBGROUPS !== '0' }) : undefined;
  };
  let g = await tryInit();
  if (!g && !process.env.VK_ICD_FILENAMES && !process.env.VK_DRIVER_FILES && existsSync(SWIFTSHADER_ICD)) {
    // No usable driver: fall back to SwiftShader (the Vulkan loader rereads this per instance).
    process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
    g = await tryInit();
  }
  if (!g) {
    throw new GpuError(
      `Dawn found no WebGPU adapter. Install a GPU driver, or Debian's "chromium" and "libvulkan1" packages and set VK_ICD_FILENAMES=${SWIFTSHADER_ICD} (SwiftShader, a CPU Vulkan driver).`,
    );
  }
  return g;
}

/** The shared Node device (created once per process). */
export function nodeGpu(): Promise<Gpu> {
  ready ??= create();
  return ready;
}

export async function closeGpu(): Promise<void> {
  if (!ready) return;
  const g = await ready.catch(() => undefined);
  ready = undefined;
  // Let submitted work and pending callbacks finish before the device goes: a device destroyed with
  // work in flight has made Dawn abort at process exit ("std::system_error: Invalid argument").
  if (g) await Promise.race([g.device.queue.onSubmittedWorkDone().catch(() => undefined), new Promise((r) => setTimeout(r, 2000))]);
  destroyGpu();
  await new Promise((r) => setTimeout(r, 0));
  instance = undefined;
}
