import type { CaseHandler } from './golden.ts';

export const elementwiseCases: Record<string, CaseHandler> = {};
