// Bundle page.jsx (React + useChat from @ai-sdk/react) into one browser script with esbuild.
//
//   node tests/node/usechat/build.mjs OUT.js
//
// tests/test_browser_usechat.py runs this, then serves the script and index.html on the
// gateway's origin through Playwright, so useChat's default transport posts to the real
// gateway's /api/chat.

import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';

const out = process.argv[2];
if (!out) {
  console.error('usage: node build.mjs OUT.js');
  process.exit(2);
}
const result = await build({
  entryPoints: [fileURLToPath(new URL('./page.jsx', import.meta.url))],
  bundle: true,
  outfile: out,
  format: 'iife',
  platform: 'browser',
  target: 'chrome120',
  jsx: 'automatic',
  define: { 'process.env.NODE_ENV': '"production"' },
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
  metafile: true,
});
const bytes = Object.values(result.metafile.outputs).reduce((sum, o) => sum + o.bytes, 0);
console.log(`${out}: ${bytes} bytes`);
