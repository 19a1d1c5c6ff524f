// Activation patching (table `patching`): for one document, a heatmap per component of the
// normalized effect (0 = the corrupted run's metric, 1 = the clean run's): block input and MLP
// output by layer x position, heads by layer x head (and, per position, layer·head x position);
// and the same over every document of the run (heads: layer x head; positions counted from the
// end of the prompt, so prompts of different lengths line up at the answer), normalized by the
// dataset's means: (mean patched − mean corrupted) / (mean clean − mean corrupted), which a few
// documents whose clean and corrupted values nearly agree cannot blow up.
import { h, chip, seg, missing, groupBy, showTip, hideTip } from './ui.js'
import { effectColor, effectText, effectGradient } from './colors.js'

const state = { direction: null, method: null, scope: 'document' }
const LABEL = { resid_pre: 'block input (resid_pre)', mlp_out: 'MLP output (mlp_out)', attn_head: 'head output, every position (attn_head)', attn_head_pos: 'head output at a position (attn_head_pos)' }
const ORDER = ['resid_pre', 'attn_head', 'attn_head_pos', 'mlp_out']

function legend() {
  return h('div', { class: 'legend' }, h('span', {}, '−1'), h('span', { class: 'bar', style: { background: effectGradient } }), h('span', {}, '+1: effect = (patched − corrupted) / (clean − corrupted); 0 = corrupted, 1 = clean'))
}

// A heatmap: rows (label, key) from the top, columns (label node, key), cell(rowKey, colKey) -> {effect, value} or null.
function heat(id, corner, rows, cols, cell, describe) {
  return h('div', { style: { overflowX: 'auto' } }, h('table', { class: 'heat', id },
    h('tr', {}, h('th', {}, corner), cols.map(([label]) => h('th', { class: 'col' }, label))),
    rows.map(([rl, rk]) => h('tr', {}, h('th', {}, rl), cols.map(([, ck]) => {
      const c = cell(rk, ck)
      if (!c) return h('td', { class: 'cell' })
      const e = c.effect
      return h('td', {
        class: 'cell', 'data-row': rk, 'data-col': ck, 'data-effect': e ?? '',
        style: e == null ? {} : { background: effectColor(e), color: effectText(e) },
        onmousemove: ev => showTip(ev, describe(rk, ck, c)), onmouseleave: hideTip,
      }, e == null ? '·' : e.toFixed(2))
    })))))
}

export async function patchingView(ctx, rerender) {
  const { run, id, tokens } = ctx
  if (!run.has('patching')) return missing('patching', 'the pipeline did not enable analyses.patching (a paired dataset).')
  const kinds = await run.read('patching', ['direction', 'method'])
  const directions = [...new Set(kinds.map(r => r.direction))].sort()
  if (!directions.includes(state.direction)) state.direction = directions[0]
  const methods = [...new Set(kinds.map(r => r.method ?? 'exact'))].sort((a, b) => (a === 'exact' ? -1 : 1) - (b === 'exact' ? -1 : 1))
  if (!methods.includes(state.method)) state.method = methods[0]
  const controls = h('div', { class: 'controls' },
    h('label', {}, 'method'), seg(methods.map(m => [m, m === 'exact' ? 'exact (a run per patch)' : 'attribution (first-order estimate)']), state.method, v => { state.method = v; rerender() }, 'method'),
    h('label', {}, 'direction'), seg(directions.map(d => [d, d === 'denoise' ? 'denoise (clean → corrupted run)' : 'noise (corrupted → clean run)']), state.direction, v => { state.direction = v; rerender() }, 'direction'),
    h('label', {}, 'scope'), seg([['document', 'this document'], ['dataset', 'dataset average']], state.scope, v => { state.scope = v; rerender() }, 'scope'))
  const body = state.scope === 'document' ? await documentMaps(ctx) : await datasetMaps(run)
  return h('div', { id: 'patching', 'data-direction': state.direction, 'data-method': state.method, 'data-scope': state.scope }, controls, legend(), body)
}

async function documentMaps({ run, id, tokens }) {
  const rows = (await run.doc('patching', undefined, id)).filter(r => r.direction === state.direction && (r.method ?? 'exact') === state.method)
  if (!rows.length) return h('p', { class: 'note' }, 'No patching rows for this document.')
  const r0 = rows[0]
  const tok = p => tokens.find(t => t.position === p)?.token ?? `#${p}`
  const parts = [h('p', { class: 'note', id: 'patching-values' }, `${r0.metric}: ${r0.clean_value.toFixed(3)} on the clean prompt, ${r0.corrupted_value.toFixed(3)} on the corrupted one. Each cell: the ${state.direction === 'denoise' ? 'corrupted run with that clean activation patched in' : 'clean run with that corrupted activation patched in'}; hover for the metric.`)]
  const byComp = groupBy(rows, 'component')
  const describe = comp => (rk, ck, c) => h('div', {}, `${comp} layer ${String(rk).split('.')[0]}${c.head != null ? `, head ${c.head}` : ''}${c.position != null ? `, position ${c.position} (` : ''}`, c.position != null ? chip(tok(c.position)) : '', c.position != null ? ')' : '',
    h('div', {}, `metric ${c.value.toFixed(4)}, effect ${c.effect == null ? 'n/a' : c.effect.toFixed(3)}`))
  for (const comp of ORDER.filter(c => byComp.has(c))) {
    const rs = byComp.get(comp)
    const layers = [...new Set(rs.map(r => r.layer))].sort((a, b) => b - a)
    parts.push(h('h3', {}, LABEL[comp]))
    if (comp === 'attn_head') {
      const heads = [...new Set(rs.map(r => r.head))].sort((a, b) => a - b)
      const at = new Map(rs.map(r => [`${r.layer}/${r.head}`, r]))
      parts.push(heat(`patch-${comp}`, 'layer \\ head', layers.map(l => [l, l]), heads.map(hh => [hh, hh]), (l, hh) => at.get(`${l}/${hh}`), describe(comp)))
    } else {
      const positions = [...new Set(rs.map(r => r.position))].sort((a, b) => a - b)
      const cols = positions.map(p => [chip(tok(p)), p])
      if (comp === 'attn_head_pos') {
        const heads = [...new Set(rs.map(r => r.head))].sort((a, b) => a - b)
        const at = new Map(rs.map(r => [`${r.layer}.${r.head}/${r.position}`, r]))
        const rowsLH = layers.flatMap(l => heads.map(hh => [`${l}.${hh}`, `${l}.${hh}`]))
        parts.push(heat(`patch-${comp}`, 'layer.head \\ position', rowsLH, cols, (k, p) => at.get(`${k}/${p}`), describe(comp)))
      } else {
        const at = new Map(rs.map(r => [`${r.layer}/${r.position}`, r]))
        parts.push(heat(`patch-${comp}`, 'layer \\ position', layers.map(l => [l, l]), cols, (l, p) => at.get(`${l}/${p}`), describe(comp)))
      }
    }
  }
  return h('div', {}, parts)
}

// The effect over every document, from the means of the metric: heads by (layer, head);
// positional components by (layer, position counted from the end of the prompt: -1 = its last
// token).
async function datasetMaps(run) {
  const all = (await run.read('patching', ['doc_id', 'method', 'component', 'direction', 'layer', 'head', 'position', 'value', 'clean_value', 'corrupted_value'])).filter(r => r.direction === state.direction && r.method === state.method)
  if (!all.length) return h('p', { class: 'note' }, 'No patching rows.')
  const len = new Map()
  for (const r of all) if (r.position != null) len.set(r.doc_id, Math.max(len.get(r.doc_id) ?? 0, r.position + 1))
  const docs = new Set(all.map(r => r.doc_id)).size
  const parts = [h('p', { class: 'note', id: 'patching-docs' }, `Over ${docs} documents: (mean patched − mean corrupted) / (mean clean − mean corrupted) of the metric; positions are counted from the end of each prompt (−1 = its last token). Hover for the number of documents behind a cell.`)]
  for (const comp of ORDER) {
    const rs = all.filter(r => r.component === comp)
    if (!rs.length) continue
    const key = r => comp === 'attn_head' ? `${r.layer}/${r.head}` : comp === 'attn_head_pos' ? `${r.layer}.${r.head}/${r.position - len.get(r.doc_id)}` : `${r.layer}/${r.position - len.get(r.doc_id)}`
    const acc = new Map()
    for (const r of rs) {
      const k = key(r)
      const a = acc.get(k) ?? { v: 0, c: 0, x: 0, n: 0 }
      a.v += r.value; a.c += r.clean_value; a.x += r.corrupted_value; a.n++
      acc.set(k, a)
    }
    const cell = (rk, ck) => {
      const a = acc.get(`${rk}/${ck}`)
      if (!a) return null
      const span = (a.c - a.x) / a.n
      return { effect: Math.abs(span) > 1e-6 ? (a.v - a.x) / a.n / span : null, value: a.v / a.n, n: a.n }
    }
    const describe = (rk, ck, c) => h('div', {}, `${comp} ${rk} / ${ck}: effect ${c.effect == null ? 'n/a' : c.effect.toFixed(3)} (mean metric ${c.value.toFixed(3)}) over ${c.n} documents`)
    const layers = [...new Set(rs.map(r => r.layer))].sort((a, b) => b - a)
    parts.push(h('h3', {}, LABEL[comp]))
    if (comp === 'attn_head') {
      const heads = [...new Set(rs.map(r => r.head))].sort((a, b) => a - b)
      parts.push(heat(`patch-avg-${comp}`, 'layer \\ head', layers.map(l => [l, l]), heads.map(hh => [hh, hh]), cell, describe))
    } else {
      const rel = [...new Set(rs.map(r => r.position - len.get(r.doc_id)))].sort((a, b) => a - b)
      const cols = rel.map(p => [String(p), p])
      const rowKeys = comp === 'attn_head_pos'
        ? layers.flatMap(l => [...new Set(rs.map(r => r.head))].sort((a, b) => a - b).map(hh => [`${l}.${hh}`, `${l}.${hh}`]))
        : layers.map(l => [l, l])
      parts.push(heat(`patch-avg-${comp}`, comp === 'attn_head_pos' ? 'layer.head \\ position' : 'layer \\ position', rowKeys, cols, cell, describe))
    }
  }
  return h('div', {}, parts)
}
