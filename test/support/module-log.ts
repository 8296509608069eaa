// Loaded with `node --import` into a process under test: at exit it writes the URL of every module the process
// loaded (ESM and CommonJS alike), one a line, to the file $FERRY_MODULE_LOG. For tests of what a start loads.
import { writeFileSync } from 'node:fs';
import { registerHooks } from 'node:module';

const loaded = new Set<string>();
registerHooks({
  load(url, context, next) {
    loaded.add(url);
    return next(url, context);
  },
});
process.on('exit', () => {
  const file = process.env['FERRY_MODULE_LOG'];
  if (file) writeFileSync(file, [...loaded].map((u) => `${u}\n`).join(''));
});
