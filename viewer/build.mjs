// Builds the viewer into dist/ (committed; the tokenlens binary embeds it with include_bytes!):
// src/main.js bundled with hyparquet and fzstd by esbuild into dist/viewer.js, plus
// src/index.html and src/viewer.css copied. dist/BUILD-HASH records a hash of the inputs
// (src/**, build.mjs, package.json, package-lock.json) and of the outputs; `cargo test`
// recomputes both (view::tests::embedded_viewer_is_fresh, src/view/tests.rs), so stale or hand-edited assets fail.
//
//   npm ci && npm run build
import { build } from 'esbuild'
import { readFileSync, readdirSync, writeFileSync, mkdirSync, copyFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'

const here = new URL('.', import.meta.url).pathname

// FNV-1a 64 over each file as `path NUL contents NUL`, files sorted by path (same in Rust).
export function fnv1a64(files) {
  let h = 0xcbf29ce484222325n
  const prime = 0x100000001b3n
  const mask = 0xffffffffffffffffn
  const feed = bytes => {
    for (const b of bytes) { h ^= BigInt(b); h = (h * prime) & mask }
  }
  for (const [path, bytes] of [...files].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    feed(Buffer.from(path, 'utf8')); feed([0]); feed(bytes); feed([0])
  }
  return h.toString(16).padStart(16, '0')
}

function walk(dir) {
  return readdirSync(dir).flatMap(name => {
    const p = join(dir, name)
    return statSync(p).isDirectory() ? walk(p) : [p]
  })
}

const inputs = [...walk(join(here, 'src')), ...['build.mjs', 'package.json', 'package-lock.json'].map(f => join(here, f))]
  .map(p => [relative(here, p).split('\\').join('/'), readFileSync(p)])

mkdirSync(join(here, 'dist'), { recursive: true })
await build({
  entryPoints: [join(here, 'src/main.js')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2020',
  legalComments: 'none',
  outfile: join(here, 'dist/viewer.js'),
  logLevel: 'warning',
})
copyFileSync(join(here, 'src/index.html'), join(here, 'dist/index.html'))
copyFileSync(join(here, 'src/viewer.css'), join(here, 'dist/viewer.css'))
const outputs = ['index.html', 'viewer.css', 'viewer.js'].map(f => [f, readFileSync(join(here, 'dist', f))])
writeFileSync(join(here, 'dist/BUILD-HASH'),
  '# viewer/dist, built by `npm ci && npm run build` in viewer/; checked by cargo test\n' +
  `src ${fnv1a64(inputs)}\ndist ${fnv1a64(outputs)}\n`)
const size = outputs.reduce((n, [, b]) => n + b.length, 0)
console.log(`viewer/dist: ${outputs.map(([f, b]) => `${f} ${b.length} B`).join(', ')} (${size} B)`)
