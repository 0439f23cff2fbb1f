import type { CaseHandler } from './golden.ts';

export const modelCases: Record<string, CaseHandler> = {};
