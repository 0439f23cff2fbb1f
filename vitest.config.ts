import { defineConfig } from 'vitest/config';

// Unit and kernel tests run in Node on Dawn (SwiftShader when there is no GPU driver).
// SwiftShader already uses every core, so test files run one after another.
export default defineConfig({
  test: {
    include: ['src/**/*.test.ts'],
    // the long training runs of the training issue: `npm run test:acceptance`
    exclude: ['src/train/acceptance.test.ts', 'node_modules/**'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
