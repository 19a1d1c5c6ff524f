// The run overview: manifest facts, tables, and the searchable, paged document list (generations).
import { h, missing } from './ui.js'

// Documents per page of the list.
const PAGE = 500

// The overview's last URL (search and page), for the documents' "back" link.
export function overviewLink() {
  try { return sessionStorage.getItem('tokenlens-overview') || '#/' } catch { return '#/' }
}
function rememberOverview(hash) {
  try { sessionStorage.setItem('tokenlens-overview', hash) } catch { /* storage disabled */ }
}

function fmtBytes(n) {
  return n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KB` : `${(n / (1 << 20)).toFixed(1)} MB`
}

export async function overview(run) {
  const m = run.manifest || {}
  const cfg = m.model?.config || {}
  const shards = Object.values(m.shards || {})
  const sum = f => shards.reduce((n, s) => n + (f(s) || 0), 0)
  const rows = run.rowCounts()
  const seconds = Math.max(0, ...shards.map(s => s.seconds || 0))
  const prompts = sum(s => s.prompts_done), tokens = sum(s => s.tokens_done)
  const analyses = Object.keys(m.spec?.analyses || {}).filter(k => m.spec.analyses[k] != null)
  const facts = [
    ['description', m.spec?.description],
    ['pipeline', m.spec_path],
    ['status', m.status],
    ['model', m.model ? `${m.model.path} (${m.model.format}, ${cfg.model_type || cfg.arch})` : null],
    ['architecture', cfg.n_layers ? `${cfg.n_layers} layers, ${cfg.n_heads} heads, hidden ${cfg.hidden_size}, vocabulary ${cfg.vocab_size}` : null],
    ['analyses', analyses.join(', ')],
    ['generation', m.spec?.generation ? `${m.spec.generation.max_new_tokens} new tokens, ${m.spec.generation.temperature ? `temperature ${m.spec.generation.temperature}` : 'greedy'}` : null],
    ['prompts', `${prompts} (${tokens} tokens) in ${m.shard_count || shards.length} shard(s)`],
    ['time', seconds ? `${seconds.toFixed(1)} s (${(prompts / seconds).toFixed(2)} prompts/s, ${(tokens / seconds).toFixed(0)} tokens/s)` : null],
    ['version', m.tokenlens_version],
  ].filter(([, v]) => v != null && v !== '')
  const names = [...new Set([...(m.tables || []), ...Object.keys(run.files.tables)])]
  const tables = h('table', { class: 'grid', id: 'tables' },
    h('tr', {}, h('th', {}, 'table'), h('th', {}, 'rows'), h('th', {}, 'parts'), h('th', {}, 'size')),
    names.map(t => {
      const parts = run.files.tables[t] || []
      return h('tr', { 'data-table': t }, h('td', {}, h('code', {}, t)),
        h('td', { class: 'num' }, rows[t] != null ? rows[t].toLocaleString() : parts.length ? '?' : '—'),
        h('td', { class: 'num' }, parts.length || 'not written'),
        h('td', { class: 'num' }, parts.length ? fmtBytes(parts.reduce((n, p) => n + p.size, 0)) : ''))
    }))

  let docs = h('div', {}, missing('generations', 'the document list comes from it'))
  if (run.has('generations')) {
    const gens = (await run.read('generations', ['doc_id', 'index', 'prompt', 'output_text', 'prompt_tokens', 'generated_tokens'])).sort((a, b) => a.index - b.index)
    const list = h('tbody')
    const count = h('span', { class: 'note', id: 'doc-count' })
    // View state lives in the URL (#/?q=…&page=…&per=…): shareable, and kept when coming back
    // from a document.
    const params = new URLSearchParams(location.hash.split('?')[1] || '')
    let q = params.get('q') || ''
    let page = Math.max(1, parseInt(params.get('page'), 10) || 1)
    const per = Math.min(5000, Math.max(1, parseInt(params.get('per'), 10) || PAGE))
    const prev = h('button', { id: 'doc-prev', onclick: () => { page--; fill() } }, '← previous')
    const next = h('button', { id: 'doc-next', onclick: () => { page++; fill() } }, 'next →')
    const fill = () => {
      const needle = q.trim().toLowerCase()
      const hits = needle ? gens.filter(g => g.doc_id.toLowerCase().includes(needle) || g.prompt.toLowerCase().includes(needle) || g.output_text.toLowerCase().includes(needle)) : gens
      const pages = Math.max(1, Math.ceil(hits.length / per))
      page = Math.min(Math.max(1, page), pages)
      const from = (page - 1) * per
      const shown = hits.slice(from, from + per)
      list.replaceChildren(...shown.map(g => h('tr', { 'data-doc': g.doc_id, onclick: () => { location.hash = `#/doc/${encodeURIComponent(g.doc_id)}` } },
        h('td', { class: 'num' }, g.index),
        h('td', {}, h('a', { href: `#/doc/${encodeURIComponent(g.doc_id)}` }, g.doc_id)),
        h('td', {}, g.prompt, h('b', {}, g.output_text)),
        h('td', { class: 'num' }, g.prompt_tokens), h('td', { class: 'num' }, g.generated_tokens))))
      const of = needle ? `${hits.length.toLocaleString()} matches (${gens.length.toLocaleString()} documents)` : `${gens.length.toLocaleString()} documents`
      count.textContent = hits.length ? `${(from + 1).toLocaleString()}–${(from + shown.length).toLocaleString()} of ${of}` : `no match among ${gens.length.toLocaleString()} documents`
      prev.disabled = page <= 1
      next.disabled = page >= pages
      pager.hidden = pages <= 1
      const p = new URLSearchParams()
      if (q) p.set('q', q)
      if (page > 1) p.set('page', page)
      if (per !== PAGE) p.set('per', per)
      const hash = `#/${p.toString() ? `?${p}` : ''}`
      // replaceState: no hashchange, so no re-render and no history entry per keystroke.
      if (location.hash !== hash && !(hash === '#/' && location.hash === '')) history.replaceState(null, '', hash)
      rememberOverview(hash)
    }
    const pager = h('span', { class: 'pager' }, prev, next)
    const search = h('input', { type: 'search', id: 'doc-search', value: q, placeholder: 'Search ids, prompts and outputs…', oninput: e => { q = e.target.value; page = 1; fill() } })
    fill()
    docs = h('div', {}, h('div', { class: 'controls' }, search, count, pager),
      h('table', { class: 'grid docs', id: 'doc-list' },
        h('thead', {}, h('tr', {}, h('th', {}, '#'), h('th', {}, 'doc_id'), h('th', {}, 'prompt + ', h('b', {}, 'generated')), h('th', {}, 'prompt tokens'), h('th', {}, 'generated'))),
        list))
  }
  return h('div', { id: 'overview' },
    h('h1', {}, 'Run overview'),
    run.manifest ? h('dl', { class: 'facts', id: 'facts' }, facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])) : h('p', { class: 'missing' }, 'This run has no manifest.json.'),
    h('h2', {}, 'Tables'), tables,
    h('h2', {}, 'Documents'), docs)
}
