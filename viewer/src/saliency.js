// Input saliency: pick a generated token (the target); each earlier token's share of its
// attribution. 'minimal': token backgrounds rescaled to the target's largest share; 'detailed':
// a bar and a percentage per token. A paired run also explains contrasts (metric logit_diff,
// prob_diff, log_prob_ratio: the answer against the foil after the prompt), chosen by 'target'.
import { h, chip, seg, pct, missing, groupBy } from './ui.js'
import { salColor, salText, salGradient } from './colors.js'

const state = { method: null, mode: 'minimal', target: new Map(), metric: 'prob' }
const METHOD_LABEL = { gradient: 'gradient', grad_x_input: 'grad × input', integrated_gradients: 'integrated gradients' }
const METRIC_LABEL = { prob: 'generated tokens', logit_diff: 'logit difference', prob_diff: 'probability difference', log_prob_ratio: 'log-probability ratio' }
const METRIC_FORMULA = { logit_diff: 'logit(answer) − logit(foil)', prob_diff: 'p(answer) − p(foil)', log_prob_ratio: 'log p(answer) − log p(foil)' }

export async function saliencyView(ctx, rerender) {
  const { run, id, tokens } = ctx
  if (!run.has('saliency')) return missing('saliency', 'the pipeline did not enable analyses.saliency.')
  // Every column: runs made before contrasts existed have no `metric` (all `prob`).
  const all = (await run.doc('saliency', undefined, id)).map(r => ({ ...r, metric: r.metric ?? 'prob' }))
  if (!all.length) return h('p', { class: 'note' }, 'No saliency rows for this document (nothing was generated).')
  const metrics = Object.keys(METRIC_LABEL).filter(m => all.some(r => r.metric === m))
  if (!metrics.includes(state.metric)) state.metric = metrics[0]
  const contrast = state.metric !== 'prob'
  const pair = contrast && run.has('pairs') ? (await run.doc('pairs', undefined, id))[0] : null
  const rows = all.filter(r => r.metric === state.metric)
  const byMethod = groupBy(rows, 'method')
  const methods = ['gradient', 'grad_x_input', 'integrated_gradients'].filter(m => byMethod.has(m))
  for (const m of byMethod.keys()) if (!methods.includes(m)) methods.push(m)
  if (!byMethod.has(state.method)) state.method = methods.includes('integrated_gradients') ? 'integrated_gradients' : methods[0]
  const targets = [...new Set(byMethod.get(state.method).map(r => r.target_position))].sort((a, b) => a - b)
  let target = state.target.get(id)
  if (!targets.includes(target)) target = targets[0]
  const scores = new Map(byMethod.get(state.method).filter(r => r.target_position === target).map(r => [r.source_position, r.score]))
  const max = Math.max(1e-12, ...scores.values())
  const pick = p => { state.target.set(id, p); rerender() }
  const text = p => tokens.find(t => t.position === p)?.token ?? `#${p}`

  const controls = h('div', { class: 'controls' },
    metrics.length > 1 || contrast ? [h('label', {}, 'target'), seg(metrics.map(m => [m, METRIC_LABEL[m]]), state.metric, v => { state.metric = v; rerender() }, 'metric')] : [],
    h('label', {}, 'method'), seg(methods.map(m => [m, METHOD_LABEL[m] || m]), state.method, v => { state.method = v; rerender() }, 'method'),
    h('label', {}, 'display'), seg([['minimal', 'minimal'], ['detailed', 'detailed']], state.mode, v => { state.mode = v; rerender() }, 'mode'))

  const versus = pair ? `${show(pair.answer)} vs ${show(pair.foil)}` : 'answer vs foil'
  const line = h('div', { class: 'tokens', id: 'saliency-tokens', 'data-target': target, 'data-method': state.method, 'data-metric': state.metric },
    tokens.filter(t => contrast ? t.position < target : t.position <= Math.max(...targets)).map(t => {
      const p = t.position
      const clickable = targets.includes(p)
      const attrs = { 'data-pos': p, class: `${t.is_generated ? 'gen' : ''} ${clickable ? 'click' : ''}`, onclick: clickable ? () => pick(p) : null }
      if (p === target) return chip(t.token, { ...attrs, class: `${attrs.class} target`, title: 'the target: click another generated token' })
      if (p > target) return chip(t.token, { ...attrs, class: `${attrs.class} dim`, title: clickable ? 'click to explain this token' : null })
      const s = scores.get(p) ?? 0
      const tt = s / max
      return chip(t.token, { ...attrs, 'data-score': s, title: `${pct(s)} of the attribution${clickable ? ' (click to explain this token)' : ''}`, style: state.mode === 'minimal' ? { background: salColor(tt), color: salText(tt) } : {} })
    }),
    contrast ? chip(`→ ${versus}`, { class: 'target contrast', 'data-pos': target, title: `the contrast explained: ${METRIC_FORMULA[state.metric]} after the prompt` }) : [])

  const parts = [controls,
    contrast
      ? h('p', { class: 'note' }, 'Explained: ', h('b', {}, METRIC_FORMULA[state.metric]), ` after the prompt (${versus}); shares are each prompt token's part of the attribution (its sign is in the detailed view).`)
      : h('p', { class: 'note' }, 'Click a generated token (blue border) to explain it; the ', h('span', { class: 'tok target' }, 'outlined'), ' token is explained: ', h('b', {}, show(text(target))), ` at position ${target}.`),
    line]
  if (state.mode === 'minimal') {
    parts.push(h('div', { class: 'legend' }, h('span', {}, '0%'), h('span', { class: 'bar', style: { background: salGradient } }), h('span', {}, `${pct(max)} (the largest share for this target)`)))
  } else {
    const signed = new Map(byMethod.get(state.method).filter(r => r.target_position === target).map(r => [r.source_position, r.signed]))
    parts.push(h('div', { id: 'saliency-detail' }, [...scores.entries()].sort((a, b) => a[0] - b[0]).map(([p, s]) =>
      h('div', { class: 'detail-row', 'data-pos': p }, h('span', {}, chip(text(p))),
        h('div', { class: 'barbox' }, h('div', { class: 'barfill', style: { width: `${(100 * s / max).toFixed(1)}%` } })),
        h('span', { class: 'pct' }, pct(s)),
        signed.get(p) != null ? h('span', { class: 'pct', title: 'signed: the attribution summed over the embedding (positive pushes the target up)' }, signed.get(p).toExponential(2)) : []))),
    h('p', { class: 'note' }, 'Bars are scaled to the largest share; percentages are shares of the total attribution (they sum to 100%); the last column, where shown, is the signed attribution.'))
  }
  if (state.method === 'integrated_gradients' && run.has('saliency_completeness')) {
    // Runs made before contrasts existed name the values target_prob / baseline_prob.
    const c = (await run.doc('saliency_completeness', undefined, id)).find(r => r.target_position === target && (r.metric ?? 'prob') === state.metric)
    if (c) {
      const value = c.value ?? c.target_prob, base = c.baseline_value ?? c.baseline_prob
      const what = contrast ? METRIC_FORMULA[state.metric] : 'Target probability'
      parts.push(h('p', { class: 'note', id: 'completeness' }, `${what}: ${value.toFixed(4)} at the input, ${base.toFixed(4)} at the baseline (${c.baseline ?? 'zero'}); attributions sum to ${c.attribution_sum.toFixed(4)} (completeness error ${c.error.toExponential(1)}${c.steps != null ? `, ${c.steps} steps` : ''}).`))
    }
  }
  return h('div', { id: 'saliency' }, parts)
}

function show(t) { return String(t).replace(/\n/g, '↵') }
