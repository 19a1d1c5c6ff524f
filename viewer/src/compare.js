// A comparison directory (`tokenlens compare`, docs/compare.md): what was compared
// (comparison.json), the layer similarity heatmap (table `similarity`), the documents ranked by
// disagreement (`diff_docs`) and, per document, its `diff` rows over positions with both runs'
// document views side by side (the server serves run A under /a/ and run B under /b/).
// Routes: #/ , #/similarity?metric=&source=&pair= , #/docs?sort= , #/doc/<id>.
import { h, chip, missing, showTip, hideTip } from './ui.js'
import { viridis, viridisText } from './colors.js'

const fmt = (x, d = 3) => (x == null || Number.isNaN(x) ? '—' : Number(x).toFixed(d))

// The two runs as the comparison names them (paths as given on the command line).
function runs(info) {
  return { a: info?.run_a?.given || info?.run_a || 'A', b: info?.run_b?.given || info?.run_b || null }
}

function nav(active) {
  const link = (href, key, label) => h('a', { href, class: key === active ? 'active' : '', 'data-tab': key }, label)
  return h('nav', { class: 'tabs' }, link('#/', 'summary', 'Summary'), link('#/similarity', 'similarity', 'Layer similarity'), link('#/docs', 'docs', 'Disagreements'))
}

function summary(run, info) {
  const r = runs(info)
  const facts = [
    ['run A', r.a],
    ['run B', r.b || '(none: within run A)'],
    ['level', info?.level],
    ['documents', info?.docs != null ? JSON.stringify(info.docs) : null],
    ['version', info?.tokenlens_version],
  ].filter(([, v]) => v != null)
  return h('div', { id: 'comparison-summary' },
    h('table', { class: 'grid' }, facts.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, String(v))))),
    h('h2', {}, 'Tables'),
    h('table', { class: 'grid', id: 'tables' }, Object.entries(run.files.tables).map(([t, parts]) =>
      h('tr', { 'data-table': t }, h('td', {}, h('code', {}, t)), h('td', { class: 'num' }, `${parts.length} part(s)`)))),
    info ? h('details', {}, h('summary', {}, 'comparison.json'), h('pre', {}, JSON.stringify(info, null, 2))) : null)
}

// The layer x layer heatmap of one metric, source and pair of runs (also a run's own table:
// main.js's #/similarity).
export async function similarity(run, info, params) {
  if (!run.has('similarity')) return missing('similarity', 'run `tokenlens compare` on runs with a residuals or activations table')
  const rows = await run.read('similarity', ['metric', 'source', 'run_a', 'layer_a', 'run_b', 'layer_b', 'value', 'rows'])
  const metrics = [...new Set(rows.map(r => r.metric))].sort()
  const sources = [...new Set(rows.map(r => r.source))].sort()
  const pairs = [...new Set(rows.map(r => `${r.run_a}\u0000${r.run_b}`))]
  const metric = metrics.includes(params.get('metric')) ? params.get('metric') : metrics[0]
  const source = sources.includes(params.get('source')) ? params.get('source') : sources[0]
  const pair = pairs.includes(params.get('pair')) ? params.get('pair') : pairs[pairs.length - 1]
  const go = (k, v) => { const p = new URLSearchParams({ metric, source, pair }); p.set(k, v); location.hash = `#/similarity?${p}` }
  const select = (name, options, value, label = x => x) => h('select', { 'data-name': name, onchange: e => go(name, e.target.value) },
    options.map(o => h('option', { value: o, selected: o === value }, label(o))))
  const [ra, rb] = pair.split('\u0000')
  const cells = rows.filter(r => r.metric === metric && r.source === source && r.run_a === ra && r.run_b === rb)
  const la = [...new Set(cells.map(r => r.layer_a))].sort((x, y) => x - y)
  const lb = [...new Set(cells.map(r => r.layer_b))].sort((x, y) => x - y)
  const at = new Map(cells.map(r => [`${r.layer_a},${r.layer_b}`, r]))
  const size = Math.max(8, Math.min(22, Math.floor(640 / Math.max(1, lb.length))))
  const grid = h('table', { class: 'heat', id: 'similarity-heatmap', 'data-metric': metric, 'data-source': source },
    h('tr', {}, h('th', {}, `A \\ B`), lb.map(l => h('th', { class: 'num' }, l))),
    [...la].reverse().map(a => h('tr', {}, h('th', { class: 'num' }, a), lb.map(b => {
      const r = at.get(`${a},${b}`)
      if (!r) return h('td', { class: 'empty' })
      return h('td', {
        'data-a': a, 'data-b': b, 'data-value': r.value,
        style: { background: viridis(r.value), color: viridisText(r.value), width: `${size}px`, height: `${size}px` },
        onmousemove: ev => showTip(ev, h('div', {}, `${metric} (${source}): A layer ${a} vs B layer ${b} = ${fmt(r.value, 4)} over ${r.rows} rows`)),
        onmouseleave: hideTip,
      })
    }))))
  return h('div', { id: 'similarity' },
    h('p', { class: 'controls' }, 'metric ', select('metric', metrics, metric), ' representation ', select('source', sources, source),
      ' runs ', select('pair', pairs, pair, p => p.split('\u0000').join(' vs '))),
    h('p', { class: 'note' }, `Rows: run A (${ra}) layers, bottom to top; columns: run B (${rb}) layers. 1 = the same representation up to the metric's invariances (docs/compare.md).`),
    grid)
}

const SORTS = [['mean_js', 'mean JS divergence'], ['max_js', 'largest JS divergence'], ['mean_kl', 'mean KL(A‖B)'], ['top1_agreement', 'top-1 agreement (lowest first)'], ['mean_saliency_distance', 'saliency distance'], ['diverges_at', 'first divergence (earliest first)']]

async function disagreements(run, params) {
  if (!run.has('diff_docs')) return missing('diff_docs', 'compare two runs to get it')
  const rows = await run.read('diff_docs')
  const sort = SORTS.some(([k]) => k === params.get('sort')) ? params.get('sort') : 'mean_js'
  const ascending = sort === 'top1_agreement' || sort === 'diverges_at'
  const key = r => r[sort] ?? (ascending ? Infinity : -Infinity)
  rows.sort((x, y) => (ascending ? key(x) - key(y) : key(y) - key(x)) || (x.index_a - y.index_a))
  return h('div', { id: 'disagreements' },
    h('p', { class: 'controls' }, 'sort by ', h('select', { 'data-name': 'sort', onchange: e => { location.hash = `#/docs?sort=${e.target.value}` } },
      SORTS.map(([k, label]) => h('option', { value: k, selected: k === sort }, label)))),
    h('table', { class: 'grid', id: 'diff-docs', 'data-sort': sort },
      h('tr', {}, ['document', 'positions', 'top-1 agree', 'mean JS', 'max JS', 'mean KL', 'saliency dist.', 'diverges at', 'A generated', 'B generated'].map(c => h('th', {}, c))),
      rows.map(r => h('tr', { 'data-doc': r.doc_id },
        h('td', {}, h('a', { href: `#/doc/${encodeURIComponent(r.doc_id)}` }, r.doc_id)),
        h('td', { class: 'num' }, r.n_positions ?? '—'),
        h('td', { class: 'num' }, fmt(r.top1_agreement, 2)),
        h('td', { class: 'num' }, fmt(r.mean_js)),
        h('td', { class: 'num' }, fmt(r.max_js)),
        h('td', { class: 'num' }, fmt(r.mean_kl)),
        h('td', { class: 'num' }, fmt(r.mean_saliency_distance)),
        h('td', { class: 'num' }, r.diverges_at ?? '—'),
        h('td', { class: 'ctx' }, r.output_text_a),
        h('td', { class: 'ctx' }, r.output_text_b)))))
}

// One document: its diff rows as a strip over positions, then both runs' views side by side.
async function documentPage(run, info, id) {
  const r = runs(info)
  const diffs = run.has('diff') ? (await run.doc('diff', undefined, id)).sort((x, y) => x.position - y.position) : []
  const maxJs = Math.max(1e-9, ...diffs.map(d => d.js ?? 0))
  const strip = diffs.length
    ? h('div', { class: 'tokens', id: 'diff-strip' }, diffs.map(d => chip(`${d.top1_token_a ?? '?'}${d.agree ? '' : ` | ${d.top1_token_b ?? '?'}`}`, {
        'data-pos': d.position, 'data-js': d.js,
        class: d.agree === false ? 'disagree' : '',
        style: { background: viridis(1 - (d.js ?? 0) / maxJs), color: viridisText(1 - (d.js ?? 0) / maxJs) },
        title: `position ${d.position}: A top-1 ${JSON.stringify(d.top1_token_a)}, B top-1 ${JSON.stringify(d.top1_token_b)}, JS ${fmt(d.js, 4)} bits, KL(A‖B) ${fmt(d.kl_ab, 4)}` +
          (d.next_token_id != null ? `, next token rank A ${d.rank_a ?? '—'} / B ${d.rank_b ?? '—'}` : ''),
      })))
    : h('p', { class: 'note' }, 'No position-level diff rows for this document (document-level comparison, or no common positions).')
  const frame = (side, label) => h('div', { class: 'side' }, h('h3', {}, `${side.toUpperCase()}: ${label}`),
    h('iframe', { src: `/${side}/#/doc/${encodeURIComponent(id)}/predictions`, 'data-side': side, title: `run ${side} document ${id}` }))
  return h('div', { id: 'compare-doc', 'data-doc': id },
    h('p', {}, h('a', { href: '#/docs', id: 'back' }, '← all documents')),
    h('h1', {}, 'Document ', h('code', {}, id)),
    h('p', { class: 'note' }, 'Each position\'s top-1 next token in run A (| run B\'s where they differ); darker = larger Jensen–Shannon divergence between the two next-token distributions.'),
    strip,
    h('div', { class: 'side-by-side' }, frame('a', r.a), r.b ? frame('b', r.b) : null))
}

export async function comparisonPage(run, info) {
  const hash = location.hash
  const params = new URLSearchParams(hash.split('?')[1] || '')
  const doc = hash.match(/^#\/doc\/([^/?]+)/)
  if (doc) return documentPage(run, info, decodeURIComponent(doc[1]))
  const tab = hash.startsWith('#/similarity') ? 'similarity' : hash.startsWith('#/docs') ? 'docs' : 'summary'
  const body = tab === 'similarity' ? await similarity(run, info, params) : tab === 'docs' ? await disagreements(run, params) : summary(run, info)
  return h('div', { id: 'comparison', 'data-tab': tab }, h('h1', {}, 'Comparison'), nav(tab), body)
}

