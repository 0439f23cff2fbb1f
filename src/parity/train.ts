import type { CaseHandler } from './golden.ts';

export const trainCases: Record<string, CaseHandler> = {};
