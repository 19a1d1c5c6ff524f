//! Every table's definition, one `table!` each: its columns, their types and docs (docs/schema.md
//! is generated from them).

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, Int8Builder, Int32Builder, Int64Builder,
    ListBuilder, StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;

use super::{ColType, Column, FloatListBuilder, Push, Table, TableDef, TableOptions};

table! {
    /// One row per token of every sequence: the prompt's tokens, then the generated ones.
    "tokens" => TOKENS, Tokens, TokensRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// 0-based position in the sequence.
        position: Int32,
        /// Vocabulary id.
        token_id: Int32,
        /// The token's text (decoded: a leading space is a space).
        token: Utf8,
        /// Whether the model generated this token (false: part of the prompt).
        is_generated: Bool,
    }
}

table! {
    /// One row per document: its prompt and what the model generated.
    "generations" => GENERATIONS, Generations, GenerationsRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// 0-based index of the prompt in the dataset (dataset order).
        index: Int64,
        /// The prompt text, as in the dataset.
        prompt: Utf8,
        /// The generated tokens decoded as text; empty when nothing was generated.
        output_text: Utf8,
        /// Prompt length in tokens (after truncation).
        prompt_tokens: Int32,
        /// Number of generated tokens (an EOS token that ended generation included).
        generated_tokens: Int32,
        /// Whether generation ended at an EOS token (else at max_new_tokens).
        stopped_at_eos: Bool,
        /// Prompt tokens dropped from the start by `dataset.too_long: truncate`; 0 otherwise.
        truncated_tokens: Int32,
    }
}

table! {
    /// One row per document of a paired dataset (`dataset.corrupted_field`, `answer_field`,
    /// `foil_field`): the fields the spec names, and the answer's and foil's tokens; null where
    /// the spec names no such field.
    "pairs" => PAIRS, Pairs, PairsRow<'a> {
        /// The document (see Conventions); its clean prompt is `generations.prompt`.
        doc_id: Utf8,
        /// The corrupted prompt, as in the dataset.
        corrupted_prompt: OptUtf8,
        /// Its length in tokens (equal to the clean prompt's).
        corrupted_tokens: OptInt32,
        /// The answer, as in the dataset.
        answer: OptUtf8,
        /// The answer's first token: what contrasts read.
        answer_token_id: OptInt32,
        /// The foil, as in the dataset.
        foil: OptUtf8,
        /// The foil's first token.
        foil_token_id: OptInt32,
    }
}

table! {
    /// Top-k next-token candidates at every position: the model's output distribution after
    /// reading tokens 0..=position. For an encoder (a masked LM), the distribution of the token
    /// at the position itself, read from the whole sequence (at a [MASK]: its fillers).
    "predictions" => PREDICTIONS, Predictions, PredictionsRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// The position whose output is shown (it predicts position + 1; an encoder's predicts
        /// the position itself).
        position: Int32,
        /// 1 = most probable.
        rank: Int32,
        /// Vocabulary id of the candidate.
        token_id: Int32,
        /// The candidate's text.
        token: Utf8,
        /// Softmax probability.
        prob: Float32,
    }
}

table! {
    /// The logit lens: at every layer and position, the rank and probability of the token that
    /// actually comes next in the sequence (the token at position + 1) when the residual stream
    /// after that layer is unembedded. The last position of a sequence has no next token and no
    /// rows. For an encoder the token ranked is the position's own, and at a [MASK] the model's
    /// final top-1 prediction there.
    "lens" => LENS, Lens, LensRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// 0-based position in the sequence.
        position: Int32,
        /// Residual stream index (see *layer*): 0 = embeddings, l = after block l - 1.
        layer: Int32,
        /// Vocabulary id of the next token.
        token_id: Int32,
        /// Its rank at this layer, 1 = most probable.
        rank: Int32,
        /// Its softmax probability at this layer.
        prob: Float32,
    }
}

table! {
    /// The logit lens' top-k tokens at every layer and position.
    "lens_topk" => LENS_TOPK, LensTopk, LensTopkRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// 0-based position in the sequence.
        position: Int32,
        /// Residual stream index (see *layer*).
        layer: Int32,
        /// 1 = most probable.
        rank: Int32,
        /// Vocabulary id.
        token_id: Int32,
        /// The token's text.
        token: Utf8,
        /// Softmax probability.
        prob: Float32,
    }
}

table! {
    /// Rank and probability of each watched token (`analyses.watch.tokens`) at every layer and
    /// position, as Ecco's `rankings_watch`.
    "watch" => WATCH, Watch, WatchRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// 0-based position in the sequence.
        position: Int32,
        /// Residual stream index (see *layer*).
        layer: Int32,
        /// Vocabulary id of the watched token.
        token_id: Int32,
        /// The watched token as written in the spec.
        token: Utf8,
        /// Its rank, 1 = most probable.
        rank: Int32,
        /// Its softmax probability.
        prob: Float32,
    }
}

table! {
    /// Input saliency: for every generated token (target) and every earlier token (source), that
    /// source's share of the attribution; for an encoder, for every [MASK] prediction (the model's
    /// top-1 there) and every token of the document. Definitions in docs/saliency.md.
    "saliency" => SALIENCY, Saliency, SaliencyRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// `gradient`, `grad_x_input` or `integrated_gradients`.
        method: Utf8,
        /// What the target measures: `prob` (the generated token's probability; an encoder's
        /// [MASK] prediction's), or a contrast of the row's answer a and foil b after the
        /// prompt (table `pairs`): `logit_diff` (z[a] - z[b]), `prob_diff` (p[a] - p[b]),
        /// `log_prob_ratio` (log p[a] - log p[b]).
        metric: Utf8,
        /// Position of the generated token explained (an encoder's: the [MASK]; a contrast's:
        /// the prompt's length, where the answer would go).
        target_position: Int32,
        /// Position of the earlier token (0..target_position; an encoder's: any position).
        source_position: Int32,
        /// L2 norm of the attribution over the embedding, divided by the sum over sources
        /// (Ecco's score); the scores of one target sum to 1.
        score: Float32,
        /// The L2 norm before normalization (comparable across targets).
        raw: Float32,
        /// Sum of the attribution over the embedding; null for `gradient` (an absolute value).
        signed: OptFloat32,
    }
}

table! {
    /// Integrated gradients' completeness check, one row per target (generated token, an
    /// encoder's [MASK], or contrast).
    "saliency_completeness" => SALIENCY_COMPLETENESS, SaliencyCompleteness,
        SaliencyCompletenessRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// Position of the target (as in `saliency`).
        target_position: Int32,
        /// What the target measures (as in `saliency`).
        metric: Utf8,
        /// The baseline the path starts from: `zero`, `token` (eos, bos or `baseline_token`),
        /// `mean` or `corrupted`.
        baseline: Utf8,
        /// The metric at the input.
        value: Float32,
        /// The metric at the baseline.
        baseline_value: Float32,
        /// Sum of all attributions of the target.
        attribution_sum: Float32,
        /// attribution_sum - (value - baseline_value); near 0 when n_steps suffices.
        error: Float32,
        /// Gradient evaluations of the attributions (`n_steps`; adaptive IG, `ig_tolerance`:
        /// the nested level where the target stopped, 3, 7, 15, 31, ..., at most `n_steps`).
        steps: Int32,
    }
}

table! {
    /// Exact activation patching of paired rows (`analyses.patching`; docs/patching.md): one row
    /// per (component, direction, layer, head, position) patched.
    "patching" => PATCHING, Patching, PatchingRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// `exact` (the patched run's metric) or `attribution` (its first-order estimate:
        /// the unpatched base run's metric + (source − base activation) · gradient).
        method: Utf8,
        /// `resid_pre` (a block's input at a position), `attn_head` (a head's output at every
        /// position), `attn_head_pos` (a head's output at a position), `mlp_out` (the MLP
        /// branch's output at a position).
        component: Utf8,
        /// `denoise` (the corrupted run with the clean activation patched in) or `noise` (the
        /// clean run with the corrupted one).
        direction: Utf8,
        /// `logit_diff`, `prob_diff` or `log_prob_ratio` of the answer and foil (table `pairs`)
        /// after the prompt.
        metric: Utf8,
        /// Block index, 0-based.
        layer: Int32,
        /// Head index (`attn_head`, `attn_head_pos`); null otherwise.
        head: OptInt32,
        /// Position patched (`resid_pre`, `attn_head_pos`, `mlp_out`); null for `attn_head`.
        position: OptInt32,
        /// The metric of the patched run (`attribution`: its estimate).
        value: Float32,
        /// (value − corrupted_value) / (clean_value − corrupted_value): 0 = the corrupted run's
        /// metric, 1 = the clean run's; null when the two are equal.
        effect: OptFloat32,
        /// The metric on the clean prompt, unpatched.
        clean_value: Float32,
        /// The metric on the corrupted prompt, unpatched.
        corrupted_value: Float32,
    }
}

table! {
    /// Generation under each intervention (`interventions:`; docs/interventions.md): one row
    /// per document and intervention, beside the plain generation in `generations`.
    "interventions" => INTERVENTIONS, Interventions, InterventionsRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// The intervention's name, as in the spec.
        intervention: Utf8,
        /// The generated tokens decoded as text.
        output_text: Utf8,
        /// Number of generated tokens (an EOS token that ended generation included).
        generated_tokens: Int32,
        /// Whether generation ended at an EOS token (else at max_new_tokens).
        stopped_at_eos: Bool,
        /// Index (0 = the first generated token) of the first token that differs from the plain
        /// generation's, or where one of the two ended first; null when both are the same.
        diverges_at: OptInt32,
    }
}

table! {
    /// The tokens each intervention generated, one row per token.
    "intervention_tokens" => INTERVENTION_TOKENS, InterventionTokens, InterventionTokensRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// The intervention's name.
        intervention: Utf8,
        /// 0-based position in the sequence (the prompt's tokens come first: see `tokens`).
        position: Int32,
        /// Vocabulary id.
        token_id: Int32,
        /// The token's text.
        token: Utf8,
        /// Its softmax probability under the intervention when it was chosen.
        prob: Float32,
    }
}

table! {
    /// What each intervention sets or adds, resolved: one row per neuron, per head and per
    /// steering vector (written once per run, by shard 0).
    "intervention_edits" => INTERVENTION_EDITS, InterventionEdits, InterventionEditsRow<'a> {
        /// The intervention's name.
        intervention: Utf8,
        /// `neuron` (set to `values[0]`), `head` (its output slice set to `values`) or `steer`
        /// (`values` added to the block's input).
        kind: Utf8,
        /// Block index, 0-based.
        layer: Int32,
        /// Neuron or head index; null for `steer`.
        index: OptInt32,
        /// Where the values come from: `zero`, `value`, `mean` (over the tokens of the
        /// dataset's first `mean_prompts` prompts), `vector` (a file, × alpha) or `mean_diff`
        /// (computed from two prompt sets, × alpha).
        source: Utf8,
        /// A steering vector's alpha; null for ablations.
        alpha: OptFloat32,
        /// The values set or added.
        values: ListFloat32,
        /// The values' L2 norm.
        norm: Float32,
    }
}

table! {
    /// MLP neuron activations (the input of each block's MLP output projection, as Ecco records),
    /// one list of the layer's neurons per document, position and layer.
    "activations" => ACTIVATIONS, Activations, ActivationsRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// 0-based position in the sequence.
        position: Int32,
        /// Block index, 0-based.
        layer: Int32,
        /// One value per neuron (the MLP's intermediate size); float16 when
        /// `analyses.activations.dtype` is `f16`.
        values: ListFloat,
    }
}

table! {
    /// The residual stream, one list of the model's hidden size per document, position and
    /// residual index (as `tokenlens compare` reads it for layer similarity; docs/compare.md).
    "residuals" => RESIDUALS, Residuals, ResidualsRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// 0-based position in the sequence.
        position: Int32,
        /// Residual stream index (see *layer*): 0 = embeddings, l = after block l - 1,
        /// n_layers = the last block's output, before the final norm.
        layer: Int32,
        /// One value per hidden dimension; float16 when `analyses.residuals.dtype` is `f16`.
        values: ListFloat,
    }
}

table! {
    /// Attention probabilities: one row per document, layer, head and query position.
    "attention" => ATTENTION, Attention, AttentionRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// Block index, 0-based.
        layer: Int32,
        /// Head index, 0-based.
        head: Int32,
        /// Position of the attending token.
        query_position: Int32,
        /// Attention over key positions 0..=query_position (causal): `weights[k]` is key k;
        /// sums to 1.
        weights: ListFloat32,
    }
}

table! {
    /// Attention rollout (Abnar & Zuidema 2020): head-averaged attention, with the residual
    /// connection as 0.5 I + 0.5 A, multiplied through blocks 0..=layer.
    "attention_rollout" => ATTENTION_ROLLOUT, AttentionRollout, AttentionRolloutRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// Last block included, 0-based.
        layer: Int32,
        /// Position of the attending token.
        query_position: Int32,
        /// Rolled-out attention over key positions 0..=query_position.
        weights: ListFloat32,
    }
}

table! {
    /// NMF components: each factor's weight on each neuron of the factorized layers.
    "nmf_components" => NMF_COMPONENTS, NmfComponents, NmfComponentsRow {
        /// Factor index, 0-based.
        factor: Int32,
        /// Block index of the neuron.
        layer: Int32,
        /// Neuron index within the layer's MLP.
        neuron: Int32,
        /// 1: the neuron's positive part; -1: its negative part (only with
        /// `negative: split`).
        sign: Int8,
        /// Non-negative weight.
        weight: Float32,
    }
}

table! {
    /// NMF factor values at every factorized document position.
    "nmf_factors" => NMF_FACTORS, NmfFactors, NmfFactorsRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// 0-based position in the sequence.
        position: Int32,
        /// Factor index, 0-based.
        factor: Int32,
        /// Non-negative activation of the factor.
        value: Float32,
    }
}

table! {
    /// NMF convergence: one row per iteration.
    "nmf_summary" => NMF_SUMMARY, NmfSummary, NmfSummaryRow {
        /// Iteration, from 1.
        iteration: Int32,
        /// ||X - W H||_F / ||X||_F after this iteration (with its W and H).
        relative_error: Float64,
        /// Seconds since the factorization started (loading the matrix into memory excluded).
        seconds: Float64,
    }
}

table! {
    /// The positions where each NMF factor is largest, with the text before them.
    "nmf_top_contexts" => NMF_TOP_CONTEXTS, NmfTopContexts, NmfTopContextsRow<'a> {
        /// Factor index, 0-based.
        factor: Int32,
        /// 1 = largest value.
        rank: Int32,
        /// The document (see Conventions).
        doc_id: Utf8,
        /// 0-based position in the sequence.
        position: Int32,
        /// The factor's value there.
        value: Float32,
        /// The text of up to `context_tokens` tokens before the position, then the token at it.
        context: Utf8,
    }
}

table! {
    /// The strongest activations of every recorded MLP neuron over the whole run
    /// (`analyses.neurons`, `tokenlens neurons`; docs/neurons.md): for each (layer, neuron), its
    /// `top_k` largest values with where they were recorded and the text around them. Sorted by
    /// layer, neuron and rank.
    "neuron_top_contexts" => NEURON_TOP_CONTEXTS, NeuronTopContexts, NeuronTopContextsRow<'a> {
        /// Block index, 0-based.
        layer: Int32,
        /// Neuron index within the layer's MLP (an index of `activations.values`).
        neuron: Int32,
        /// 1 = the largest value; equal values rank by document (dataset order), then position.
        rank: Int32,
        /// The activation there.
        value: Float32,
        /// The document (see Conventions).
        doc_id: Utf8,
        /// 0-based position in the sequence.
        position: Int32,
        /// The token at the position.
        token: Utf8,
        /// The text of up to `context_tokens` tokens before the position (of the same document).
        before: Utf8,
        /// The text of up to `context_tokens` tokens after the position (of the same document,
        /// generated tokens included).
        after: Utf8,
    }
}

table! {
    /// Two runs' next-token predictions side by side (`tokenlens compare`, docs/compare.md): one
    /// row per document both runs have and per position whose context is the same in both
    /// (position < `diff_docs.common`). Written into a comparison directory, not a run.
    "diff" => DIFF, Diff, DiffRow<'a> {
        /// The document (see Conventions), matched by doc_id in both runs.
        doc_id: Utf8,
        /// The position whose next-token distributions are compared: tokens 0..=position are
        /// the same in both runs.
        position: Int32,
        /// Run A's most probable next token (its `predictions` at rank 1); null when run A has no
        /// predictions table.
        top1_a: OptInt32,
        /// Run B's most probable next token.
        top1_b: OptInt32,
        /// The text of top1_a.
        top1_token_a: OptUtf8,
        /// The text of top1_b.
        top1_token_b: OptUtf8,
        /// Whether top1_a and top1_b are the same token; null unless both runs have predictions.
        agree: OptBool,
        /// KL(A || B) in nats between the two next-token distributions, each taken as its top-k
        /// probabilities plus its remaining mass spread evenly over the other V - k tokens
        /// (docs/compare.md); null unless both runs have predictions.
        kl_ab: OptFloat32,
        /// KL(B || A) in nats, the same distributions.
        kl_ba: OptFloat32,
        /// Jensen-Shannon divergence in bits of the same distributions: symmetric, 0 for equal
        /// distributions, at most 1 (disjoint); the column to sort by.
        js: OptFloat32,
        /// The token at position + 1, the same in both runs; null at the last compared position
        /// (position + 1 = `diff_docs.common`).
        next_token_id: OptInt32,
        /// Its probability under run A's model: the logit lens at the last layer, with the final
        /// norm (the model's own output); null without a next token or without run A's lens (or a
        /// lens without the final norm).
        prob_a: OptFloat32,
        /// Its probability under run B's model.
        prob_b: OptFloat32,
        /// Its rank under run A's model (1 = most probable), as prob_a.
        rank_a: OptInt32,
        /// Its rank under run B's model.
        rank_b: OptInt32,
        /// The depth (layer / n_layers: 0 = embeddings, 1 = the model's output) from which run A's
        /// logit lens ranks the next token first at every later layer; null when the output does
        /// not rank it first. Comparable between models of different depths.
        top1_depth_a: OptFloat32,
        /// The same for run B.
        top1_depth_b: OptFloat32,
        /// Mean log2 rank of the next token over run A's logit lens, averaged over depth 0..1
        /// (trapezoids between layers, so models of different depths weigh alike); 0 = ranked
        /// first at every layer, lower = predicted earlier and more firmly.
        log_rank_a: OptFloat32,
        /// The same for run B.
        log_rank_b: OptFloat32,
        /// Total variation between the two runs' saliency of the token at position + 1 (same
        /// method, metric `prob`, docs/compare.md): half the sum over source positions of
        /// |score_a - score_b|, in 0..=1; null unless that token is generated in both runs and
        /// both have saliency.
        saliency_distance: OptFloat32,
    }
}

table! {
    /// One row per document both runs have (`tokenlens compare`): where their sequences part,
    /// and the document's `diff` rows summed up, to sort documents by disagreement. At `--level
    /// document` only the document-level columns (texts, lengths) are filled. Written into a
    /// comparison directory, not a run.
    "diff_docs" => DIFF_DOCS, DiffDocs, DiffDocsRow<'a> {
        /// The document (see Conventions).
        doc_id: Utf8,
        /// Its 0-based index in run A's dataset (`generations.index`).
        index_a: Int64,
        /// Its index in run B's dataset.
        index_b: Int64,
        /// Prompt length in tokens in run A.
        prompt_tokens_a: Int32,
        /// Prompt length in tokens in run B.
        prompt_tokens_b: Int32,
        /// Sequence length (prompt and generated tokens) in run A.
        tokens_a: Int32,
        /// Sequence length in run B.
        tokens_b: Int32,
        /// Whether the two prompts' texts are the same.
        same_prompt: Bool,
        /// Whether the two generated texts are the same.
        same_output: Bool,
        /// Index in characters of the first character where the generated texts differ (the
        /// shorter one's length when it is a prefix of the other); null when they are the same.
        first_diff_char: OptInt32,
        /// Length of the longest common token prefix of the two sequences: the positions the
        /// `diff` table compares; null at document level.
        common: OptInt32,
        /// The first position where the two sequences' tokens differ (or one ends): `common`
        /// when they differ, null when they are the same or at document level.
        diverges_at: OptInt32,
        /// The document's `diff` rows with a KL (both runs have predictions there), over which
        /// the means below are taken; null at document level.
        n_positions: OptInt32,
        /// Fraction of those rows where the top-1 tokens agree.
        top1_agreement: OptFloat32,
        /// Mean of `diff.kl_ab`.
        mean_kl: OptFloat32,
        /// Largest `diff.kl_ab`.
        max_kl: OptFloat32,
        /// The position of max_kl (the first, on ties).
        max_kl_position: OptInt32,
        /// Mean of `diff.js`.
        mean_js: OptFloat32,
        /// Largest `diff.js`.
        max_js: OptFloat32,
        /// Mean of `diff.saliency_distance` over the rows that have one.
        mean_saliency_distance: OptFloat32,
        /// Run A's generated text (`generations.output_text`).
        output_text_a: Utf8,
        /// Run B's generated text.
        output_text_b: Utf8,
    }
}

table! {
    /// Summary statistics of every recorded MLP neuron over every position of the
    /// `activations` table (`analyses.neurons`, `tokenlens neurons`; docs/neurons.md).
    "neuron_stats" => NEURON_STATS, NeuronStats, NeuronStatsRow {
        /// Block index, 0-based.
        layer: Int32,
        /// Neuron index within the layer's MLP.
        neuron: Int32,
        /// Positions recorded.
        count: Int64,
        /// Mean activation.
        mean: Float64,
        /// Population standard deviation (ddof 0).
        std: Float64,
        /// Smallest activation.
        min: Float32,
        /// Largest activation.
        max: Float32,
        /// Fraction of the positions where the activation is > 0.
        fraction_active: Float64,
        /// Mean of the activations > 0; null when there are none.
        mean_active: OptFloat64,
    }
}

table! {
    /// Layer similarity (`tokenlens compare`, docs/compare.md): one row per metric,
    /// representation and pair of layers, of run A and run B (or of run A with itself when one
    /// run is compared), over their matched positions or documents. Written into a comparison
    /// directory, and into a run by `analyses.similarity` (the run's layers against each other,
    /// as `tokenlens compare RUN_DIR --pairs all` computes them).
    "similarity" => SIMILARITY, Similarity, SimilarityRow<'a> {
        /// `cka_minibatch` (every layer pair; Nguyen et al. 2021), and over the `--pairs` layer
        /// pairs `cka` (Ecco's linear CKA), `cca`, `svcca` and `pwcca` (Ecco's).
        metric: Utf8,
        /// The representation compared: `residuals` (the residual stream) or `activations`
        /// (MLP neurons).
        source: Utf8,
        /// Run A's directory as given to `tokenlens compare` (in a run's own table: its
        /// `output.dir` as the spec resolves it).
        run_a: Utf8,
        /// The layer of run A: a residual index for `residuals`, a block index for
        /// `activations` (see *layer*).
        layer_a: Int32,
        /// Run B's directory as given (run A's when one run is compared).
        run_b: Utf8,
        /// The layer of run B.
        layer_b: Int32,
        /// The similarity: 1 = the same representation up to the metric's invariances.
        value: Float64,
        /// Rows compared: matched positions, or documents at `--level document`.
        rows: Int64,
    }
}
