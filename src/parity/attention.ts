import type { CaseHandler } from './golden.ts';

export const attentionCases: Record<string, CaseHandler> = {};
