// NMF factors: a sparkline per factor over the document's positions, tokens colored by their
// strongest factor, each factor's largest weights (its neurons, linked to their neuron pages) and
// its top contexts over the corpus.
import { h, chip, missing, groupBy, svg } from './ui.js'
import { CATEGORICAL } from './colors.js'
import { neuronLink } from './neurons.js'

// Neurons shown per factor.
const WEIGHTS = 10

export async function nmfView(ctx) {
  const { run, id, tokens } = ctx
  if (!run.has('nmf_factors')) return missing('nmf_factors', 'NMF was not run, or has not finished (it factorizes the whole corpus after every shard is done).')
  const rows = await run.doc('nmf_factors', ['position', 'factor', 'value'], id)
  if (!rows.length) return h('p', { class: 'note' }, 'No NMF factor values for this document.')
  const byF = groupBy(rows, 'factor')
  const factors = [...byF.keys()].sort((a, b) => a - b)
  const color = f => CATEGORICAL[f % CATEGORICAL.length]
  const best = new Map()
  for (const r of rows) { const b = best.get(r.position); if (!b || r.value > b.value) best.set(r.position, r) }
  const maxAll = Math.max(1e-12, ...rows.map(r => r.value))
  const n = tokens.length, W = 600, H = 28
  const out = h('div', { id: 'nmf' },
    h('p', { class: 'note' }, 'Each token colored by its strongest factor (opacity: its value relative to the document\'s largest).'),
    h('div', { class: 'tokens' }, tokens.map(t => {
      const b = best.get(t.position)
      if (!b) return chip(t.token, { class: 'dim' })
      const a = Math.round(40 + 215 * b.value / maxAll).toString(16).padStart(2, '0')
      return chip(t.token, { title: `factor ${b.factor}: ${b.value.toPrecision(3)}`, style: { background: `${color(b.factor)}${a}` } })
    })),
    h('div', { class: 'legend' }, factors.map(f => h('span', {}, h('span', { class: 'tok', style: { background: color(f), color: '#fff' } }, `factor ${f}`)))),
    h('h2', {}, 'Factors over the document'),
    factors.map(f => {
      const vals = byF.get(f).sort((a, b) => a.position - b.position)
      const mx = Math.max(1e-12, ...vals.map(v => v.value))
      const pts = vals.map(v => `${(v.position + 0.5) * W / n},${H - 2 - (H - 4) * v.value / mx}`).join(' ')
      return h('div', { class: 'spark' }, h('span', {}, `factor ${f}`), svg('svg', { width: W, height: H }, svg('polyline', { points: pts, fill: 'none', stroke: color(f), 'stroke-width': 2 })))
    }))
  out.append(h('h2', {}, 'Factor weights'))
  if (!run.has('nmf_components')) out.append(missing('nmf_components'))
  else {
    const byFactor = groupBy(await run.read('nmf_components', ['factor', 'layer', 'neuron', 'sign', 'weight']), 'factor')
    out.append(h('p', { class: 'note' }, `Each factor's ${WEIGHTS} largest weights: the neurons it is made of (−: a neuron's negative part), each linked to its neuron page.`),
      h('div', { class: 'factor-weights', id: 'nmf-weights' }, [...byFactor.keys()].sort((a, b) => a - b).map(f => [
        h('span', { style: { color: color(f) } }, `factor ${f}`),
        h('span', { 'data-factor': f }, byFactor.get(f).sort((a, b) => b.weight - a.weight).slice(0, WEIGHTS).map(w =>
          h('a', { href: neuronLink(w.layer, w.neuron), class: 'neuron-link', 'data-layer': w.layer, 'data-neuron': w.neuron, 'data-weight': String(w.weight), title: `weight ${w.weight}` },
            `L${w.layer}.${w.neuron}${w.sign < 0 ? '−' : ''}`))),
      ])))
  }
  out.append(h('h2', {}, 'Top contexts over the corpus'))
  if (!run.has('nmf_top_contexts')) out.append(missing('nmf_top_contexts'))
  else {
    const top = groupBy(await run.read('nmf_top_contexts', ['factor', 'rank', 'doc_id', 'position', 'value', 'context']), 'factor')
    for (const f of [...top.keys()].sort((a, b) => a - b)) {
      out.append(h('h3', { style: { color: color(f) } }, `factor ${f}`), h('table', { class: 'grid' },
        top.get(f).sort((a, b) => a.rank - b.rank).slice(0, 5).map(r => h('tr', {}, h('td', { class: 'num' }, r.rank), h('td', {}, h('a', { href: `#/doc/${encodeURIComponent(r.doc_id)}/nmf` }, r.doc_id)), h('td', { class: 'ctx' }, r.context), h('td', { class: 'num' }, r.value.toPrecision(3))))))
    }
  }
  return out
}
