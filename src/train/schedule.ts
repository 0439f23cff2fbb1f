// Learning-rate schedules with warmup, as transformers' get_scheduler defines them: the factor for
// optimizer step `step` (0-based) multiplies the base learning rate.

export type ScheduleKind = 'constant' | 'linear' | 'cosine';

export interface Schedule {
  kind: ScheduleKind;
  /** warmup steps (lr rises linearly from 0) */
  warmupSteps: number;
  /** total optimizer steps (for linear/cosine decay) */
  totalSteps: number;
}

export function lrFactor(s: Schedule, step: number): number {
  if (step < s.warmupSteps) return step / Math.max(1, s.warmupSteps);
  if (s.kind === 'constant') return 1;
  const progress = (step - s.warmupSteps) / Math.max(1, s.totalSteps - s.warmupSteps);
  if (s.kind === 'linear') return Math.max(0, 1 - progress);
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
}

/** warmup given as a ratio of total steps (transformers' warmup_ratio rounds up) */
export function warmupFromRatio(ratio: number, totalSteps: number): number {
  return Math.ceil(ratio * totalSteps);
}
