// Rewrites src/export/train.py's baked blocks with the default Train settings, so the committed
// script is exactly what an export of the defaults writes (src/export/cluster.test.ts checks it):
//   npx tsx --import ./scripts/raw-loader.mjs scripts/train-py.ts
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DEFAULT_CONFIG } from '../src/store/runConfig.ts';
import { clusterSettings, trainScript } from '../src/export/cluster.ts';

writeFileSync(fileURLToPath(new URL('../src/export/train.py', import.meta.url)), trainScript(clusterSettings(DEFAULT_CONFIG)));
