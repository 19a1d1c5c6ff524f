// The browser checks of a comparison directory (`tokenlens compare`), called by browser.mjs when
// RUN_DIR has comparison.json: the summary names both runs; the similarity heatmap's cells
// equal the `similarity` table for every metric and representation the select offers; the
// documents page lists `diff_docs` sorted by the chosen column; a document page shows its
// `diff` rows (top-1 tokens, JS per position) and both runs' document pages side by side,
// served under /a/ and /b/.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

// The layer-similarity heatmap (#/similarity, a comparison's or a run's own table `similarity`):
// every metric x source the page offers, every cell against the table.
export async function similarityChecks({ page, url, table, check, shots, where }) {
  const go = async hash => {
    await page.goto(`${url}${hash}`)
    await page.waitForSelector('#app[data-ready]', { timeout: 20000 })
  }
  const sim = await table('similarity')
  if (!sim) {
    console.log(`no similarity table in this ${where}`)
    return
  }
  const combos = [...new Set(sim.map(r => `${r.metric}|${r.source}`))]
  const pair = `${sim.at(-1).run_a}\u0000${sim.at(-1).run_b}`
  let cells = 0, bad = []
  for (const combo of combos) {
    const [metric, source] = combo.split('|')
    await go(`#/similarity?${new URLSearchParams({ metric, source, pair })}`)
    const shown = await page.$$eval('#similarity-heatmap td[data-a]', tds => tds.map(td => [Number(td.dataset.a), Number(td.dataset.b), Number(td.dataset.value)]))
    const want = sim.filter(r => r.metric === metric && r.source === source && `${r.run_a}\u0000${r.run_b}` === pair)
    const byKey = new Map(want.map(r => [`${r.layer_a},${r.layer_b}`, r.value]))
    for (const [a, b, v] of shown) {
      const w = byKey.get(`${a},${b}`)
      if (!(w === v || (Number.isNaN(w) && Number.isNaN(v)))) bad.push(`${combo} ${a},${b}: ${v} != ${w}`)
    }
    if (shown.length !== want.length) bad.push(`${combo}: ${shown.length} cells, table ${want.length}`)
    cells += shown.length
  }
  check(cells > 0 && bad.length === 0, `${where}'s similarity heatmaps: ${cells} cells over ${combos.length} metric/representation views equal the table${bad.length ? `; ${bad.slice(0, 5).join('; ')}` : ''}`)
  await page.screenshot({ path: join(shots, `${where}-similarity.png`), fullPage: true })
}

export async function compareChecks({ page, url, table, check, runDir, shots, errors }) {
  const info = JSON.parse(readFileSync(join(runDir, 'comparison.json'), 'utf8'))
  const ready = () => page.waitForSelector('#app[data-ready]', { timeout: 20000 })
  const go = async hash => {
    await page.goto(`${url}${hash}`)
    await ready()
  }
  await go('#/')
  const summary = await page.$eval('#comparison-summary', el => el.textContent)
  check(summary.includes(String(info.run_a.given)) && (!info.run_b || summary.includes(String(info.run_b.given))), `comparison summary names run A (${info.run_a.given}) and run B (${info.run_b?.given})`)

  await similarityChecks({ page, url, table, check, shots, where: 'comparison' })

  // Documents ranked by disagreement (two runs only).
  const docs = await table('diff_docs')
  if (!docs) {
    check(!info.run_b, 'one run compared: no diff_docs table')
    check(errors.length === 0, `no page errors${errors.length ? `: ${errors.join('; ')}` : ''}`)
    return
  }
  await go('#/docs?sort=mean_js')
  const listed = await page.$$eval('#diff-docs tr[data-doc]', trs => trs.map(tr => tr.dataset.doc))
  const key = r => r.mean_js ?? -Infinity
  const sorted = [...docs].sort((x, y) => (key(y) - key(x)) || (x.index_a - y.index_a)).map(r => r.doc_id)
  check(listed.length === docs.length && listed.join('\n') === sorted.join('\n'), `disagreements: ${listed.length} documents, in diff_docs' mean_js order (first ${listed[0]})`)
  await page.screenshot({ path: join(shots, 'compare-docs.png'), fullPage: true })

  // The most disagreeing document: its diff strip and both runs side by side.
  const id = sorted[0]
  await go(`#/doc/${encodeURIComponent(id)}`)
  const diffs = ((await table('diff', { doc_id: id })) || []).sort((a, b) => a.position - b.position)
  const strip = await page.$$eval('#diff-strip .tok', els => els.map(e => [Number(e.dataset.pos), Number(e.dataset.js)]))
  const jsOk = strip.length === diffs.length && strip.every(([p, js], i) => p === diffs[i].position && Math.abs(js - (diffs[i].js ?? 0)) < 1e-6)
  check(jsOk, `document ${id}: the diff strip shows its ${diffs.length} diff rows (positions and JS)`)
  const frames = await page.$$eval('iframe[data-side]', fs => fs.map(f => f.dataset.side))
  check(frames.join(',') === (info.run_b ? 'a,b' : 'a'), `document ${id}: both runs side by side (${frames})`)
  for (const side of frames) {
    const frame = page.frame({ url: new RegExp(`/${side}/`) })
    const ok = frame && await frame.waitForSelector('#tab-body[data-ready]', { timeout: 20000 }).then(() => true, () => false)
    const n = ok ? await frame.$$eval('#doc-tokens .tok', els => els.length) : 0
    check(ok && n > 0, `run ${side.toUpperCase()}'s document page served under /${side}/ shows ${n} tokens`)
  }
  await page.screenshot({ path: join(shots, 'compare-doc.png'), fullPage: true })
  check(errors.length === 0, `no page errors${errors.length ? `: ${errors.join('; ')}` : ''}`)
}
