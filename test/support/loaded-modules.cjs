// Preloaded with `node --require`: at exit, writes the path or URL of every module the process loaded to the file
// LLMHUB_LOADED_MODULES names, one a line. require.cache holds what require() loaded (ESM packages loaded by
// require() included); the load hook adds anything loaded by import().
const { registerHooks } = require('node:module');
const { writeFileSync } = require('node:fs');

const imported = new Set();
registerHooks({
  load(url, context, nextLoad) {
    imported.add(url);
    return nextLoad(url, context);
  },
});
process.on('exit', () => {
  const all = new Set([...Object.keys(require.cache), ...imported]);
  writeFileSync(process.env.LLMHUB_LOADED_MODULES, [...all].join('\n') + '\n');
});
