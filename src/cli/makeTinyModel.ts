// Write the built-in tiny model as a Hugging Face folder (for serving over HTTP, the local-folder
// source, or loading in transformers to compare):
//   npx tsx src/cli/makeTinyModel.ts <dir> [--seed N] [--shard-mb M] [--layout hub|transformers] [--tied]
import { writeTinyModelFolder } from '../model/sources/node.ts';

const args = process.argv.slice(2);
const dir = args.find((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
const opt = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
if (!dir) {
  console.error('usage: makeTinyModel <dir> [--seed N] [--shard-mb M] [--layout hub|transformers] [--tied]');
  process.exit(2);
}
const layout = (opt('layout') ?? 'hub') as 'hub' | 'transformers';
if (layout !== 'hub' && layout !== 'transformers') throw new Error(`--layout must be hub or transformers, got ${layout}`);
const files = await writeTinyModelFolder(dir, {
  seed: Number(opt('seed') ?? 0),
  maxShardBytes: opt('shard-mb') ? Number(opt('shard-mb')) * 2 ** 20 : undefined,
  layout,
  tieWordEmbeddings: args.includes('--tied'),
});
console.log(`wrote ${files.length} files to ${dir}: ${files.join(', ')}`);
