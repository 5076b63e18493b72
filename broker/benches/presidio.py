#!/usr/bin/env python3
"""Presidio's pattern recognizers on the masking corpus, side by side with mcpgate.

Scores Microsoft Presidio (PyPI `presidio-analyzer`) on the same labelled
corpus as `benches/mask_accuracy.rs`, with the same rule: a finding is a true
positive when a label of the same type overlaps it, each label matched at
most once. Only Presidio's pattern recognizers run (credit card, US SSN, IBAN,
email, IP, phone): no NLP engine and no spaCy model, so no context
enhancement and no PERSON. Presidio has no recognizer for API keys, tokens,
JWTs or private keys; those rows say n/a. Also times a plain Python `re` pass
with comparable patterns (no checksum validation) and scores it.

How to run (never in CI; the venv lives outside the repository):

    python3 -m venv /tmp/presidio-venv
    /tmp/presidio-venv/bin/pip install presidio-analyzer
    cargo bench -p mcpgate-broker --bench mask_accuracy -- --dump /tmp/mask-corpus
    /tmp/presidio-venv/bin/python broker/benches/presidio.py /tmp/mask-corpus/corpus.jsonl

Options: `--max-bytes N` scores only the first documents up to N bytes
(Presidio's phone recognizer is slow); `--threshold S` drops Presidio results
scoring below S (default 0, as `AnalyzerEngine` does).

Offsets in corpus.jsonl are UTF-8 byte offsets; Python strings index code
points, so labels are converted before scoring.
"""

import argparse
import json
import re
import sys
import time
from collections import defaultdict

# Presidio entity -> our label kind (IP_ADDRESS split by shape below).
ENTITY_KIND = {
    "CREDIT_CARD": "card",
    "US_SSN": "ssn",
    "IBAN_CODE": "iban",
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
}
PRESIDIO_KINDS = {"card", "ssn", "iban", "email", "phone", "ipv4", "ipv6"}
TARGET_KINDS = [
    "card", "ssn", "iban", "email", "aws_access_key", "github_token", "gitlab_token",
    "slack_token", "stripe_key", "npm_token", "pypi_token", "google_api_key", "jwt",
    "private_key",
]
ORDER = [
    "card", "ssn", "iban", "email", "phone", "ipv4", "ipv6", "aws_access_key",
    "github_token", "gitlab_token", "slack_token", "stripe_key", "npm_token",
    "pypi_token", "google_api_key", "jwt", "private_key", "url_password", "secret",
    "person",
]

# A plain regex pass: one pattern per type, the shapes only (no Luhn, mod-97
# or SSN ranges), roughly what a hand-written scanner starts from.
SEP = "[ \\-.\u200b\u200d\u2060\ufeff]?"
PLAIN_PATTERNS = {
    "card": r"(?<![\w])(?:\d" + SEP + "){12,18}\\d(?![\\w])",
    "ssn": r"(?<![\w])\d{3}[- .]?\d{2}[- .]?\d{4}(?![\w])",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
    "email": r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}",
    "ipv4": r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
    "ipv6": r"(?<![\w:.])(?:"
            r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
            r"|(?:[0-9A-Fa-f]{1,4}:){1,6}(?::[0-9A-Fa-f]{1,4}){1,6}"
            r"|(?:[0-9A-Fa-f]{1,4}:){1,7}:"
            r"|::(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4}"
            r")(?![\w:])",
    "aws_access_key": r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})\b",
    "gitlab_token": r"\bglpat-[A-Za-z0-9_\-]{20}",
    "slack_token": r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
    "stripe_key": r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{24,99}\b",
    "npm_token": r"\bnpm_[A-Za-z0-9]{36}\b",
    "pypi_token": r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}",
    "google_api_key": r"\bAIza[A-Za-z0-9_\-]{35}",
    "jwt": r"\beyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+",
    "private_key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
}


def load(path, max_bytes):
    docs = []
    total = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            text = doc["text"]
            raw = text.encode("utf-8")
            # byte offset -> code point index
            index = {}
            b = 0
            for i, ch in enumerate(text):
                index[b] = i
                b += len(ch.encode("utf-8"))
            index[b] = len(text)
            labels = [(index[l["start"]], index[l["end"]], l["kind"]) for l in doc["labels"]]
            for (s, e, k), l in zip(labels, doc["labels"]):
                assert text[s:e].encode("utf-8") == raw[l["start"]:l["end"]], (k, s, e)
            negatives = [(index[n["start"]], index[n["end"]], n["kind"]) for n in doc.get("negatives", [])]
            docs.append((text, sorted(labels), negatives))
            total += len(raw)
            if max_bytes and total >= max_bytes:
                break
    return docs, total


def score(docs, findings_per_doc):
    """Per kind: labels, found, tp; plus what false positives hit."""
    stats = defaultdict(lambda: {"labels": 0, "found": 0, "tp": 0})
    fp_hits = defaultdict(int)
    for (text, labels, negatives), found in zip(docs, findings_per_doc):
        matched = [False] * len(labels)
        for _, _, kind in labels:
            stats[kind]["labels"] += 1
        for start, end, kind in found:
            stats[kind]["found"] += 1
            hit = None
            other = None
            for i, (ls, le, lk) in enumerate(labels):
                if ls < end and start < le:
                    if lk == kind and not matched[i]:
                        hit = i
                        break
                    if other is None:
                        other = lk
            if hit is not None:
                matched[hit] = True
                stats[kind]["tp"] += 1
                continue
            if other is None:
                neg = next((nk for ns, ne, nk in negatives if ns < end and start < ne), None)
                other = "neg:" + neg if neg else "text"
            fp_hits[(kind, other)] += 1
    return stats, fp_hits


def presidio_findings(docs, threshold):
    # The email recognizer checks the domain with tldextract, which would
    # fetch the public suffix list over the network; use its bundled copy.
    import tldextract

    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    from presidio_analyzer import EntityRecognizer
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    recognizers = [
        CreditCardRecognizer(),
        UsSsnRecognizer(),
        IbanRecognizer(),
        EmailRecognizer(),
        IpRecognizer(),
        PhoneRecognizer(),
    ]
    per_doc = []
    timings = defaultdict(float)
    started = time.perf_counter()
    for text, _, _ in docs:
        results = []
        for r in recognizers:
            t = time.perf_counter()
            results.extend(r.analyze(text, r.supported_entities, nlp_artifacts=None))
            timings[type(r).__name__] += time.perf_counter() - t
        # What AnalyzerEngine does with overlapping results of one type.
        results = EntityRecognizer.remove_duplicates(results)
        found = []
        for res in results:
            if res.score < threshold:
                continue
            if res.entity_type == "IP_ADDRESS":
                kind = "ipv6" if ":" in text[res.start:res.end] else "ipv4"
            else:
                kind = ENTITY_KIND.get(res.entity_type)
            if kind:
                found.append((res.start, res.end, kind))
        per_doc.append(sorted(found))
    elapsed = time.perf_counter() - started
    return per_doc, elapsed, timings


def plain_regex_findings(docs):
    combined = re.compile("|".join(f"(?P<{k}>{p})" for k, p in PLAIN_PATTERNS.items()))
    per_doc = []
    started = time.perf_counter()
    for text, _, _ in docs:
        per_doc.append([(m.start(), m.end(), m.lastgroup) for m in combined.finditer(text)])
    return per_doc, time.perf_counter() - started


def print_table(title, stats, kinds_covered):
    print(f"\n== {title} ==")
    print(f"{'type':<16} {'labels':>7} {'found':>7} {'TP':>7} {'FP':>6} {'FN':>6} {'precision':>9} {'recall':>7}")
    for kind in ORDER:
        s = stats.get(kind)
        if s is None:
            continue
        if kind not in kinds_covered:
            print(f"{kind:<16} {s['labels']:>7}       -       -      -      -       n/a     n/a")
            continue
        p = s["tp"] / s["found"] if s["found"] else 1.0
        r = s["tp"] / s["labels"] if s["labels"] else 1.0
        flag = ""
        if kind in TARGET_KINDS:
            flag = "  << under target" if (r < 0.99 or p < 0.98) else "  ok"
        print(f"{kind:<16} {s['labels']:>7} {s['found']:>7} {s['tp']:>7} {s['found'] - s['tp']:>6} "
              f"{s['labels'] - s['tp']:>6} {p:>9.4f} {r:>7.4f}{flag}")


def print_fp_hits(fp_hits, limit=12):
    if not fp_hits:
        return
    print("false positives by what they hit (top):")
    for (kind, what), n in sorted(fp_hits.items(), key=lambda kv: -kv[1])[:limit]:
        print(f"  {kind:<16} <- {what}: {n}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", help="corpus.jsonl written by mask_accuracy --dump")
    ap.add_argument("--max-bytes", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.0)
    args = ap.parse_args()

    docs, total = load(args.corpus, args.max_bytes)
    mb = total / 1e6
    print(f"corpus: {len(docs)} documents, {total} bytes")

    try:
        import presidio_analyzer  # noqa: F401
        from importlib.metadata import version
    except ImportError:
        print("presidio-analyzer is not installed (see the header of this file)", file=sys.stderr)
        return 1
    findings, elapsed, timings = presidio_findings(docs, args.threshold)
    stats, fp_hits = score(docs, findings)
    print_table(f"Presidio {version('presidio-analyzer')} pattern recognizers "
                f"(score >= {args.threshold})", stats, PRESIDIO_KINDS)
    print_fp_hits(fp_hits)
    print(f"Presidio throughput: {mb / elapsed:.2f} MB/s ({elapsed:.1f} s for {mb:.1f} MB)")
    for name, t in sorted(timings.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<22} {mb / t:8.2f} MB/s alone")

    findings, elapsed = plain_regex_findings(docs)
    stats, fp_hits = score(docs, findings)
    print_table("plain Python re, one alternation, no validation", stats, set(PLAIN_PATTERNS))
    print_fp_hits(fp_hits)
    print(f"plain re throughput: {mb / elapsed:.2f} MB/s ({elapsed:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
