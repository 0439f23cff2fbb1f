// What choosing a class (keys 1-9 or a class chip) does, made explicit. As in CVAT, Label Studio and
// makesense.ai, a class chosen while a box is selected relabels that box; it also becomes the class of
// the next boxes drawn. Either way the labeler says what happened, and a relabel can be undone
// (Ctrl+Z, or the Undo button in the message).
import type { Box } from '../../data/formats/types.ts';

export type ClassChoice =
  /** no such class: nothing changes */
  | { kind: 'none'; message: string }
  /** no box selected: only the class of the next boxes */
  | { kind: 'next'; activeClass: number; message: string }
  /** the selected box already has it */
  | { kind: 'same'; activeClass: number; message: string }
  /** the selected box is relabelled */
  | { kind: 'relabel'; activeClass: number; boxes: Box[]; message: string };

export function chooseClass(boxes: readonly Box[], selectedId: string | null, classes: readonly string[], k: number): ClassChoice {
  if (k < 0 || k >= classes.length) return { kind: 'none', message: `No class ${k + 1}: add classes in the panel` };
  const cls = classes[k];
  const i = boxes.findIndex((b) => b.id === selectedId);
  if (i < 0) return { kind: 'next', activeClass: k, message: `New boxes: "${cls}"` };
  const old = boxes[i].label;
  if (old === cls) return { kind: 'same', activeClass: k, message: `Box ${i + 1} is already "${cls}"` };
  return {
    kind: 'relabel',
    activeClass: k,
    boxes: boxes.map((b, j) => (j === i ? { ...b, label: cls } : b)),
    message: `Box ${i + 1}: "${old || 'no label'}" → "${cls}"`,
  };
}
