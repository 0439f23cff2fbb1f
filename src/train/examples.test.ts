import { describe, expect, it } from 'vitest';
import { parseRecords, recordToExample, imagePaths, RecordError } from './examples.ts';

const img = { data: new Uint8Array(28 * 28 * 3), width: 28, height: 28, channels: 3 as const };

describe('dataset records → training examples', () => {
  it('ms-swift messages with <image>, query/response and sharegpt conversations', () => {
    const a = recordToExample({ messages: [{ role: 'user', content: '<image>Where is the cat?' }, { role: 'assistant', content: '{"bbox_2d": [1, 2, 3, 4]}' }], images: ['a.png'] }, [img], 'sft', 1);
    expect(a.kind).toBe('sft');
    if (a.kind !== 'sft') return;
    expect(a.messages[0].content).toEqual([{ type: 'image' }, { type: 'text', text: 'Where is the cat?' }]);
    const b = recordToExample({ query: 'Where?', response: 'there', images: 'b.png' }, [img], 'sft', 2);
    if (b.kind === 'sft') expect(b.messages[0].content).toEqual([{ type: 'image' }, { type: 'text', text: 'Where?' }]);
    const c = recordToExample({ conversations: [{ from: 'human', value: '<image>hi' }, { from: 'gpt', value: 'ok' }], images: ['c.png'] }, [img], 'sft', 3);
    if (c.kind === 'sft') expect(c.messages.map((m) => m.role)).toEqual(['user', 'assistant']);
    expect(imagePaths({ image: 'x.png' })).toEqual(['x.png']);
  });

  it('DPO from trl prompt/chosen/rejected and from ms-swift rejected_response', () => {
    const t = recordToExample({ prompt: [{ role: 'user', content: '<image>Q' }], chosen: [{ role: 'assistant', content: 'good' }], rejected: [{ role: 'assistant', content: 'bad' }], images: ['a.png'] }, [img], 'dpo', 1);
    expect(t).toMatchObject({ kind: 'dpo', chosen: 'good', rejected: 'bad' });
    const s = recordToExample({ messages: [{ role: 'user', content: 'Q' }, { role: 'assistant', content: 'good' }], rejected_response: 'bad' }, [], 'dpo', 2);
    expect(s).toMatchObject({ kind: 'dpo', chosen: 'good', rejected: 'bad' });
    if (s.kind === 'dpo') expect(s.prompt).toHaveLength(1);
  });

  it('GRPO reference boxes come from the solution (resized frame)', () => {
    const r = recordToExample({ query: '<image>Where is the red circle?', solution: '{"bbox_2d": [10, 20, 30, 40], "label": "red circle"}', images: ['a.png'] }, [img], 'grpo', 1);
    expect(r.kind).toBe('rl');
    if (r.kind === 'rl') expect(r.reference.boxes).toEqual([[10, 20, 30, 40]]);
  });

  it('bad records name their line and reason', () => {
    const { records, errors } = parseRecords('{"query": "a", "response": "b"}\nnot json\n\n[1,2]\n');
    expect(records.map((r) => r.line)).toEqual([1]);
    expect(errors.map((e) => e.line)).toEqual([2, 4]);
    expect(() => recordToExample({ query: 'q' }, [], 'sft', 7)).toThrow(/line 7: no assistant answer/);
    expect(() => recordToExample({ messages: [{ role: 'user', content: '<image><image>x' }, { role: 'assistant', content: 'y' }] }, [img], 'sft', 8)).toThrow(RecordError);
    expect(() => recordToExample({ query: 'q', response: 'a' }, [], 'dpo', 9)).toThrow(/rejected/);
  });
});
