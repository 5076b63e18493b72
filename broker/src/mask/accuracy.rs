//! The accuracy targets as a regression test: the labelled corpus of
//! `benches/corpus` (another seed than the benchmark's), every built-in
//! detector on, scored the way `cargo bench --bench mask_accuracy` scores.
//! The targets (recall ≥ 0.99, precision ≥ 0.98) hold for every type
//! [`Detector::is_validated`]. Speed is the benchmark's business; this only fails when a detector
//! starts missing values or flagging look-alikes.

use std::collections::BTreeMap;

use super::{Detector, Scanner};

#[path = "../../benches/corpus/mod.rs"]
mod corpus;

#[derive(Debug, Default)]
struct Tally {
    labels: u64,
    found: u64,
    true_positives: u64,
    matched_labels: u64,
}

#[test]
fn validated_types_meet_the_targets_on_the_labelled_corpus() {
    let docs = corpus::generate(20261124, 600_000);
    let scanner = Scanner::new(Detector::ALL);
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut findings = Vec::new();
    for doc in &docs {
        findings.clear();
        scanner.scan(&doc.text, &mut findings);
        let mut used = vec![false; doc.labels.len()];
        for f in &findings {
            let kind = f.detector.name();
            let t = tallies.entry(kind).or_default();
            t.found += 1;
            // A true positive overlaps a label of its type; each label
            // counts once.
            let hit =
                doc.labels.iter().enumerate().find(|(i, l)| {
                    !used[*i] && l.kind == kind && l.start < f.end && f.start < l.end
                });
            if let Some((i, _)) = hit {
                used[i] = true;
                t.true_positives += 1;
                t.matched_labels += 1;
            }
        }
        for l in &doc.labels {
            tallies.entry(l.kind).or_default().labels += 1;
        }
    }
    let mut misses = Vec::new();
    let validated = Detector::ALL.into_iter().filter(|d| d.is_validated());
    for kind in validated.map(Detector::name) {
        let t = tallies
            .get(kind)
            .expect("the corpus has every validated type");
        assert!(t.labels > 20, "too few {kind} labels to score: {t:?}");
        let recall = t.matched_labels as f64 / t.labels as f64;
        let precision = t.true_positives as f64 / t.found.max(1) as f64;
        if recall < 0.99 || precision < 0.98 {
            misses.push(format!(
                "{kind}: recall {recall:.4}, precision {precision:.4} ({t:?})"
            ));
        }
    }
    assert!(misses.is_empty(), "under target:\n{}", misses.join("\n"));
}
