import { describe, expect, it } from 'vitest';
import { rowsOf, seriesOf, type StepRow } from './runPersist.ts';

describe('step rows ↔ chart series', () => {
  it('round-trips, in step order, with metrics missing on some steps', () => {
    const rows: StepRow[] = [
      { runId: 'r', step: 1, values: { loss: 2, lr: 1e-4 } },
      { runId: 'r', step: 2, values: { loss: 1.5, lr: 2e-4, grad_norm: 0.7 } },
      { runId: 'r', step: 3, values: { loss: 1.2, lr: 2e-4 } },
    ];
    const s = seriesOf(rows);
    expect(s).toEqual({ loss: { step: [1, 2, 3], value: [2, 1.5, 1.2] }, lr: { step: [1, 2, 3], value: [1e-4, 2e-4, 2e-4] }, grad_norm: { step: [2], value: [0.7] } });
    expect(rowsOf('r', s)).toEqual(rows);
    expect(rowsOf('r', { loss: { step: [5, 4], value: [1, 2] } }).map((r) => r.step)).toEqual([4, 5]);
  });
});
