use std::path::Path;

use super::*;

fn spec(analyses: &str) -> PipelineSpec {
    let text = format!(
        "model: default\ndataset:\n  path: data/p.jsonl\nanalyses:\n{analyses}output:\n  dir: out\n"
    );
    PipelineSpec::from_yaml(&text, Path::new("pipelines/x.yaml")).unwrap()
}

/// The NMF stage runs after the model is released (`run`), so its layers are resolved from the
/// layer count alone: negative layers count from the model's last block, as they did when the
/// stage was handed the model.
#[test]
fn nmf_layers_resolve_from_the_layer_count() {
    let s = spec("  activations: {layers: [15, -1]}\n  nmf: {n_components: 4, layers: [15, -1]}\n");
    let nmf = nmf_spec(&s, 30).unwrap().expect("the spec has NMF");
    assert_eq!(nmf.layers, Selection::List(vec![15, 29]));
    assert_eq!(nmf.n_components, 4);

    let s = spec("  activations: {layers: all}\n  nmf: {layers: all}\n");
    let nmf = nmf_spec(&s, 3).unwrap().unwrap();
    assert_eq!(nmf.layers, Selection::List(vec![0, 1, 2]));

    let s = spec("  activations: {layers: all}\n  nmf: {layers: [-4]}\n");
    assert!(matches!(
        nmf_spec(&s, 3),
        Err(Error::Selection {
            key: "analyses.nmf.layers",
            ..
        })
    ));

    assert!(
        nmf_spec(&spec("  predictions: {top_k: 2}\n"), 30)
            .unwrap()
            .is_none()
    );
}

/// The neurons stage's layers: a list resolved from the model's layer count, `all` left to mean
/// every layer the activations table has.
#[test]
fn neurons_layers_resolve_from_the_layer_count() {
    let s = spec("  activations: {layers: [1, -1]}\n  neurons: {top_k: 3, layers: [-1]}\n");
    let n = neurons_spec(&s, 30).unwrap().expect("the spec has neurons");
    assert_eq!((n.layers, n.top_k), (Selection::List(vec![29]), 3));
    let s = spec("  activations: {layers: [1, -1]}\n  neurons:\n");
    assert_eq!(
        neurons_spec(&s, 30).unwrap().unwrap().layers,
        Selection::All
    );
    let s = spec("  activations: {layers: all}\n  neurons: {layers: [7]}\n");
    assert!(matches!(
        neurons_spec(&s, 3),
        Err(Error::Selection {
            key: "analyses.neurons.layers",
            ..
        })
    ));
    assert!(
        neurons_spec(&spec("  activations:\n"), 3)
            .unwrap()
            .is_none()
    );
}
