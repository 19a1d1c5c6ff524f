// DOM helpers.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v)
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v)
    else if (k === 'class') el.className = v
    else el.setAttribute(k, v === true ? '' : v)
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue
    el.append(c instanceof Node ? c : String(c))
  }
  return el
}

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null) continue
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v)
    else el.setAttribute(k, v)
  }
  for (const c of children.flat(Infinity)) if (c != null) el.append(c instanceof Node ? c : String(c))
  return el
}

// A token's text made visible: newlines and tabs as symbols (spaces stay, chips show them).
export function show(text) {
  return String(text).replace(/\n/g, '↵').replace(/\t/g, '→').replace(/\r/g, '␍') || '∅'
}

export function chip(text, attrs = {}) {
  return h('span', { ...attrs, class: `tok ${attrs.class || ''}`.trim() }, show(text))
}

export function pct(x) { return `${(100 * x).toFixed(x >= 0.1 ? 0 : 1)}%` }

export function seg(options, value, onpick, name) {
  return h('span', { class: 'seg', role: 'group', 'data-name': name },
    options.map(([v, label]) => h('button', { class: v === value ? 'on' : '', 'data-value': v, onclick: () => onpick(v) }, label)))
}

export function missing(table, why) {
  return h('p', { class: 'missing', 'data-missing': table },
    'This run has no ', h('code', {}, table), ' table', why ? `: ${why}` : '.')
}

const tip = () => document.getElementById('tooltip')
export function showTip(ev, content) {
  const t = tip()
  t.replaceChildren(content)
  t.hidden = false
  const x = Math.min(ev.clientX + 14, window.innerWidth - t.offsetWidth - 8)
  const y = Math.min(ev.clientY + 14, window.innerHeight - t.offsetHeight - 8)
  t.style.left = `${x}px`
  t.style.top = `${y}px`
}
export function hideTip() { tip().hidden = true }

export function groupBy(rows, key) {
  const m = new Map()
  for (const r of rows) {
    const k = typeof key === 'function' ? key(r) : r[key]
    if (!m.has(k)) m.set(k, [])
    m.get(k).push(r)
  }
  return m
}
