// Bundle the bench CLI into one ES module for a machine without node_modules:
//   node scripts/device/bundle.mjs OUTDIR
// WGSL `?raw` imports are inlined as text (what Vite and scripts/raw-loader.mjs do), the tokenizer
// JSON and the pure-JS peers (tf.js, jax-js) are bundled; `webgpu` (dawn.node) and
// `onnxruntime-web` (wasm files it loads by path) stay external and are copied beside the bundle
// as minimal packages in OUTDIR/node_modules.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';

const out = resolve(process.argv[2] ?? 'out/device/bench');
const root = resolve(dirname(new URL(import.meta.url).pathname), '../..');
mkdirSync(out, { recursive: true });

const rawText = {
  name: 'raw-text',
  setup(b) {
    b.onResolve({ filter: /\?raw$/ }, (a) => ({ path: resolve(a.resolveDir, a.path.slice(0, -4)), namespace: 'raw' }));
    b.onLoad({ filter: /.*/, namespace: 'raw' }, (a) => ({ contents: readFileSync(a.path, 'utf8'), loader: 'text' }));
  },
};

await build({
  entryPoints: [join(root, 'src/cli/bench.ts')],
  outfile: join(out, 'bench.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['webgpu', 'onnxruntime-web', 'onnxruntime-web/*'],
  plugins: [rawText],
  // bundled CommonJS (tf.js) calls require(): give the ES module one
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: 'warning',
  legalComments: 'none',
  minify: true,
});

// minimal external packages: what `import 'webgpu'` and ORT's webgpu entry load at run time
const req = createRequire(join(root, 'package.json'));
const pkgDir = (pkg, entry) => { // walk up from an exported entry to the package's own package.json
  let d = dirname(req.resolve(entry));
  const name = (x) => { try { return JSON.parse(readFileSync(join(x, 'package.json'), 'utf8')).name; } catch { return undefined; } };
  while (name(d) !== pkg) { if (d === dirname(d)) throw new Error(`no package.json of ${pkg} above ${entry}`); d = dirname(d); }
  return d;
};
const copy = (pkg, entry, files) => {
  const dir = pkgDir(pkg, entry);
  for (const f of ['package.json', ...files]) {
    mkdirSync(dirname(join(out, 'node_modules', pkg, f)), { recursive: true });
    copyFileSync(join(dir, f), join(out, 'node_modules', pkg, f));
  }
};
copy('webgpu', 'webgpu', ['index.js', 'dist/linux-x64/dawn.node']);
copy('onnxruntime-web', 'onnxruntime-web/webgpu', ['dist/ort.webgpu.bundle.min.mjs', 'dist/ort.webgpu.min.js', 'dist/ort-wasm-simd-threaded.asyncify.mjs', 'dist/ort-wasm-simd-threaded.asyncify.wasm']);
writeFileSync(join(out, 'package.json'), JSON.stringify({ name: 'patchwork-device-bench', private: true, type: 'module' }) + '\n');
console.log(`bundled ${join(out, 'bench.mjs')}`);
