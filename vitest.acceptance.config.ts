import { defineConfig } from 'vitest/config';

// The training issue's acceptance runs (src/train/acceptance.test.ts): long, so outside `npm test`.
export default defineConfig({
  test: { include: ['src/train/acceptance.test.ts'], pool: 'forks', fileParallelism: false, testTimeout: 3_600_000, hookTimeout: 120_000 },
});
