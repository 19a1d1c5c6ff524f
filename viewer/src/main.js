// The tokenlens viewer: a run overview and, per document, its tokens, saliency, predictions,
// logit lens, watched tokens, attention, NMF factors, patching and interventions; and neuron
// pages; the run's own layer similarity. Routes: #/ (with ?q=, page=, per=), #/doc/<id>/<tab>,
// #/neurons, #/neuron/<layer>/<index> and #/similarity (?metric=, source=, pair=).
import { Run } from './data.js'
import { h, chip, missing, showTip, hideTip } from './ui.js'
import { overview, overviewLink } from './overview.js'
import { saliencyView } from './saliency.js'
import { predictionsView, lensView, watchView } from './lens.js'
import { attentionView } from './attention.js'
import { nmfView } from './nmf.js'
import { patchingView } from './patching.js'
import { interventionsView } from './interventions.js'
import { comparisonPage, similarity } from './compare.js'
import { neuronPage } from './neurons.js'

const TABS = [
  ['saliency', 'Saliency', ['saliency']],
  ['predictions', 'Predictions', ['predictions']],
  ['lens', 'Logit lens', ['lens']],
  ['watch', 'Watched tokens', ['watch']],
  ['attention', 'Attention', ['attention', 'attention_rollout']],
  ['nmf', 'NMF factors', ['nmf_factors', 'nmf_top_contexts']],
  ['patching', 'Patching', ['patching']],
  // Shown only when the run has the table (a fourth element: hide rather than grey out).
  ['interventions', 'Interventions', ['interventions'], 'hide'],
]
const VIEWS = { saliency: saliencyView, predictions: predictionsView, lens: lensView, watch: watchView, attention: attentionView, nmf: nmfView, patching: patchingView, interventions: interventionsView }

let run
const app = () => document.getElementById('app')

// What a tab's view reads whole for one document (run.doc(table, undefined, id)): fetched
// together with the page's tokens, so the view finds them in the cache (cold start).
const PREFETCH = { saliency: ['saliency', 'saliency_completeness'] }

async function documentPage(id, tab) {
  // Everything this page needs, fetched in parallel.
  for (const t of PREFETCH[tab] || []) if (run.has(t)) run.doc(t, undefined, id).catch(() => {})
  const [gens, toks] = await Promise.all([
    run.has('generations') ? run.doc('generations', undefined, id) : [],
    run.has('tokens') ? run.doc('tokens', ['position', 'token_id', 'token', 'is_generated'], id) : [],
  ])
  const tokens = toks.sort((a, b) => a.position - b.position)
  const g = gens[0]
  const ctx = { run, id, tokens, gen: g, vocab: run.manifest?.model?.config?.vocab_size || 50000 }
  const body = h('section', { id: 'tab-body' })
  const page = h('div', { id: 'document', 'data-doc': id },
    h('p', {}, h('a', { href: overviewLink(), id: 'back' }, '← all documents')),
    h('h1', {}, 'Document ', h('code', {}, id)),
    g ? h('p', { class: 'note' }, `prompt #${g.index}: ${g.prompt_tokens} prompt tokens, ${g.generated_tokens} generated`,
      g.stopped_at_eos ? ' (stopped at EOS)' : '', g.truncated_tokens ? `, ${g.truncated_tokens} truncated` : '') : null,
    tokens.length
      ? h('div', { class: 'tokens', id: 'doc-tokens' },
          tokens.map(t => chip(t.token, { class: t.is_generated ? 'gen' : '', 'data-pos': t.position, title: `position ${t.position}, id ${t.token_id}${t.is_generated ? ', generated' : ''}` })))
      : missing('tokens'),
    h('div', { class: 'legend' }, chip('prompt'), chip('generated', { class: 'gen' })),
    h('nav', { class: 'tabs' }, TABS.filter(([, , tables, hide]) => !hide || tables.some(t => run.has(t))).map(([key, label, tables]) =>
      h('a', { href: `#/doc/${encodeURIComponent(id)}/${key}`, class: `${key === tab ? 'active' : ''} ${tables.some(t => run.has(t)) ? '' : 'absent'}`, 'data-tab': key }, label))),
    body)
  app().replaceChildren(page)
  const view = VIEWS[tab] || saliencyView
  const rerender = async () => {
    try { body.replaceChildren(await view(ctx, rerender)) } catch (e) { body.replaceChildren(h('pre', { class: 'error' }, String(e.stack || e))) }
    body.dataset.ready = '1'
  }
  await rerender()
}

async function route() {
  hideTip()
  const m = location.hash.match(/^#\/doc\/([^/]+)(?:\/(\w+))?/)
  const n = location.hash.match(/^#\/neurons?(?:\/(\d+)\/(\d+))?\/?$/)
  const s = location.hash.match(/^#\/similarity(?:\?(.*))?$/)
  try {
    if (run.comparison) app().replaceChildren(await comparisonPage(run, run.comparison))
    else if (s) app().replaceChildren(h('div', { id: 'run-similarity' },
      h('p', {}, h('a', { href: overviewLink(), id: 'back' }, '← all documents')),
      h('h1', {}, 'Layer similarity'),
      h('p', { class: 'note' }, 'This run\'s layers against each other (analyses.similarity; docs/compare.md).'),
      await similarity(run, null, new URLSearchParams(s[1] || ''))))
    else if (m) await documentPage(decodeURIComponent(m[1]), m[2] || 'saliency')
    else if (n) app().replaceChildren(await neuronPage(run, n[1] == null ? null : Number(n[1]), n[2] == null ? null : Number(n[2])))
    else app().replaceChildren(await overview(run))
  } catch (e) {
    app().replaceChildren(h('pre', { class: 'error' }, String(e.stack || e)))
  }
  app().dataset.ready = '1'
}

async function start() {
  try {
    run = await Run.open()
  } catch (e) {
    app().replaceChildren(h('pre', { class: 'error' }, `Could not open the run: ${e}`))
    return
  }
  const m = run.manifest
  document.getElementById('run-title').textContent = run.comparison ? 'comparison' : m ? (m.spec?.description || m.spec_path || '') : 'no manifest.json'
  if (run.has('neuron_stats')) document.getElementById('nav-neurons').hidden = false
  if (run.has('similarity')) document.getElementById('nav-similarity').hidden = false
  window.addEventListener('hashchange', () => { delete app().dataset.ready; route() })
  document.addEventListener('scroll', hideTip, { passive: true })
  route()
}

start()
export { showTip }
