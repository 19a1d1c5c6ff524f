// Reading the run: /api/files says which tables and parts exist; Parquet parts are read with
// hyparquet over HTTP range requests (only the footer, the columns asked for, and the row groups
// whose statistics can match the filter), zstd pages decompressed by fzstd.
import { asyncBufferFromUrl, cachedAsyncBuffer, parquetMetadataAsync, parquetReadObjects } from 'hyparquet'
import { decompress } from 'fzstd'

const compressors = { ZSTD: (input, outputLength) => decompress(input, new Uint8Array(outputLength)) }

async function getJson(url) {
  const r = await fetch(url)
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
    run.files = await getJson('/api/files')
    run.manifest = run.files.manifest ? await getJson('/run/manifest.json') : null
    run.parts = new Map()
    run.cache = new Map()
    return run
  }

  has(table) { return (this.files.tables[table] || []).length > 0 }

  // An opened part: its buffer (range reads, cached) and metadata.
  part(p) {
    if (!this.parts.has(p.path)) {
      this.parts.set(p.path, (async () => {
        const file = cachedAsyncBuffer(await asyncBufferFromUrl({ url: `/run/${p.path}`, byteLength: p.size }))
        const metadata = await parquetMetadataAsync(file)
        return { file, metadata }
      })())
    }
    return this.parts.get(p.path)
  }

  // Rows of a table (all parts), only `columns`, only rows matching `filter` (hyparquet's
  // filter syntax, e.g. {doc_id: 'x'}). Cached by arguments.
  read(table, columns, filter) {
    const key = JSON.stringify([table, columns, filter])
    if (!this.cache.has(key)) {
      this.cache.set(key, (async () => {
        const out = []
        for (const p of this.files.tables[table] || []) {
          const { file, metadata } = await this.part(p)
          const rows = await parquetReadObjects({ file, metadata, columns, filter, compressors, rowFormat: 'object' })
          for (const r of rows) out.push(plain(r))
        }
        return out
      })())
    }
    return this.cache.get(key)
  }

  doc(table, columns, docId) { return this.read(table, columns, { doc_id: docId }) }
}
