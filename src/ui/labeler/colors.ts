// Class colours: distinct, readable on photos, stable per class index (or per label when the
// label is not a listed class).

export const PALETTE = ['#f43f5e', '#22c55e', '#3b82f6', '#f59e0b', '#a855f7', '#06b6d4', '#ec4899', '#84cc16', '#f97316', '#14b8a6'];
export const NO_LABEL = '#6366f1';

export function colorFor(label: string, classes: string[]): string {
  if (!label) return NO_LABEL;
  const k = classes.indexOf(label);
  if (k >= 0) return PALETTE[k % PALETTE.length];
  let h = 0;
  for (let i = 0; i < label.length; i++) h = (h * 31 + label.charCodeAt(i)) | 0;
  return PALETTE[Math.abs(h) % PALETTE.length];
}
