// Builds plugin.js (beside this file) into a component with componentize-js,
// which is what `jco componentize` does, without jco's command line.
// Usage: node build.mjs WIT_DIR OUT.wasm
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const [witPath, outPath] = process.argv.slice(2);
const { component } = await componentize({
  sourcePath: fileURLToPath(new URL('plugin.js', import.meta.url)),
  witPath,
  worldName: 'reset-hook',
  // Without this the component imports wasi:http, which lila does not link.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(outPath, component);
