export * from './device.ts';
export * from './kernel.ts';
export * from './tensor.ts';
