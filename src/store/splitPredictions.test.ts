import { describe, expect, it } from 'vitest';
import { interrupted, restoreSplitPredictions, useSplitPredictions } from './splitPredictions.ts';

describe('split predictions after a reload', () => {
  const fresh = useSplitPredictions.getState();
  const q = { index: 0, imageId: 'i', name: 'a.png', question: 'Where?', where: 'a.png', width: 4, height: 3, labelled: [] };

  it('a finished or cancelled prediction comes back as it was, not running', () => {
    const r = restoreSplitPredictions({ over: 'eval', questions: [q], done: 1, total: 1, complete: true, cancelled: true, adapterLabel: 'SFT #1, step 8', runId: 'r1' }, fresh);
    expect(r).toMatchObject({ over: 'eval', questions: [q], done: 1, cancelled: true, running: false, cancelling: false, runId: 'r1' });
    expect(interrupted(r)).toBe(false);
  });

  it('one that was running when the page went is marked interrupted, with what it had', () => {
    const r = restoreSplitPredictions({ over: 'all', questions: [q], done: 1, total: 5, complete: false }, { ...fresh, running: true, cancelling: true });
    expect(r).toMatchObject({ over: 'all', questions: [q], done: 1, total: 5, running: false, cancelling: false });
    expect(interrupted(r)).toBe(true);
    expect(interrupted({ complete: false, running: true })).toBe(false); // running now, in this page
  });

  it('nothing saved: the fresh state', () => {
    const r = restoreSplitPredictions(undefined, fresh);
    expect(r).toMatchObject({ over: 'images', questions: [], running: false });
    expect(interrupted(r)).toBe(false);
  });
});
