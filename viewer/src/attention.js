// Attention: the head view (one layer and head, lines from each query token to the key tokens it
// attends to, opacity = weight; hover a query to isolate it), the model view (layer x head
// thumbnails; click one to show it) and attention rollout (same drawing, per block).
import { h, svg, show, seg, missing, groupBy } from './ui.js'

const state = { layer: null, head: 'mean', query: null, rollLayer: null }

function headView(tokens, weightsByQuery, n) {
  const rowH = 18, width = 420, x0 = 150, x1 = width - 150
  const lines = svg('g')
  const leftLabels = [], rightLabels = []
  const draw = sel => {
    lines.replaceChildren()
    for (const [q, w] of weightsByQuery) {
      if (sel != null && q !== sel) continue
      for (let k = 0; k < w.length; k++) {
        if (w[k] < 0.01) continue
        lines.append(svg('line', { x1: x0, y1: q * rowH + 12, x2: x1, y2: k * rowH + 12, stroke: '#3b5bdb', 'stroke-width': sel == null ? 1.5 : 3, 'stroke-opacity': Math.min(1, w[k] * (sel == null ? 0.9 : 1)) }))
      }
    }
    leftLabels.forEach((t, i) => t.classList.toggle('sel', i === sel))
  }
  for (let i = 0; i < n; i++) {
    leftLabels.push(svg('text', { x: x0 - 6, y: i * rowH + 16, 'text-anchor': 'end', 'data-pos': i, onmouseenter: () => draw(i), onmouseleave: () => draw(null) }, show(tokens[i]?.token ?? '')))
    rightLabels.push(svg('text', { x: x1 + 6, y: i * rowH + 16 }, show(tokens[i]?.token ?? '')))
  }
  draw(null)
  return svg('svg', { class: 'attn', width, height: n * rowH + 8 }, lines, leftLabels, rightLabels)
}

function legend(what) {
  return h('div', { class: 'legend' }, h('span', {}, '0'),
    h('span', { class: 'bar', style: { background: 'linear-gradient(to right, rgba(59,91,219,0), rgba(59,91,219,1))' } }),
    h('span', {}, `1 (${what}; lines under 1% are not drawn)`))
}

function mean(rows, n) {
  const byQ = new Map()
  for (const r of rows) {
    const acc = byQ.get(r.query_position) || { w: new Float64Array(r.weights.length), c: 0 }
    for (let k = 0; k < r.weights.length; k++) acc.w[k] += r.weights[k]
    acc.c++
    byQ.set(r.query_position, acc)
  }
  return new Map([...byQ].filter(([q]) => q < n).map(([q, a]) => [q, Array.from(a.w, x => x / a.c)]))
}

function thumb(rows, n, selected, onclick) {
  const size = 64
  const c = h('canvas', { width: size, height: size, class: selected ? 'sel' : '', onclick })
  const g = c.getContext('2d')
  g.fillStyle = '#fff'; g.fillRect(0, 0, size, size)
  for (const r of rows) for (let k = 0; k < r.weights.length; k++) {
    const w = r.weights[k]
    if (w < 0.02) continue
    g.strokeStyle = `rgba(59,91,219,${Math.min(1, w)})`
    g.beginPath(); g.moveTo(12, 4 + (r.query_position + 0.5) * (size - 8) / n); g.lineTo(size - 12, 4 + (k + 0.5) * (size - 8) / n); g.stroke()
  }
  return c
}

export async function attentionView(ctx, rerender) {
  const { run, id, tokens } = ctx
  const n = tokens.length
  const out = h('div', { id: 'attention' })
  if (!run.has('attention')) out.append(missing('attention', 'the pipeline did not enable analyses.attention.'))
  else {
    const rows = await run.doc('attention', ['layer', 'head', 'query_position', 'weights'], id)
    const layers = [...new Set(rows.map(r => r.layer))].sort((a, b) => a - b)
    const heads = [...new Set(rows.map(r => r.head))].sort((a, b) => a - b)
    if (!layers.includes(state.layer)) state.layer = layers[0]
    if (state.head !== 'mean' && !heads.includes(state.head)) state.head = 'mean'
    const byLH = groupBy(rows, r => `${r.layer}/${r.head}`)
    const sel = state.head === 'mean' ? rows.filter(r => r.layer === state.layer) : byLH.get(`${state.layer}/${state.head}`) || []
    out.append(
      h('h2', {}, 'Head view'),
      h('div', { class: 'controls' },
        h('label', {}, 'layer'), h('select', { id: 'attn-layer', onchange: e => { state.layer = Number(e.target.value); rerender() } }, layers.map(l => h('option', { value: l, selected: l === state.layer }, l))),
        h('label', {}, 'head'), h('select', { id: 'attn-head', onchange: e => { state.head = e.target.value === 'mean' ? 'mean' : Number(e.target.value); rerender() } },
          h('option', { value: 'mean', selected: state.head === 'mean' }, 'mean of heads'), heads.map(hd => h('option', { value: hd, selected: hd === state.head }, hd)))),
      h('p', { class: 'note' }, 'Left: attending (query) tokens; right: attended (key) tokens; line opacity = attention weight. Hover a left token to isolate it.'),
      legend('attention weight = line opacity'),
      headView(tokens, mean(sel, n), n),
      h('h2', {}, 'Model view'),
      h('p', { class: 'note' }, 'Every recorded layer (rows) and head (columns); click one to show it above.'),
      h('div', { class: 'thumbs', style: { gridTemplateColumns: `3em repeat(${heads.length}, 66px)` } },
        h('span'), heads.map(hd => h('span', { class: 'lab' }, `head ${hd}`)),
        layers.map(l => [h('span', { class: 'lab' }, `layer ${l}`), heads.map(hd => thumb(byLH.get(`${l}/${hd}`) || [], n, l === state.layer && hd === state.head, () => { state.layer = l; state.head = hd; rerender() }))])))
  }
  out.append(h('h2', {}, 'Attention rollout'))
  if (!run.has('attention_rollout')) out.append(missing('attention_rollout', 'enable analyses.attention.rollout.'))
  else {
    const rows = await run.doc('attention_rollout', ['layer', 'query_position', 'weights'], id)
    const layers = [...new Set(rows.map(r => r.layer))].sort((a, b) => a - b)
    if (!layers.includes(state.rollLayer)) state.rollLayer = layers[layers.length - 1]
    out.append(
      h('div', { class: 'controls' }, h('label', {}, 'through block'), seg(layers.map(l => [l, String(l)]), state.rollLayer, v => { state.rollLayer = v; rerender() }, 'rollout-layer')),
      h('p', { class: 'note' }, 'Head-averaged attention with the residual connection, multiplied through blocks 0..layer (Abnar & Zuidema 2020).'),
      legend('rolled-out attention = line opacity'),
      headView(tokens, new Map(rows.filter(r => r.layer === state.rollLayer).map(r => [r.query_position, Array.from(r.weights)])), n))
  }
  return out
}
