// The studio shell: header (product, screens, GPU badge), the GPU problem banner, and the five
// screens. The current screen lives in the URL hash (#train ...) so reload and links keep it.
import { useEffect, useState } from 'react';
import { DatasetScreen } from './dataset/DatasetScreen.tsx';
import { TrainPanel } from './TrainPanel.tsx';
import { Predictions } from './Predictions.tsx';
import { Playground } from './Playground.tsx';
import { Export } from './Export.tsx';
import { GpuBadge, GpuProblemBanner } from './GpuInfo.tsx';
import { useRuntime } from '../store/runtime.ts';

const SCREENS = [
  { id: 'dataset', label: 'Dataset', hint: 'Images, boxes and questions' },
  { id: 'train', label: 'Train', hint: 'Model, method, LoRA, live charts' },
  { id: 'predictions', label: 'Predictions', hint: 'Run the adapter on images' },
  { id: 'playground', label: 'Playground', hint: 'Ask any question about any image, streamed' },
  { id: 'export', label: 'Export', hint: 'Adapter, dataset, cluster recipe' },
] as const;
type ScreenId = (typeof SCREENS)[number]['id'];

function screenFromHash(): ScreenId {
  const h = location.hash.replace(/^#\/?/, '');
  return (SCREENS.find((s) => s.id === h)?.id ?? 'dataset') as ScreenId;
}

export function App() {
  const [screen, setScreen] = useState<ScreenId>(screenFromHash);
  const boot = useRuntime((s) => s.boot);

  useEffect(() => boot(), [boot]);
  useEffect(() => {
    const on = () => setScreen(screenFromHash());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);

  return (
    <div className="app">
      <header className="app-header">
        <div className="brand">
          <Logo />
          <span className="brand-name">Patchwork</span>
          <span className="brand-sub">Qwen2.5-VL fine-tuning studio</span>
        </div>
        <nav className="tabs" role="tablist" aria-label="Screens">
          {SCREENS.map((s) => (
            <a
              key={s.id}
              href={`#${s.id}`}
              role="tab"
              aria-selected={screen === s.id}
              className={screen === s.id ? 'tab active' : 'tab'}
              title={s.hint}
              data-testid={`tab-${s.id}`}
            >
              {s.label}
            </a>
          ))}
        </nav>
        <GpuBadge />
      </header>
      <GpuProblemBanner />
      <main className="app-main" role="tabpanel" data-screen={screen}>
        {screen === 'dataset' && <DatasetScreen />}
        {screen === 'train' && <TrainPanel />}
        {screen === 'predictions' && <Predictions />}
        {screen === 'playground' && <Playground />}
        {screen === 'export' && <Export />}
      </main>
    </div>
  );
}

function Logo() {
  // four patches, one highlighted: an image split into patches, one being learned
  return (
    <svg width="22" height="22" viewBox="0 0 22 22" aria-hidden="true">
      <rect x="1" y="1" width="9" height="9" rx="2" fill="var(--accent)" />
      <rect x="12" y="1" width="9" height="9" rx="2" fill="var(--accent-soft)" />
      <rect x="1" y="12" width="9" height="9" rx="2" fill="var(--accent-soft)" />
      <rect x="12" y="12" width="9" height="9" rx="2" fill="var(--accent-soft)" />
    </svg>
  );
}
