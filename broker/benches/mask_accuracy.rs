//! Accuracy of the masking detectors on the synthetic corpus.
//!
//! Generates the labelled corpus (`corpus/`), scans every document with all
//! built-in detectors on, and scores each type: a finding is a true
//! positive when a label of the same type overlaps it (each label matched
//! at most once). Prints precision and recall per type, flags the
//! pattern-validated types under target (recall < 0.99 or precision <
//! 0.98), says what the false positives hit (another type's value, a hard
//! negative, plain text) with a few examples, and times a plain scan loop.
//!
//! ```text
//! cargo bench -p mcpgate-broker --bench mask_accuracy
//! cargo bench -p mcpgate-broker --bench mask_accuracy -- --seed 7 --dump /tmp/corpus
//! cargo bench -p mcpgate-broker --bench mask_accuracy -- --heldout
//! ```
//!
//! Options after `--`: `--heldout` (score the held-out corpus of
//! `corpus/heldout.rs`, whose templates were written apart from the ones
//! the detectors were tuned on, instead of the tuning corpus: the fair
//! figure), `--seed N` (default 1), `--bytes N` (corpus size,
//! default 8000000), `--dump DIR` (writes `DIR/corpus.jsonl` of the
//! selected corpus, one
//! `{"text", "labels", "negatives"}` object per line, offsets in UTF-8
//! bytes, for `benches/presidio.py`), `--examples N` (per type, default 3),
//! `--scan FILE` (repeatable: instead of the corpus, list what the
//! detectors find in real files, to look for false positives by eye).
//! Unknown flags (cargo passes `--bench`) are ignored.

mod corpus;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use corpus::{Doc, Label};
use mcpgate_broker::mask::names::find_names;
use mcpgate_broker::mask::{Detector, Finding, Scanner};

/// The pattern-validated types the issue sets targets for.
fn target_types() -> Vec<&'static str> {
    Detector::ALL
        .into_iter()
        .filter(|d| d.is_validated())
        .map(Detector::name)
        .collect()
}
const TARGET_RECALL: f64 = 0.99;
const TARGET_PRECISION: f64 = 0.98;

struct Args {
    heldout: bool,
    seed: u64,
    bytes: usize,
    dump: Option<PathBuf>,
    examples: usize,
    scan: Vec<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        heldout: false,
        seed: 1,
        bytes: 8_000_000,
        dump: None,
        examples: 3,
        scan: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--heldout" => args.heldout = true,
            "--seed" => args.seed = number(it.next(), "--seed"),
            "--bytes" => args.bytes = number(it.next(), "--bytes"),
            "--examples" => args.examples = number(it.next(), "--examples"),
            "--scan" => args
                .scan
                .push(PathBuf::from(it.next().expect("--scan needs a file"))),
            "--dump" => {
                args.dump = Some(PathBuf::from(it.next().expect("--dump needs a directory")))
            }
            _ => {}
        }
    }
    args
}

fn number<T: std::str::FromStr>(value: Option<String>, flag: &str) -> T {
    value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{flag} needs a number"))
}

/// Counts for one type.
#[derive(Default)]
struct Score {
    labels: usize,
    found: usize,
    tp: usize,
    exact: usize,
}

impl Score {
    fn precision(&self) -> f64 {
        ratio(self.tp, self.found)
    }

    fn recall(&self) -> f64 {
        ratio(self.tp, self.labels)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// What went wrong, for the report.
#[derive(Default)]
struct Errors {
    /// (found type, what it overlapped) → count; what is another type's
    /// label, `neg:KIND` for a hard negative, or `text`.
    fp_hits: BTreeMap<(&'static str, String), usize>,
    fp_examples: BTreeMap<&'static str, Vec<String>>,
    fn_examples: BTreeMap<&'static str, Vec<String>>,
    /// hard negative kind → (count, flagged).
    negatives: BTreeMap<&'static str, (usize, usize)>,
}

fn main() {
    let args = parse_args();
    if !args.scan.is_empty() {
        scan_files(&args.scan, args.examples);
        return;
    }
    let started = Instant::now();
    let (docs, name) = if args.heldout {
        (
            corpus::heldout::generate_heldout(args.seed, args.bytes),
            "held-out",
        )
    } else {
        (corpus::generate(args.seed, args.bytes), "tuning")
    };
    let generated_in = started.elapsed();
    let total_bytes: usize = docs.iter().map(|d| d.text.len()).sum();

    describe_corpus(&docs, name, total_bytes, args.seed, generated_in);
    if let Some(dir) = &args.dump {
        dump(&docs, dir);
    }

    let scanner = Scanner::new(Detector::ALL);
    let mut scores: BTreeMap<&'static str, Score> = BTreeMap::new();
    let mut errors = Errors::default();
    let mut findings = Vec::new();
    let mut spans = Vec::new();
    for doc in &docs {
        findings.clear();
        scanner.scan(&doc.text, &mut findings);
        spans.clear();
        spans.extend(
            findings
                .iter()
                .map(|f: &Finding| (f.start, f.end, f.detector.name())),
        );
        score_doc(
            doc,
            &doc.labels,
            &spans,
            &mut scores,
            &mut errors,
            args.examples,
        );
    }

    println!("\n== Scanner, all built-in detectors on (Detector::ALL) ==");
    print_table(&scores);
    print_errors(&errors);

    // The person detector on its own, whether or not the scanner calls it.
    let mut name_scores: BTreeMap<&'static str, Score> = BTreeMap::new();
    let mut name_errors = Errors::default();
    let mut names = Vec::new();
    let mut person_labels = Vec::new();
    for doc in &docs {
        names.clear();
        find_names(&doc.text, &mut names);
        spans.clear();
        spans.extend(names.iter().map(|&(s, e)| (s, e, "person")));
        person_labels.clear();
        person_labels.extend(doc.labels.iter().filter(|l| l.kind == "person").copied());
        score_doc(
            doc,
            &person_labels,
            &spans,
            &mut name_scores,
            &mut name_errors,
            args.examples,
        );
    }
    println!("\n== names::find_names alone (person) ==");
    print_table(&name_scores);
    print_errors(&name_errors);

    println!("\n== Throughput (plain timed loop, one scan per document) ==");
    let all = throughput(&docs, total_bytes, |text, out| scanner.scan(text, out));
    let default_scanner = Scanner::new(Detector::ALL.into_iter().filter(|d| d.default_on()));
    let default = throughput(&docs, total_bytes, |text, out| {
        default_scanner.scan(text, out)
    });
    println!("all detectors:     {all:8.1} MB/s");
    println!("default detectors: {default:8.1} MB/s");
    let mut name_out = Vec::new();
    let names_only = throughput(&docs, total_bytes, |text, _| {
        name_out.clear();
        find_names(text, &mut name_out);
    });
    println!("find_names alone:  {names_only:8.1} MB/s");
    println!("(1 MB = 10^6 bytes; single thread; criterion figures: `cargo bench --bench mask`)");
}

/// Real files have no labels: list what every detector finds in them, to
/// eyeball false positives on text the corpus generator never saw.
fn scan_files(paths: &[PathBuf], examples: usize) {
    let scanner = Scanner::new(Detector::ALL);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut shown: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut bytes = 0;
    let mut findings = Vec::new();
    for path in paths {
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("skipped {} (unreadable or not UTF-8)", path.display());
            continue;
        };
        bytes += text.len();
        findings.clear();
        scanner.scan(&text, &mut findings);
        for f in &findings {
            let kind = f.detector.name();
            *counts.entry(kind).or_default() += 1;
            let list = shown.entry(kind).or_default();
            if list.len() < examples {
                list.push(format!(
                    "{}: {}",
                    path.display(),
                    excerpt(&text, f.start, f.end)
                ));
            }
        }
    }
    println!(
        "scanned {} files, {bytes} bytes; findings per type: {}",
        paths.len(),
        join_counts(&counts)
    );
    for (kind, list) in &shown {
        for e in list {
            println!("  {kind:<16} {e}");
        }
    }
}

fn describe_corpus(docs: &[Doc], name: &str, total_bytes: usize, seed: u64, took: Duration) {
    let mut labels: BTreeMap<&str, usize> = BTreeMap::new();
    let mut negatives: BTreeMap<&str, usize> = BTreeMap::new();
    let mut shapes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for doc in docs {
        let shape = shapes.entry(doc.shape).or_default();
        shape.0 += 1;
        shape.1 += doc.text.len();
        for l in &doc.labels {
            *labels.entry(l.kind).or_default() += 1;
        }
        for n in &doc.negatives {
            *negatives.entry(n.kind).or_default() += 1;
        }
    }
    println!(
        "corpus: {name}, seed {seed}, {} documents, {total_bytes} bytes, {} labels, {} hard negatives (generated in {:.2?})",
        docs.len(),
        labels.values().sum::<usize>(),
        negatives.values().sum::<usize>(),
        took
    );
    let shapes: Vec<String> = shapes
        .iter()
        .map(|(k, (n, bytes))| format!("{k} {n} ({bytes} bytes)"))
        .collect();
    println!("shapes:    {}", shapes.join(", "));
    println!("labels:    {}", join_counts(&labels));
    println!("negatives: {}", join_counts(&negatives));
}

fn join_counts(counts: &BTreeMap<&str, usize>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn dump(docs: &[Doc], dir: &PathBuf) {
    std::fs::create_dir_all(dir).expect("create dump directory");
    let path = dir.join("corpus.jsonl");
    let file = std::fs::File::create(&path).expect("create corpus.jsonl");
    let mut w = std::io::BufWriter::new(file);
    let spans = |labels: &[Label]| -> Vec<serde_json::Value> {
        labels
            .iter()
            .map(|l| serde_json::json!({"start": l.start, "end": l.end, "kind": l.kind}))
            .collect()
    };
    for doc in docs {
        let line = serde_json::json!({
            "text": doc.text,
            "labels": spans(&doc.labels),
            "negatives": spans(&doc.negatives),
        });
        serde_json::to_writer(&mut w, &line).expect("write corpus.jsonl");
        w.write_all(b"\n").expect("write corpus.jsonl");
    }
    w.flush().expect("write corpus.jsonl");
    println!("dumped {} documents to {}", docs.len(), path.display());
}

/// Scores the `found` spans `(start, end, type)` of one document against
/// `labels` (all of the document's, or those of one type) and notes which
/// hard negatives they hit.
fn score_doc(
    doc: &Doc,
    labels: &[Label],
    found: &[(usize, usize, &'static str)],
    scores: &mut BTreeMap<&'static str, Score>,
    errors: &mut Errors,
    examples: usize,
) {
    let mut matched = vec![false; labels.len()];
    for l in labels {
        scores.entry(l.kind).or_default().labels += 1;
    }
    for &(start, end, kind) in found {
        let score = scores.entry(kind).or_default();
        score.found += 1;
        // Labels do not overlap, so their ends are sorted too.
        let first = labels.partition_point(|l| l.end <= start);
        let overlapping = (first..labels.len()).take_while(|&i| labels[i].start < end);
        let mut hit = None;
        let mut other = None;
        for i in overlapping {
            if labels[i].kind == kind && !matched[i] {
                hit = Some(i);
                break;
            }
            other.get_or_insert(i);
        }
        if let Some(i) = hit {
            matched[i] = true;
            score.tp += 1;
            if labels[i].start == start && labels[i].end == end {
                score.exact += 1;
            }
            continue;
        }
        let what = match other {
            Some(i) if labels[i].kind == kind => "same type, already matched".to_string(),
            Some(i) => labels[i].kind.to_string(),
            None => match doc
                .negatives
                .iter()
                .find(|n| n.start < end && start < n.end)
            {
                Some(n) => format!("neg:{}", n.kind),
                None => "text".to_string(),
            },
        };
        *errors.fp_hits.entry((kind, what)).or_default() += 1;
        let list = errors.fp_examples.entry(kind).or_default();
        if list.len() < examples {
            list.push(excerpt(&doc.text, start, end));
        }
    }
    for (l, &m) in labels.iter().zip(&matched) {
        if !m {
            let list = errors.fn_examples.entry(l.kind).or_default();
            if list.len() < examples {
                list.push(excerpt(&doc.text, l.start, l.end));
            }
        }
    }
    for n in &doc.negatives {
        let entry = errors.negatives.entry(n.kind).or_default();
        entry.0 += 1;
        if found.iter().any(|&(s, e, _)| s < n.end && n.start < e) {
            entry.1 += 1;
        }
    }
}

/// `…before[value]after…` on one line, at most a few dozen chars of context.
fn excerpt(text: &str, start: usize, end: usize) -> String {
    let before = floor_char(text, start.saturating_sub(30));
    let after = ceil_char(text, (end + 30).min(text.len()));
    let value = if end - start > 120 {
        format!(
            "{}…{}",
            &text[start..floor_char(text, start + 50)],
            &text[ceil_char(text, end - 50)..end]
        )
    } else {
        text[start..end].to_string()
    };
    format!("{}[{}]{}", &text[before..start], value, &text[end..after])
        .replace('\n', "⏎")
        .replace('\u{200b}', "<ZWSP>")
        .replace('\u{2060}', "<WJ>")
        .replace('\u{200d}', "<ZWJ>")
        .replace('\u{feff}', "<BOM>")
}

fn floor_char(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

fn print_table(scores: &BTreeMap<&'static str, Score>) {
    println!(
        "{:<16} {:>7} {:>7} {:>7} {:>6} {:>6} {:>9} {:>7} {:>6}",
        "type", "labels", "found", "TP", "FP", "FN", "precision", "recall", "exact"
    );
    let mut order: Vec<&str> = Detector::ALL.iter().map(|d| d.name()).collect();
    order.extend(scores.keys().filter(|k| Detector::from_name(k).is_none()));
    for kind in order {
        let Some(s) = scores.get(kind) else { continue };
        let flag = if target_types().contains(&kind) {
            if s.recall() < TARGET_RECALL || s.precision() < TARGET_PRECISION {
                "  << under target"
            } else {
                "  ok"
            }
        } else {
            ""
        };
        println!(
            "{:<16} {:>7} {:>7} {:>7} {:>6} {:>6} {:>9.4} {:>7.4} {:>5.0}%{}",
            kind,
            s.labels,
            s.found,
            s.tp,
            s.found - s.tp,
            s.labels - s.tp,
            s.precision(),
            s.recall(),
            100.0 * ratio(s.exact, s.tp),
            flag
        );
    }
    let targets: Vec<&str> = target_types()
        .iter()
        .copied()
        .filter(|k| {
            scores
                .get(k)
                .is_some_and(|s| s.recall() < TARGET_RECALL || s.precision() < TARGET_PRECISION)
        })
        .collect();
    if !target_types().iter().any(|k| scores.contains_key(k)) {
        // No pattern-validated type in this table.
    } else if targets.is_empty() {
        println!("targets (recall >= {TARGET_RECALL}, precision >= {TARGET_PRECISION}): all met");
    } else {
        println!("under target: {}", targets.join(", "));
    }
    println!("(exact = findings whose byte range equals the label's, among TP)");
}

fn print_errors(errors: &Errors) {
    if !errors.fp_hits.is_empty() {
        println!("\nfalse positives by what they hit (found type <- hit: count):");
        for ((kind, what), n) in &errors.fp_hits {
            println!("  {kind:<16} <- {what}: {n}");
        }
    }
    for (title, examples) in [
        ("false positives", &errors.fp_examples),
        ("misses", &errors.fn_examples),
    ] {
        if examples.is_empty() {
            continue;
        }
        println!("\n{title}, examples:");
        for (kind, list) in examples {
            for e in list {
                println!("  {kind:<16} {e}");
            }
        }
    }
    if !errors.negatives.is_empty() {
        let (flagged, clean): (Vec<_>, Vec<_>) = errors
            .negatives
            .iter()
            .partition(|(_, (_, flagged))| *flagged > 0);
        println!("\nhard negatives flagged by a detector (kind flagged/total):");
        let line: Vec<String> = flagged
            .iter()
            .map(|(k, (total, flagged))| format!("{k} {flagged}/{total}"))
            .collect();
        println!(
            "  {}",
            if line.is_empty() {
                "none".to_string()
            } else {
                line.join(", ")
            }
        );
        let line: Vec<String> = clean
            .iter()
            .map(|(k, (total, _))| format!("{k} {total}"))
            .collect();
        println!("never flagged: {}", line.join(", "));
    }
}

/// MB/s of scanning every document once per round, best of a few rounds
/// (at least half a second in all).
fn throughput(
    docs: &[Doc],
    total_bytes: usize,
    mut scan: impl FnMut(&str, &mut Vec<Finding>),
) -> f64 {
    let mut out = Vec::new();
    let mut best = Duration::MAX;
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 3 || (started.elapsed() < Duration::from_millis(500) && rounds < 50) {
        let t = Instant::now();
        for doc in docs {
            out.clear();
            scan(&doc.text, &mut out);
        }
        best = best.min(t.elapsed());
        rounds += 1;
    }
    std::hint::black_box(&out);
    total_bytes as f64 / 1e6 / best.as_secs_f64()
}
