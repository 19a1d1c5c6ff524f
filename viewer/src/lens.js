// Predictions (top-k at each position), the logit lens heatmap (layer x position, rank of the
// actual next token, log color scale, hover: the lens' top-k) and watched tokens.
import { h, chip, pct, missing, groupBy, showTip, hideTip } from './ui.js'
import { rankColor, rankText, rankGradient } from './colors.js'

export async function predictionsView(ctx) {
  const { run, id, tokens } = ctx
  if (!run.has('predictions')) return missing('predictions', 'the pipeline did not enable analyses.predictions.')
  const rows = await run.doc('predictions', ['position', 'rank', 'token_id', 'token', 'prob'], id)
  const byPos = groupBy(rows, 'position')
  const next = new Map(tokens.map(t => [t.position - 1, t]))
  return h('div', { id: 'predictions' },
    h('p', { class: 'note' }, 'At each position, the model\'s top candidates for the next token; the token that actually came next is outlined in orange.'),
    h('div', { class: 'preds' }, [...byPos.keys()].sort((a, b) => a - b).map(p => {
      const cands = byPos.get(p).sort((a, b) => a.rank - b.rank)
      const at = tokens.find(t => t.position === p)
      const actual = next.get(p)
      return h('div', { class: 'pred', 'data-pos': p },
        h('div', { class: 'head' }, `${p}: after `, chip(at?.token ?? '?', { class: at?.is_generated ? 'gen' : '' })),
        cands.map(c => h('div', { class: `cand ${actual && actual.token_id === c.token_id ? 'actual' : ''}`, 'data-rank': c.rank, 'data-token-id': c.token_id },
          chip(c.token), h('span', { class: 'p' }, pct(c.prob)), h('span', { class: 'pbar', style: { width: `${(100 * c.prob).toFixed(1)}%` } }))))
    })))
}

function rankLegend(vocab) {
  const ticks = [1, 10, 100, 1000, 10000].filter(t => t < vocab)
  return h('div', { class: 'legend' }, h('span', {}, 'rank 1'), h('span', { class: 'bar', style: { background: rankGradient } }), h('span', {}, `${vocab.toLocaleString()} (log scale; ticks ${ticks.join(', ')})`))
}

export async function lensView(ctx) {
  const { run, id, tokens, vocab } = ctx
  if (!run.has('lens')) return missing('lens', 'the pipeline did not enable analyses.lens.')
  const rows = await run.doc('lens', ['position', 'layer', 'rank', 'prob'], id)
  if (!rows.length) return h('p', { class: 'note' }, 'No logit lens rows for this document.')
  const layers = [...new Set(rows.map(r => r.layer))].sort((a, b) => a - b)
  const positions = [...new Set(rows.map(r => r.position))].sort((a, b) => a - b)
  const cell = new Map(rows.map(r => [`${r.layer}/${r.position}`, r]))
  const tok = p => tokens.find(t => t.position === p)
  let topk = null
  const loadTopk = () => (topk ??= run.has('lens_topk') ? run.doc('lens_topk', ['position', 'layer', 'rank', 'token', 'prob'], id).then(rs => groupBy(rs, r => `${r.layer}/${r.position}`)) : Promise.resolve(null))
  const hover = async (ev, layer, p) => {
    const r = cell.get(`${layer}/${p}`)
    const tk = await loadTopk()
    const list = tk?.get(`${layer}/${p}`)?.sort((a, b) => a.rank - b.rank)
    showTip(ev, h('div', {},
      h('div', {}, `layer ${layer}${layer === 0 ? ' (embeddings)' : ''}, position ${p}: next token `, chip(tok(p + 1)?.token ?? '?'), ` rank ${r.rank}, p = ${r.prob.toPrecision(3)}`),
      list ? h('div', {}, h('div', { class: 'note' }, 'lens top-k here:'), list.map(c => h('div', {}, `${c.rank}. `, chip(c.token), ` ${pct(c.prob)}`))) : h('div', { class: 'note' }, run.has('lens_topk') ? '' : 'no lens_topk table')))
  }
  const nLayers = layers[layers.length - 1]
  return h('div', { id: 'lens' },
    h('p', { class: 'note' }, 'Rank of the token that actually comes next (bottom row) when the residual stream after each layer is unembedded; 0 = the embeddings. Hover a cell for the lens\' top candidates.'),
    rankLegend(vocab),
    h('div', { style: { overflowX: 'auto' } }, h('table', { class: 'heat', id: 'lens-heat' },
      h('tr', {}, h('th', {}, 'layer \\ input'), positions.map(p => h('th', { class: 'col' }, chip(tok(p)?.token ?? '?', { class: tok(p)?.is_generated ? 'gen' : '' })))),
      [...layers].reverse().map(l => h('tr', {}, h('th', {}, l === 0 ? '0 (emb)' : l === nLayers ? `${l} (out)` : l),
        positions.map(p => {
          const r = cell.get(`${l}/${p}`)
          if (!r) return h('td', { class: 'cell' })
          return h('td', { class: 'cell', 'data-layer': l, 'data-pos': p, style: { background: rankColor(r.rank, vocab), color: rankText(r.rank, vocab) }, onmousemove: ev => hover(ev, l, p), onmouseleave: hideTip }, r.rank > 999 ? `${Math.round(r.rank / 1000)}k` : r.rank)
        }))),
      h('tr', {}, h('th', {}, 'next token'), positions.map(p => h('th', { class: 'col' }, chip(tok(p + 1)?.token ?? '?', { class: tok(p + 1)?.is_generated ? 'gen' : '' })))))))
}

const watchState = new Map()

export async function watchView(ctx, rerender) {
  const { run, id, tokens, vocab, gen } = ctx
  if (!run.has('watch')) return missing('watch', 'the pipeline did not enable analyses.watch.')
  const rows = await run.doc('watch', ['position', 'layer', 'token', 'rank', 'prob'], id)
  if (!rows.length) return h('p', { class: 'note' }, 'No watch rows for this document.')
  const positions = [...new Set(rows.map(r => r.position))].sort((a, b) => a - b)
  let pos = watchState.get(id)
  if (!positions.includes(pos)) pos = positions.includes((gen?.prompt_tokens ?? 1) - 1) ? gen.prompt_tokens - 1 : positions[positions.length - 1]
  const here = rows.filter(r => r.position === pos)
  const layers = [...new Set(here.map(r => r.layer))].sort((a, b) => b - a)
  const watched = [...new Set(rows.map(r => r.token))]
  const cell = new Map(here.map(r => [`${r.layer}/${r.token}`, r]))
  return h('div', { id: 'watch' },
    h('p', { class: 'note' }, 'Pick a position: the rank of each watched token, at every layer, as the prediction after that token.'),
    h('div', { class: 'tokens' }, tokens.filter(t => positions.includes(t.position)).map(t =>
      chip(t.token, { class: `click ${t.is_generated ? 'gen' : ''} ${t.position === pos ? 'target' : ''}`, 'data-pos': t.position, onclick: () => { watchState.set(id, t.position); rerender() } }))),
    rankLegend(vocab),
    h('table', { class: 'heat', id: 'watch-heat' },
      h('tr', {}, h('th', {}, 'layer'), watched.map(w => h('th', {}, chip(w)))),
      layers.map(l => h('tr', {}, h('th', {}, l), watched.map(w => {
        const r = cell.get(`${l}/${w}`)
        return r ? h('td', { class: 'cell', title: `p = ${r.prob.toPrecision(3)}`, style: { background: rankColor(r.rank, vocab), color: rankText(r.rank, vocab) } }, r.rank) : h('td', { class: 'cell' })
      })))))
}
