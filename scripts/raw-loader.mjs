// Lets Node (tsx) import `file.wgsl?raw` the way Vite does, so the same kernel
// code runs in the browser bundle and in the headless CLI.
import { register } from 'node:module';
register('./raw-hooks.mjs', import.meta.url);
