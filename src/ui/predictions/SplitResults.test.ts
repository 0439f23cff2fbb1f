// The split's results as the page renders them (server-rendered markup, no browser): both models'
// numbers and histograms, both IoUs per row, and the worst questions drawn with the labelled and the
// predicted boxes at their original-pixel coordinates. The e2e test drives the same view in Chromium,
// where the tiny model's answers rarely hold a box; here they do.
import { describe, expect, it } from 'vitest';
import { createElement } from 'react';
import { renderToStaticMarkup } from 'react-dom/server';
import type { SplitQuestion } from '../../worker/api.ts';
import { SplitResults } from './SplitResults.tsx';

const q = (index: number, adapterIou: number, baseIou: number, box?: [number, number, number, number]): SplitQuestion => ({
  index, imageId: `img${index}`, name: `scene${index}.png`, question: `Where is thing ${index}?`, where: `image "scene${index}.png"`, width: 640, height: 480,
  labelled: [[80, 60, 400, 300]],
  adapter: { text: box ? `{"bbox_2d": [${box.join(', ')}]}` : 'no idea', parsed: !!box, iou: adapterIou, boxes: box ? [box] : [] },
  base: { text: 'nothing', parsed: false, iou: baseIou, boxes: [] },
});

describe('the split results view', () => {
  const html = renderToStaticMarkup(createElement(SplitResults, { questions: [q(0, 0.9, 0, [90, 70, 410, 290]), q(1, 0, 0), q(2, 0.42, 0.05, [10, 20, 300, 200])], adapterLabel: 'SFT #1, step 8' }));
  const count = (re: RegExp) => (html.match(re) ?? []).length;

  it('numbers and a 10-bin histogram for the adapter and the base model', () => {
    expect(html).toMatch(/data-testid="mean-iou-adapter"[^>]*>0\.440</);
    expect(html).toMatch(/data-testid="mean-iou-base"[^>]*>0\.017</);
    expect(html).toMatch(/data-testid="parse-rate-adapter"[^>]*>67%</);
    expect(count(/data-testid="hist-bar"/g)).toBe(20);
    const bins = (who: string) => [...html.matchAll(new RegExp(`data-who="${who}" data-bin="(\\d+)" data-count="(\\d+)"`, 'g'))].map((m) => Number(m[2]));
    expect(bins('adapter')).toEqual([1, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    expect(bins('base')).toEqual([3, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('a row per question with both IoUs, sorted by IoU (worst first)', () => {
    expect(count(/data-testid="split-row"/g)).toBe(3);
    expect([...html.matchAll(/data-testid="row-iou">([^<]*)</g)].map((m) => m[1])).toEqual(['0.000', '0.420', '0.900']);
    expect([...html.matchAll(/data-testid="row-iou-base">([^<]*)</g)].map((m) => m[1])).toEqual(['0.000', '0.050', '0.000']);
  });

  it('the worst questions with their labelled and predicted boxes in original pixels', () => {
    const gallery = html.slice(html.indexOf('data-testid="worst-gallery"'), html.indexOf('data-testid="split-table"'));
    expect(count(/data-testid="worst-card"/g)).toBe(3);
    expect(gallery).toContain('viewBox="0 0 640 480"');
    expect((gallery.match(/class="bx-label" x="80" y="60" width="320" height="240"/g) ?? []).length).toBe(3);
    expect(gallery).toContain('class="bx-adapter" x="10" y="20" width="290" height="180"');
    expect(gallery).toContain('class="bx-adapter" x="90" y="70" width="320" height="220"');
    expect(count(/class="bx-base"/g)).toBe(0); // the base model found no box
    expect(gallery.indexOf('scene1.png')).toBeLessThan(gallery.indexOf('scene2.png')); // worst first
  });
});
