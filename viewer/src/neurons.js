// Neuron pages (#/neurons, #/neuron/<layer>/<index>): pick a neuron by layer and index; its
// statistics (neuron_stats) and its top-activating contexts over the run (neuron_top_contexts),
// each the text before, the token highlighted by its value, and the text after. Both tables are
// sorted by layer and neuron, so the filtered reads fetch only the row groups that hold it.
import { h, missing, show } from './ui.js'

export function neuronLink(layer, neuron) { return `#/neuron/${layer}/${neuron}` }

// Context text as shown: newlines and tabs made visible, empty stays empty.
const text = s => (s ? show(s) : '')

const fmt = x => (x == null ? '—' : Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(3) : x.toFixed(4))

// Layers and their neuron counts, from neuron_stats' two key columns.
async function layers(run) {
  const rows = await run.read('neuron_stats', ['layer', 'neuron'])
  const n = new Map()
  for (const r of rows) n.set(r.layer, Math.max(n.get(r.layer) ?? 0, r.neuron + 1))
  return new Map([...n.entries()].sort((a, b) => a[0] - b[0]))
}

function picker(byLayer, layer, neuron) {
  const sel = h('select', { id: 'neuron-layer' }, [...byLayer.keys()].map(l => h('option', { value: l, selected: l === layer }, `layer ${l}`)))
  const max = () => byLayer.get(Number(sel.value)) - 1
  const num = h('input', { id: 'neuron-index', type: 'number', min: 0, max: max(), value: neuron ?? 0, style: { width: '6em' } })
  sel.addEventListener('change', () => { num.max = max() })
  const go = e => {
    e.preventDefault()
    const j = Math.min(Math.max(0, Math.floor(Number(num.value) || 0)), max())
    location.hash = neuronLink(sel.value, j)
  }
  return h('form', { class: 'controls', id: 'neuron-pick', onsubmit: go },
    h('label', {}, 'layer ', sel), h('label', {}, 'neuron ', num), h('button', { type: 'submit', id: 'neuron-go' }, 'Show'),
    h('span', { class: 'note' }, `${byLayer.size} layers, ${[...new Set(byLayer.values())].join('/')} neurons each`))
}

function statsTable(s) {
  const rows = [
    ['count', s.count, s.count.toLocaleString()],
    ['mean', s.mean], ['std', s.std], ['min', s.min], ['max', s.max],
    ['fraction_active', s.fraction_active, `${(100 * s.fraction_active).toFixed(1)}% (> 0)`],
    ['mean_active', s.mean_active],
  ]
  return h('table', { class: 'grid', id: 'neuron-stats' }, rows.map(([k, v, shown]) =>
    h('tr', { 'data-stat': k, 'data-value': v == null ? '' : String(v) }, h('th', {}, k.replace('_', ' ')), h('td', { class: 'num' }, shown ?? fmt(v)))))
}

function contexts(top, max) {
  return h('table', { class: 'grid', id: 'neuron-top' },
    h('tr', {}, h('th', {}, 'rank'), h('th', {}, 'value'), h('th', {}, 'document'), h('th', { class: 'before' }, 'before'), h('th', {}, 'token'), h('th', {}, 'after')),
    top.map(r => {
      const a = Math.round(40 + 215 * Math.max(0, r.value) / (max > 0 ? max : 1)).toString(16).padStart(2, '0')
      return h('tr', { 'data-rank': r.rank, 'data-value': String(r.value), 'data-doc': r.doc_id, 'data-pos': r.position },
        h('td', { class: 'num' }, r.rank), h('td', { class: 'num' }, fmt(r.value)),
        h('td', {}, h('a', { href: `#/doc/${encodeURIComponent(r.doc_id)}` }, r.doc_id), h('span', { class: 'note' }, ` @${r.position}`)),
        // Three cells, so the highlighted tokens line up in one column.
        h('td', { class: 'ctx before' }, text(r.before)),
        h('td', { class: 'ctx' }, h('mark', { class: 'hit', style: { background: `#e8590c${a}` }, title: `value ${r.value}` }, show(r.token))),
        h('td', { class: 'ctx after' }, text(r.after)))
    }))
}

// The strongest neurons of a layer by their largest value: a starting point to browse.
async function strongest(run, layer) {
  const rows = (await run.read('neuron_stats', ['layer', 'neuron', 'max', 'fraction_active'], { layer }))
    .sort((a, b) => b.max - a.max || a.neuron - b.neuron).slice(0, 12)
  return h('div', { id: 'neuron-strongest' }, h('h2', {}, `Largest peaks in layer ${layer}`),
    h('p', {}, rows.map(r => [h('a', { href: neuronLink(layer, r.neuron), class: 'neuron-link', 'data-layer': layer, 'data-neuron': r.neuron }, `L${layer}.${r.neuron}`),
      h('span', { class: 'note' }, ` ${fmt(r.max)}  `)])))
}

export async function neuronPage(run, layer, neuron) {
  const root = h('div', { id: 'neurons' }, h('h1', {}, 'Neurons'))
  if (!run.has('neuron_stats') || !run.has('neuron_top_contexts')) {
    root.append(missing(run.has('neuron_stats') ? 'neuron_top_contexts' : 'neuron_stats',
      'run `tokenlens neurons RUN_DIR` on the run (or add analyses.neurons to its pipeline)'))
    return root
  }
  const byLayer = await layers(run)
  if (!byLayer.size) { root.append(h('p', { class: 'note' }, 'The neuron tables are empty.')); return root }
  if (layer == null || !byLayer.has(layer)) {
    root.append(picker(byLayer, [...byLayer.keys()][0], 0))
    if (layer != null) root.append(h('p', { class: 'missing' }, `No layer ${layer} in neuron_stats.`))
    root.append(await strongest(run, [...byLayer.keys()][0]))
    return root
  }
  root.append(picker(byLayer, layer, neuron))
  const [stats, top] = await Promise.all([
    run.read('neuron_stats', undefined, { layer, neuron }),
    run.read('neuron_top_contexts', ['rank', 'value', 'doc_id', 'position', 'token', 'before', 'after'], { layer, neuron }),
  ])
  const s = stats[0]
  if (!s) {
    root.append(h('p', { class: 'missing' }, `Layer ${layer} has ${byLayer.get(layer)} neurons (0..${byLayer.get(layer) - 1}); there is no neuron ${neuron}.`))
    return root
  }
  top.sort((a, b) => a.rank - b.rank)
  const n = byLayer.get(layer)
  root.append(
    h('h2', { id: 'neuron-title', 'data-layer': layer, 'data-neuron': neuron }, `Layer ${layer}, neuron ${neuron}`,
      h('span', { class: 'note' }, ' ',
        neuron > 0 ? h('a', { href: neuronLink(layer, neuron - 1), id: 'neuron-prev' }, '← previous') : null, ' ',
        neuron + 1 < n ? h('a', { href: neuronLink(layer, neuron + 1), id: 'neuron-next' }, 'next →') : null)),
    statsTable(s),
    h('h2', {}, `Top ${top.length} contexts over the run`),
    h('p', { class: 'note' }, 'The token where the neuron fires, highlighted (opacity: its value relative to the neuron\'s max), between the text before and after it in its document.'),
    contexts(top, s.max))
  return root
}
