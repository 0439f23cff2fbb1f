import type { CaseHandler } from './golden.ts';

export const linearCases: Record<string, CaseHandler> = {};
