import { defineConfig } from 'vitest/config';

// End-to-end: the production build (dist/, from `vite build`) served on 127.0.0.1 and driven by
// headless Chromium through playwright-core. One file at a time: each launches its own browser.
export default defineConfig({
  test: {
    include: ['e2e/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
