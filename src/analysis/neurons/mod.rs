//! Per-neuron summaries of a corpus's MLP activations, computed in one streaming pass and
//! mergeable: for every neuron of a layer, its `k` strongest activations (top-k) and its running
//! moments (count, mean, variance, min, max, how often and how strongly it is active).
//!
//! Rows arrive one position at a time (one value per neuron) in any order. "Strongest" is the
//! largest value (as Neuroscope ranks neurons); ties are broken by the position's [`Hit::doc`]
//! then [`Hit::position`], smaller first, so the ranking is a strict total order on distinct
//! positions. Hence a top-k does not depend on the order the rows came in, and the top-k of
//! merged accumulators is exactly the top-k of all their rows: the corpus can be split (shards,
//! parts, threads) and the pieces merged ([`LayerAccumulator::merge`]) with the same result. The
//! moments are kept as sums in f64 shifted by the neuron's first value, and merged with Chan et
//! al.'s formula: count, min, max and the active count are exact whatever the split; the mean and
//! the variance equal up to f64 rounding (the order of the sums).
//!
//! Memory: per neuron, `k` hits of 12 bytes and its moments and heap state (56 bytes), whatever
//! the number of rows. Pure computation: no I/O.

use std::cmp::Ordering;

use rayon::prelude::*;

/// One recorded activation: the value and where it was recorded. `doc` is the document's place in
/// the corpus order (e.g. its dataset index), which only the tie-break of equal values uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub value: f32,
    pub doc: u32,
    pub position: u32,
}

impl Hit {
    /// The ranking: larger value first (`f32::total_cmp`, so -0.0 ranks below 0.0), then smaller
    /// `doc`, then smaller `position`. `Less` means `self` ranks before (is stronger than) `other`.
    pub fn rank_cmp(&self, other: &Hit) -> Ordering {
        other
            .value
            .total_cmp(&self.value)
            .then(self.doc.cmp(&other.doc))
            .then(self.position.cmp(&other.position))
    }

    fn stronger(&self, other: &Hit) -> bool {
        self.rank_cmp(other) == Ordering::Less
    }
}

/// A neuron's summary statistics (see [`LayerAccumulator::stats`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NeuronStats {
    /// Positions recorded.
    pub count: u64,
    pub mean: f64,
    /// Population standard deviation (ddof 0, numpy's default).
    pub std: f64,
    pub min: f32,
    pub max: f32,
    /// Positions where the value is > 0.
    pub active: u64,
    /// Mean of the values > 0; None when there are none.
    pub mean_active: Option<f64>,
}

impl NeuronStats {
    /// `active / count`.
    pub fn fraction_active(&self) -> f64 {
        self.active as f64 / self.count as f64
    }
}

/// A neuron's running moments: sums of (x - shift) and (x - shift)^2 in f64, shift being the first
/// value seen (so the sums stay small and the variance does not cancel), and the active values'
/// count and sum.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Moments {
    shift: f64,
    s1: f64,
    s2: f64,
    min: f32,
    max: f32,
    active: u64,
    active_sum: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            shift: f64::NAN,
            s1: 0.0,
            s2: 0.0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            active: 0,
            active_sum: 0.0,
        }
    }
}

impl Moments {
    #[inline]
    fn push(&mut self, x: f32) {
        if self.shift.is_nan() {
            self.shift = x as f64;
        }
        let d = x as f64 - self.shift;
        self.s1 += d;
        self.s2 += d * d;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        if x > 0.0 {
            self.active += 1;
            self.active_sum += x as f64;
        }
    }

    /// (mean, M2 = sum of squared deviations from the mean) over `n` values.
    fn mean_m2(&self, n: u64) -> (f64, f64) {
        if n == 0 {
            return (0.0, 0.0);
        }
        let n = n as f64;
        let mean = self.shift + self.s1 / n;
        (mean, (self.s2 - self.s1 * self.s1 / n).max(0.0))
    }

    /// Adds `other` (over `nb` values) to `self` (over `na`): Chan, Golub & LeVeque's pairwise
    /// update of the mean and M2, stored back as sums shifted by the merged mean.
    fn merge(&mut self, na: u64, other: &Moments, nb: u64) {
        if nb == 0 {
            return;
        }
        if na == 0 {
            *self = *other;
            return;
        }
        let ((ma, m2a), (mb, m2b)) = (self.mean_m2(na), other.mean_m2(nb));
        let (fa, fb) = (na as f64, nb as f64);
        let n = fa + fb;
        let delta = mb - ma;
        let mean = ma + delta * fb / n;
        let m2 = m2a + m2b + delta * delta * fa * fb / n;
        self.shift = mean;
        self.s1 = 0.0;
        self.s2 = m2;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.active += other.active;
        self.active_sum += other.active_sum;
    }
}

/// A neuron's state: its moments, the size of its top-k heap and the weakest value in a full heap
/// (below it nothing can enter: the fast path of almost every value).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Neuron {
    moments: Moments,
    len: u32,
    floor: f32,
}

impl Default for Neuron {
    fn default() -> Self {
        Neuron {
            moments: Moments::default(),
            len: 0,
            floor: f32::NEG_INFINITY,
        }
    }
}

/// Neurons per task when rows are added in parallel.
const NEURONS_PER_TASK: usize = 256;

/// The top-k and moments of every neuron of one layer, over the rows pushed (or merged) so far.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerAccumulator {
    neurons: usize,
    k: usize,
    /// Rows (positions) seen; every neuron has one value per row.
    count: u64,
    state: Vec<Neuron>,
    /// Neuron j's heap is `hits[j * k..j * k + len]`, the weakest hit at its root.
    hits: Vec<Hit>,
}

impl LayerAccumulator {
    /// An empty accumulator for `neurons` neurons keeping `k` hits each (`k` >= 1).
    pub fn new(neurons: usize, k: usize) -> Self {
        assert!(k >= 1, "a top-k needs k >= 1");
        let empty = Hit {
            value: 0.0,
            doc: 0,
            position: 0,
        };
        LayerAccumulator {
            neurons,
            k,
            count: 0,
            state: vec![Neuron::default(); neurons],
            hits: vec![empty; neurons * k],
        }
    }

    pub fn neurons(&self) -> usize {
        self.neurons
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Rows seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds one row: the layer's values (one per neuron) at `position` of document `doc`.
    /// Values must be finite (the caller checks: a NaN has no rank).
    pub fn push(&mut self, doc: u32, position: u32, values: &[f32]) {
        self.push_rows(&[(doc, position)], values);
    }

    /// Adds rows: `keys[r]` is row r's (doc, position), `values` the rows one after the other
    /// (`keys.len() * neurons` values). Neurons are split over rayon's threads; each neuron sees
    /// the rows in order, so the result does not depend on the threads.
    pub fn push_rows(&mut self, keys: &[(u32, u32)], values: &[f32]) {
        let n = self.neurons;
        assert_eq!(values.len(), keys.len() * n, "one value per row and neuron");
        if keys.is_empty() {
            return;
        }
        let k = self.k;
        let chunk = |first: usize, state: &mut [Neuron], hits: &mut [Hit]| {
            for (r, &(doc, position)) in keys.iter().enumerate() {
                let row = &values[r * n + first..r * n + first + state.len()];
                for (j, (&x, s)) in row.iter().zip(state.iter_mut()).enumerate() {
                    s.moments.push(x);
                    // Equal to the floor: the tie-break decides (below).
                    if x < s.floor {
                        continue;
                    }
                    let heap = &mut hits[j * k..(j + 1) * k];
                    offer(
                        heap,
                        s,
                        k,
                        Hit {
                            value: x,
                            doc,
                            position,
                        },
                    );
                }
            }
        };
        let work = keys.len() * n;
        if work < 1 << 16 || n <= NEURONS_PER_TASK {
            chunk(0, &mut self.state, &mut self.hits);
        } else {
            self.state
                .par_chunks_mut(NEURONS_PER_TASK)
                .zip(self.hits.par_chunks_mut(NEURONS_PER_TASK * k))
                .enumerate()
                .for_each(|(c, (state, hits))| chunk(c * NEURONS_PER_TASK, state, hits));
        }
        self.count += keys.len() as u64;
    }

    /// Adds everything `other` saw (the same layer over other rows): afterwards `self` is what
    /// one accumulator over both sets of rows would hold (top-k exactly; moments up to rounding).
    /// Panics when the two differ in neurons or k.
    pub fn merge(&mut self, other: &LayerAccumulator) {
        assert_eq!(
            (self.neurons, self.k),
            (other.neurons, other.k),
            "merged accumulators must have the same neurons and k"
        );
        let k = self.k;
        for j in 0..self.neurons {
            let o = &other.state[j];
            let s = &mut self.state[j];
            s.moments.merge(self.count, &o.moments, other.count);
            for &hit in &other.hits[j * k..j * k + o.len as usize] {
                if hit.value >= s.floor {
                    offer(&mut self.hits[j * k..(j + 1) * k], s, k, hit);
                }
            }
        }
        self.count += other.count;
    }

    /// Neuron `j`'s hits, strongest first (at most k; fewer when fewer rows were seen).
    pub fn top(&self, j: usize) -> Vec<Hit> {
        let k = self.k;
        let mut v = self.hits[j * k..j * k + self.state[j].len as usize].to_vec();
        v.sort_unstable_by(Hit::rank_cmp);
        v
    }

    /// Neuron `j`'s statistics; None before any row.
    pub fn stats(&self, j: usize) -> Option<NeuronStats> {
        if self.count == 0 {
            return None;
        }
        let m = &self.state[j].moments;
        let (mean, m2) = m.mean_m2(self.count);
        Some(NeuronStats {
            count: self.count,
            mean,
            std: (m2 / self.count as f64).sqrt(),
            min: m.min,
            max: m.max,
            active: m.active,
            mean_active: (m.active > 0).then(|| m.active_sum / m.active as f64),
        })
    }
}

/// Offers `hit` to a neuron's heap (`heap[..s.len]`, a min-heap by rank: the weakest hit at 0):
/// pushed while it has fewer than `k` hits, else it replaces the weakest if stronger.
#[inline]
fn offer(heap: &mut [Hit], s: &mut Neuron, k: usize, hit: Hit) {
    let len = s.len as usize;
    if len < k {
        heap[len] = hit;
        sift_up(&mut heap[..=len], len);
        s.len += 1;
        if s.len as usize == k {
            s.floor = heap[0].value;
        }
    } else if hit.stronger(&heap[0]) {
        heap[0] = hit;
        sift_down(&mut heap[..k], 0);
        s.floor = heap[0].value;
    }
}

/// `a` is weaker than `b` (heap order: the weakest at the root).
#[inline]
fn weaker(a: &Hit, b: &Hit) -> bool {
    b.stronger(a)
}

fn sift_up(heap: &mut [Hit], mut i: usize) {
    while i > 0 {
        let parent = (i - 1) / 2;
        if weaker(&heap[i], &heap[parent]) {
            heap.swap(i, parent);
            i = parent;
        } else {
            break;
        }
    }
}

fn sift_down(heap: &mut [Hit], mut i: usize) {
    let n = heap.len();
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut m = i;
        if l < n && weaker(&heap[l], &heap[m]) {
            m = l;
        }
        if r < n && weaker(&heap[r], &heap[m]) {
            m = r;
        }
        if m == i {
            break;
        }
        heap.swap(i, m);
        i = m;
    }
}

#[cfg(test)]
mod tests;
