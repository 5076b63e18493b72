//! Throughput of the masking scanner on the synthetic corpus (`corpus/`,
//! about 8 MB of tool results): one `Scanner::scan` per document, with all
//! built-in detectors on and with the default set; the person-name
//! detector alone for reference.
//!
//! ```text
//! cargo bench -p mcpgate-broker --bench mask
//! ```
//!
//! The issue's target is 300 MB/s per core with all detectors on. Accuracy
//! on the same corpus: `cargo bench -p mcpgate-broker --bench mask_accuracy`.
//!
//! `message/*` measures what the relay pays per reply: the whole masking
//! of a parsed `tools/call` result (the demo server's `list_customers`, 10
//! and 50 records, structured content and its text copy; and a short
//! `echo` reply with nothing to mask) with the default profile.

mod corpus;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mcpgate_broker::mask::names::find_names;
use mcpgate_broker::mask::{Detector, Scanner};

const SEED: u64 = 1;
const CORPUS_BYTES: usize = 8_000_000;

fn scan(c: &mut Criterion) {
    let docs = corpus::generate(SEED, CORPUS_BYTES);
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let bytes: usize = texts.iter().map(|t| t.len()).sum();

    let mut group = c.benchmark_group("mask");
    group.throughput(Throughput::Bytes(bytes as u64));
    // One iteration scans the whole corpus (tens of milliseconds), so a
    // few samples are enough; the machine has two cores.
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));

    let sets: [(&str, Vec<Detector>); 2] = [
        ("scan/all_detectors", Detector::ALL.to_vec()),
        (
            "scan/default_detectors",
            Detector::ALL
                .into_iter()
                .filter(|d| d.default_on())
                .collect(),
        ),
    ];
    for (name, detectors) in sets {
        let scanner = Scanner::new(detectors);
        let mut out = Vec::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut found = 0;
                for text in &texts {
                    out.clear();
                    scanner.scan(text, &mut out);
                    found += out.len();
                }
                found
            })
        });
    }

    let mut names = Vec::new();
    group.bench_function("find_names", |b| {
        b.iter(|| {
            let mut found = 0;
            for text in &texts {
                names.clear();
                find_names(text, &mut names);
                found += names.len();
            }
            found
        })
    });
    group.finish();
}

fn messages(c: &mut Criterion) {
    use criterion::BatchSize;
    use mcpgate_broker::mask::{MaskKey, Masking, Report};
    use serde_json::{Value, json};

    let masking = Masking::compile(
        &Default::default(),
        &Default::default(),
        &Default::default(),
        MaskKey::new([7; 32]),
    )
    .expect("the default profile compiles");
    let masker = masking
        .profile(mcpgate_broker::mask::DEFAULT_PROFILE)
        .expect("default profile");
    let customers = |n: u32| {
        let structured = json!({
            "customers": (1..=n).map(mcpgate_broker::demo_server::customer).collect::<Vec<_>>(),
            "count": n,
        });
        json!({
            "content": [{"type": "text", "text": structured.to_string()}],
            "structuredContent": structured,
        })
    };
    let echo = json!({"content": [{"type": "text", "text": "Echo: ping 42"}]});
    let mut group = c.benchmark_group("message");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (name, reply) in [
        ("list_customers_10", customers(10)),
        ("list_customers_50", customers(50)),
        ("echo", echo),
    ] {
        let bytes = serde_json::to_vec(&reply).expect("serialises").len();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || reply.clone(),
                |mut value: Value| {
                    let mut report = Report::default();
                    masker
                        .mask_value(&mut value, &mut report, false)
                        .expect("masks");
                    (value, report)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, scan, messages);
criterion_main!(benches);
