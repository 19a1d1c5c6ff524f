// Reading the run: /api/files says which tables and parts exist; Parquet parts are read with
// hyparquet over HTTP range requests (only the footer, the columns asked for, and the row groups
// whose statistics can match the filter), zstd pages decompressed by fzstd.
import { asyncBufferFromUrl, cachedAsyncBuffer, parquetMetadataAsync, parquetReadObjects } from 'hyparquet'
import { decompress } from 'fzstd'

const compressors = { ZSTD: (input, outputLength) => decompress(input, new Uint8Array(outputLength)) }

// `tokenlens export-html` inlines the run: {files, manifest (text), parts: {path: base64}}.
const EMBED = globalThis.TOKENLENS_EMBED

function embeddedBuffer(path) {
  const bin = atob(EMBED.parts[path])
  const bytes = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i)
  return { byteLength: bytes.length, slice: (start, end) => bytes.slice(start, end).buffer }
}

// Where the served directory is: `/` for the run (or comparison) `tokenlens view` was given,
// `/a/` and `/b/` for a comparison's two runs.
export const BASE = location.pathname.replace(/[^/]*$/, '')

async function getJson(url) {
  if (EMBED) {
    if (url === 'api/files') return EMBED.files
    if (url === 'run/manifest.json' && EMBED.manifest) return JSON.parse(EMBED.manifest)
    throw new Error(`${url}: not in this exported file`)
  }
  const r = await fetch(BASE + url)
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`)
  return r.json()
}

// BigInt (int64 columns) to Number; everything else as is.
function plain(row) {
  for (const k in row) if (typeof row[k] === 'bigint') row[k] = Number(row[k])
  return row
}

export class Run {
  static async open() {
    const run = new Run()
    // The listing first (one local round trip): a comparison directory has no manifest.
    const files = await getJson('api/files')
    run.files = files
    run.manifest = files.manifest ? await getJson('run/manifest.json').catch(() => null) : null
    // A comparison directory (`tokenlens compare`) has comparison.json instead of a manifest.
    run.comparison = files.comparison ? await getJson('run/comparison.json').catch(() => ({})) : null
    run.parts = new Map()
    run.cache = new Map()
    run.docIndex() // the document -> part hints, needed by every document page
    return run
  }

  has(table) { return (this.files.tables[table] || []).length > 0 }

  // Row counts the manifest records, by table: the runner's tables summed over the shards
  // (shards.<name>.rows), the NMF, neuron and similarity tables from `nmf_rows`, `neurons_rows`
  // and `similarity_rows` (written by those stages, corpus-wide). A table the manifest does not count is absent.
  rowCounts() {
    const m = this.manifest || {}
    const rows = {}
    for (const s of Object.values(m.shards || {})) for (const [t, n] of Object.entries(s.rows || {})) rows[t] = (rows[t] || 0) + n
    for (const [t, n] of Object.entries({ ...m.nmf_rows, ...m.neurons_rows, ...m.similarity_rows })) rows[t] = (rows[t] || 0) + n
    return rows
  }

  // An opened part: its buffer (range reads, cached) and metadata.
  part(p) {
    if (!this.parts.has(p.path)) {
      this.parts.set(p.path, (async () => {
        const file = EMBED ? embeddedBuffer(p.path) : cachedAsyncBuffer(await asyncBufferFromUrl({ url: `${BASE}run/${p.path}`, byteLength: p.size }))
        // Footers are small (one row group per part, usually): fetch 64 KB, not hyparquet's 512 KB.
        const metadata = await parquetMetadataAsync(file, { initialFetchSize: 1 << 16 })
        return { file, metadata }
      })())
    }
    return this.parts.get(p.path)
  }

  // Rows of a table's `parts` (default: all), only `columns`, only rows matching `filter`
  // (hyparquet's filter syntax, e.g. {doc_id: 'x'}; row groups whose statistics exclude it are
  // not fetched). Parts are read in parallel. Cached by arguments.
  read(table, columns, filter, parts) {
    parts ??= this.files.tables[table] || []
    const key = JSON.stringify([table, columns, filter, parts.map(p => p.path)])
    if (!this.cache.has(key)) {
      this.cache.set(key, (async () => {
        const chunks = await Promise.all(parts.map(async p => {
          const { file, metadata } = await this.part(p)
          return parquetReadObjects({ file, metadata, columns, filter, compressors, rowFormat: 'object' })
        }))
        return chunks.flat().map(plain)
      })())
    }
    return this.cache.get(key)
  }

  // doc_id -> dataset index, from the generations table (two columns).
  docIndex() {
    this.index ??= this.has('generations')
      ? this.read('generations', ['doc_id', 'index']).then(rows => new Map(rows.map(r => [r.doc_id, r.index])))
      : Promise.resolve(new Map())
    return this.index
  }

  // The parts that should hold a document's rows: the runner writes dataset index i into shard
  // i mod N, window floor(i div N / bucket_window), parts part-<shard>-<seq> with seq div 100 =
  // window. Only a hint: if those parts do not hold the document, every part is read.
  async hintParts(table, docId) {
    const spec = this.manifest?.spec
    const n = this.manifest?.shard_count || 1
    const window = spec?.batching?.bucket_window
    const i = (await this.docIndex()).get(docId)
    if (i == null || !window) return null
    const shard = i % n, w = Math.floor(Math.floor(i / n) / window)
    const parts = (this.files.tables[table] || []).filter(p => {
      const m = p.path.match(/part-(\d+)-(\d+)\.parquet$/)
      return m && Number(m[1]) === shard && Math.floor(Number(m[2]) / 100) === w
    })
    return parts.length ? parts : null
  }

  // A document's rows of a table.
  async doc(table, columns, docId) {
    const filter = { doc_id: docId }
    const hint = await this.hintParts(table, docId)
    if (hint) {
      const rows = await this.read(table, columns, filter, hint)
      if (rows.length) return rows
    }
    return this.read(table, columns, filter)
  }
}
