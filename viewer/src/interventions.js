// Interventions during generation (tables `interventions`, `intervention_tokens`,
// `intervention_edits`): for one document, the prompt, then a row per run — the plain generation
// first, then each intervention — of its generated tokens, those from the first one that differs
// from the plain generation (diverges_at) on marked, the ones that differ at their position
// highlighted; hover a token for its probability (the plain's from the predictions table, when
// the run has it and it holds the token). Over the dataset: per intervention, how many documents
// it changed and where on average, and the changed documents (click one to open it).
import { h, chip, seg, pct, missing, groupBy, show } from './ui.js'

const state = { scope: 'document', selected: null }

// The interventions in the spec's order (the manifest's), then any other the tables name.
function order(run, names) {
  const spec = (run.manifest?.spec?.interventions || []).map(i => i.name)
  const known = spec.filter(n => names.includes(n))
  return [...known, ...[...new Set(names)].filter(n => !known.includes(n)).sort()]
}

// 1, 2, 3, 4, 8 -> "1–4, 8".
function ranges(ids) {
  const s = [...new Set(ids)].sort((a, b) => a - b)
  const out = []
  for (let i = 0; i < s.length;) {
    let j = i
    while (j + 1 < s.length && s[j + 1] === s[j] + 1) j++
    out.push(j - i >= 2 ? `${s[i]}–${s[j]}` : j > i ? `${s[i]}, ${s[j]}` : `${s[i]}`)
    i = j + 1
  }
  return out.join(', ')
}

const num = x => Number.isInteger(x) ? String(x) : Number(x.toPrecision(4)).toString()

// What an ablation sets: 0, a value, the dataset mean.
function target(r) {
  if (r.source === 'zero') return '0'
  if (r.source === 'mean') return 'mean'
  const vs = r.values || []
  if (vs.length && vs.every(v => v === vs[0])) return num(vs[0])
  return `values (|v| ${r.norm.toFixed(1)})`
}

// One intervention's edits in words: "neurons 1–8 of layer 20 → 0; heads 0, 3 of layer 5 → mean;
// steer layer 8, α 8, mean_diff, |v| 76.3".
export function describeEdits(edits) {
  if (!edits?.length) return ''
  const parts = []
  const groups = groupBy(edits, r => r.kind === 'steer' ? `steer/${r.layer}` : `${r.kind}/${r.layer}/${r.source}/${target(r)}`)
  for (const rs of groups.values()) {
    const r = rs[0]
    if (r.kind === 'steer') {
      for (const s of rs) parts.push(`steer layer ${s.layer}${s.alpha != null ? `, α ${num(s.alpha)}` : ''}, ${s.source}, |v| ${s.norm.toFixed(1)}`)
    } else {
      const ids = rs.map(x => x.index).filter(x => x != null)
      const noun = r.kind === 'head' ? 'head' : 'neuron'
      parts.push(`${noun}${ids.length === 1 ? '' : 's'} ${ranges(ids)} of layer ${r.layer} → ${target(r)}`)
    }
  }
  return parts.join('; ')
}

async function editsByName(run) {
  return run.has('intervention_edits') ? groupBy(await run.read('intervention_edits', ['intervention', 'kind', 'layer', 'index', 'source', 'alpha', 'values', 'norm']), 'intervention') : new Map()
}

export async function interventionsView(ctx, rerender) {
  const { run } = ctx
  if (!run.has('interventions')) return missing('interventions', 'the pipeline has no interventions.')
  const controls = h('div', { class: 'controls' },
    h('label', {}, 'scope'), seg([['document', 'this document'], ['dataset', 'all documents']], state.scope, v => { state.scope = v; rerender() }, 'scope'))
  const body = state.scope === 'document' ? await documentRows(ctx) : await datasetTable(ctx, rerender)
  return h('div', { id: 'interventions', 'data-scope': state.scope }, controls, body)
}

async function documentRows({ run, id, tokens, gen }) {
  const [runs, toks, edits, preds] = await Promise.all([
    run.doc('interventions', ['intervention', 'output_text', 'generated_tokens', 'stopped_at_eos', 'diverges_at'], id),
    run.has('intervention_tokens') ? run.doc('intervention_tokens', ['intervention', 'position', 'token_id', 'token', 'prob'], id) : [],
    editsByName(run),
    run.has('predictions') ? run.doc('predictions', ['position', 'token_id', 'prob'], id) : [],
  ])
  const prompt = tokens.filter(t => !t.is_generated)
  const plain = tokens.filter(t => t.is_generated)
  // The plain generation's probabilities: the prediction at the previous position, if its top-k
  // holds the token generated.
  const predProb = new Map(preds.map(p => [`${p.position}/${p.token_id}`, p.prob]))
  const plainProb = t => predProb.get(`${t.position - 1}/${t.token_id}`)
  const byName = new Map(runs.map(r => [r.intervention, r]))
  const tokByName = groupBy(toks, 'intervention')
  const legend = h('div', { class: 'legend' }, chip('same as plain', { class: 'gen' }), chip('after the divergence', { class: 'gen after' }), chip('differs from plain', { class: 'gen after diff' }))
  // The decoded text as is (newlines kept: white-space pre-wrap); empty: a note drawn by CSS.
  const text = (s, name) => h('div', { class: `iv-text ${s === '' ? 'empty' : ''}`, 'data-text': name }, s)
  const rows = [h('div', { class: 'iv-row plain', 'data-run': 'plain', 'data-diverges': '' },
    h('div', { class: 'iv-label' }, h('b', {}, 'plain'), h('div', { class: 'note' }, 'no intervention')),
    h('div', {},
      h('div', { class: 'tokens' }, plain.map((t, i) => {
        const p = plainProb(t)
        return chip(t.token, { class: 'gen', 'data-idx': i, 'data-pos': t.position, 'data-prob': p ?? '', title: `generated token ${i} (position ${t.position}), id ${t.token_id}${p != null ? `, p ${pct(p)}` : ', p not recorded (not in the predictions\' top-k)'}` })
      })),
      text(gen?.output_text ?? plain.map(t => t.token).join(''), 'plain')))]
  for (const name of order(run, [...byName.keys()])) {
    const r = byName.get(name)
    const mine = (tokByName.get(name) || []).sort((a, b) => a.position - b.position)
    const d = r.diverges_at
    rows.push(h('div', { class: 'iv-row', 'data-run': name, 'data-diverges': d ?? '' },
      h('div', { class: 'iv-label' }, h('b', {}, name), h('div', { class: 'note iv-edits' }, describeEdits(edits.get(name))),
        h('div', { class: 'note' }, d == null ? 'same tokens as plain' : `diverges at generated token ${d}`, r.stopped_at_eos ? ' (stopped at EOS)' : '')),
      h('div', {},
        h('div', { class: 'tokens' }, mine.map((t, i) => {
          const base = plain[i]
          const differs = !base || base.token_id !== t.token_id
          const after = d != null && i >= d
          const pp = base ? plainProb(base) : undefined
          return chip(t.token, {
            class: `gen ${after ? 'after' : ''} ${after && differs ? 'diff' : ''} ${i === d ? 'first' : ''}`, 'data-idx': i, 'data-pos': t.position, 'data-prob': t.prob,
            title: `generated token ${i} (position ${t.position}), id ${t.token_id}, p ${pct(t.prob)} under ${name}` +
              (base ? (differs ? `; plain: ${show(base.token)}${pp != null ? ` (p ${pct(pp)})` : ''}` : '; same as plain') : '; plain generation had ended'),
          })
        }), d != null && d >= mine.length ? h('span', { class: 'note', title: 'the plain generation goes on' }, ' ⟂ ended here') : null),
        text(r.output_text, name))))
  }
  return h('div', {},
    h('p', { class: 'note' }, 'Prompt:'),
    h('div', { class: 'tokens', id: 'iv-prompt' }, prompt.map(t => chip(t.token, { 'data-pos': t.position }))),
    h('p', { class: 'note' }, 'Each row regenerates the prompt: the plain generation, then each intervention. From the first token that differs from the plain generation on, tokens are marked; those that differ at their position are highlighted. Hover a token for its probability.'),
    legend,
    runs.length ? h('div', { id: 'iv-rows' }, rows) : h('p', { class: 'note' }, 'No intervention rows for this document.'))
}

async function datasetTable({ run, id }, rerender) {
  const [all, edits, gens] = await Promise.all([
    run.read('interventions', ['doc_id', 'intervention', 'output_text', 'diverges_at']),
    editsByName(run),
    run.has('generations') ? run.read('generations', ['doc_id', 'index', 'output_text']) : [],
  ])
  const byName = groupBy(all, 'intervention')
  const names = order(run, [...byName.keys()])
  if (!names.includes(state.selected)) state.selected = null
  const plainText = new Map(gens.map(g => [g.doc_id, g]))
  const open = doc => {
    state.scope = 'document'
    const hash = `#/doc/${encodeURIComponent(doc)}/interventions`
    if (doc === id && location.hash === hash) rerender()
    else location.hash = hash
  }
  const table = h('table', { class: 'grid docs', id: 'iv-table' },
    h('thead', {}, h('tr', {}, h('th', {}, 'intervention'), h('th', {}, 'documents changed'), h('th', {}, 'mean diverges_at'), h('th', {}, 'edits'))),
    h('tbody', {}, names.map(n => {
      const rs = byName.get(n)
      const changed = rs.filter(r => r.diverges_at != null)
      const mean = changed.length ? changed.reduce((a, r) => a + r.diverges_at, 0) / changed.length : null
      return h('tr', { 'data-run': n, 'data-changed': changed.length, 'data-docs': rs.length, class: n === state.selected ? 'sel' : '', onclick: () => { state.selected = n === state.selected ? null : n; rerender() } },
        h('td', {}, h('b', {}, n)),
        h('td', { class: 'num' }, `${changed.length} of ${rs.length}`),
        h('td', { class: 'num' }, mean == null ? '—' : mean.toFixed(2)),
        h('td', {}, describeEdits(edits.get(n))))
    })))
  const parts = [h('p', { class: 'note' }, `Over ${new Set(all.map(r => r.doc_id)).size} documents: how many each intervention changed (some generated token differs from the plain generation), and the mean index among the generated tokens of the first that differs. Click an intervention for its changed documents.`), table]
  if (state.selected) {
    const changed = byName.get(state.selected).filter(r => r.diverges_at != null)
      .sort((a, b) => (plainText.get(a.doc_id)?.index ?? 0) - (plainText.get(b.doc_id)?.index ?? 0))
    parts.push(h('h3', {}, `Documents ${state.selected} changed (${changed.length})`),
      changed.length
        ? h('table', { class: 'grid docs', id: 'iv-changed', 'data-run': state.selected },
            h('thead', {}, h('tr', {}, h('th', {}, 'doc_id'), h('th', {}, 'diverges_at'), h('th', {}, 'plain'), h('th', {}, state.selected))),
            h('tbody', {}, changed.map(r => h('tr', { 'data-doc': r.doc_id, onclick: () => open(r.doc_id) },
              h('td', {}, h('a', { href: `#/doc/${encodeURIComponent(r.doc_id)}/interventions`, onclick: ev => { ev.preventDefault(); open(r.doc_id) } }, r.doc_id)),
              h('td', { class: 'num' }, r.diverges_at),
              h('td', { class: 'iv-text' }, plainText.get(r.doc_id)?.output_text ?? ''),
              h('td', { class: 'iv-text' }, r.output_text)))))
        : h('p', { class: 'note' }, 'It changed no document.'))
  }
  return h('div', {}, parts)
}
