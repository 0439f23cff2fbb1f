import type { CaseHandler } from './golden.ts';

export const dataCases: Record<string, CaseHandler> = {};
