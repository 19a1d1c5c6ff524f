// Color scales. Viridis (perceptually uniform), sampled at 9 stops and interpolated.
const VIRIDIS = ['#440154', '#472d7b', '#3b528b', '#2c728e', '#21918c', '#28ae80', '#5ec962', '#addc30', '#fde725']
const rgb = h => [1, 3, 5].map(i => parseInt(h.slice(i, i + 2), 16))

function interp(stops, t) {
  t = Math.max(0, Math.min(1, Number.isFinite(t) ? t : 0))
  const x = t * (stops.length - 1)
  const i = Math.min(stops.length - 2, Math.floor(x))
  const a = rgb(stops[i]), b = rgb(stops[i + 1]), f = x - i
  return a.map((v, k) => Math.round(v + (b[k] - v) * f))
}

// Saliency backgrounds: white (0) to viridis' dark end, through its light part: light tokens
// stay readable, strong ones stand out. t in [0, 1].
const SAL = ['#ffffff', '#fde725', '#addc30', '#5ec962', '#28ae80', '#21918c', '#2c728e', '#3b528b', '#472d7b']
export function salColor(t) { return `rgb(${interp(SAL, t).join(',')})` }
export function salText(t) { return t > 0.62 ? '#fff' : '#111' }
export const salGradient = `linear-gradient(to right, ${SAL.join(',')})`

// Similarities and other values in [0, 1]: viridis, 1 bright.
export function viridis(t) { return `rgb(${interp(VIRIDIS, t).join(',')})` }
export function viridisText(t) { return t > 0.55 ? '#111' : '#fff' }

// Ranks on a log scale: rank 1 bright (viridis' yellow end), vocabulary size dark.
export function rankT(rank, vocab) { return 1 - Math.log(rank) / Math.log(Math.max(vocab, 2)) }
export function rankColor(rank, vocab) { return `rgb(${interp(VIRIDIS, rankT(rank, vocab)).join(',')})` }
export function rankText(rank, vocab) { return rankT(rank, vocab) > 0.55 ? '#111' : '#fff' }
export const rankGradient = `linear-gradient(to right, ${[...VIRIDIS].reverse().join(',')})`

// Categorical (NMF factors): Tableau 10.
export const CATEGORICAL = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac']

// Patching effects: diverging, red (negative) - white (0) - blue (1 = the clean behaviour
// restored); beyond [-1, 1] saturates.
const DIV_NEG = ['#ffffff', '#f4a582', '#d6604d', '#b2182b']
const DIV_POS = ['#ffffff', '#92c5de', '#4393c3', '#2166ac']
export function effectColor(e) { return `rgb(${interp(e < 0 ? DIV_NEG : DIV_POS, Math.abs(e)).join(',')})` }
export function effectText(e) { return Math.abs(e) > 0.6 ? '#fff' : '#111' }
export const effectGradient = `linear-gradient(to right, ${[...DIV_NEG].reverse().join(', ')}, ${DIV_POS.slice(1).join(', ')})`
