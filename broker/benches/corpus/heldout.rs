//! A held-out labelled corpus: the fair measure of the masking detectors.
//!
//! The corpus in `mod.rs` is the one the detectors were tuned against: its
//! values change with the seed, its templates do not, so a perfect score on
//! it is an upper bound. The templates here were written independently of
//! those and of the detectors' code, after what MCP tool results look like:
//! CSV exports, Markdown reports and tables, HTML pages, YAML / INI / .env /
//! properties / tfvars / WireGuard configs, stack traces (Python, Java,
//! Node, Go, Rails), HTTP dumps (`curl -v`, raw exchanges, `http.client`
//! debug output, HAR entries, webhook deliveries), e-mail and chat threads,
//! SQL results as text tables and dumps, `kubectl` / `docker` / `helm`
//! output, nested JSON API responses and `git` output. Values sit quoted, in
//! URLs and query strings, in parentheses, at line ends and next to
//! punctuation; value generators are separate too (other phone layouts,
//! IBAN countries, name lists, e-mail domains, JWT claims, secret shapes).
//!
//! Hard negatives are new as well: ISBN-10/13, EAN-13 barcodes, IMEIs and
//! ICCIDs (Luhn-valid, but no card brand's prefix), card-shaped numbers
//! failing Luhn, masked cards, phone-like part numbers, 10-digit IDs and
//! epoch seconds, semver ranges, IP-shaped OIDs and versions, dotted quads
//! out of range, dates in many formats, hashes of several lengths, base64
//! and hex blobs, ULIDs, KSUIDs, ObjectIds, snowflake IDs, AWS unique IDs and
//! ARNs, Slack and Stripe object IDs, BICs and VAT numbers, Message-IDs and
//! `git@host:` remotes, MAC addresses, colon-separated hex words, secret
//! references and placeholders (`(sensitive value)`, `[FILTERED]`,
//! `${{ secrets.X }}`), config parameters under secret-like names
//! (`max_tokens`, `token_endpoint_auth_method`), public keys and
//! certificates, and capitalised phrases that start with a first name.
//!
//! Labelling conventions are those of `mod.rs`; where a case is new:
//! - a token with a format of its own in a URL's password position
//!   (`https://x-access-token:ghs_…@github.com`) is labelled with its format;
//! - an `Authorization: Bearer`/`Basic` credential without a format, and the
//!   value of an `X-Api-Key`-like header, are `secret`;
//! - a base64-encoded value under a secret-like key (Kubernetes `data:`) is
//!   `secret`, and so is the value after "password is" / "Passwort:" in prose;
//! - a 13–19 digit Luhn-valid number without a card brand's prefix (IMEI,
//!   ICCID) is a negative, as the README defines `card` by brand prefixes;
//! - `Last, First` is one person label, comma included;
//! - Message-IDs and `git@github.com:` remotes are negatives (not anyone's
//!   address), and so are e-mail-like package specs.
//!
//! [`generate_heldout`] runs the same self-check as `generate`, plus checks
//! of the new negative kinds (and that no negative is a valid card, SSN or
//! IBAN by accident).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{
    B, Doc, Gen, ascii_fold, base62_crc32, check, iban_mod97, luhn_check_digit, luhn_valid,
};

/// Held-out documents until their texts add up to at least `target_bytes`.
/// The same seed gives the same corpus; it shares no stream with
/// [`super::generate`] for the same seed.
pub fn generate_heldout(seed: u64, target_bytes: usize) -> Vec<Doc> {
    let mut h = H(Gen {
        rng: StdRng::seed_from_u64(seed ^ 0x4845_4c44_4f55_5421),
    });
    let mut docs = Vec::new();
    let mut total = 0;
    while total < target_bytes {
        let doc = match h.range(0..100) {
            0..10 => h.csv_export(),
            10..18 => h.markdown_doc(),
            18..26 => h.html_page(),
            26..38 => h.config_file(),
            38..46 => h.stack_trace(),
            46..56 => h.http_dump(),
            56..66 => h.thread(),
            66..74 => h.sql_output(),
            74..84 => h.cluster_output(),
            84..94 => h.api_json(),
            _ => h.git_output(),
        };
        check(&doc);
        check_heldout(&doc);
        total += doc.text.len();
        docs.push(doc);
    }
    docs
}

// ---- building blocks: parts, table cells, JSON trees ----

/// A piece of text: plain, a label, or a hard negative.
enum Part {
    T(String),
    P(&'static str, String),
    N(&'static str, String),
}

type Cell = Vec<Part>;

fn t(s: impl Into<String>) -> Cell {
    vec![Part::T(s.into())]
}

fn p(kind: &'static str, s: impl Into<String>) -> Cell {
    vec![Part::P(kind, s.into())]
}

fn n(kind: &'static str, s: impl Into<String>) -> Cell {
    vec![Part::N(kind, s.into())]
}

fn emit(b: &mut B, parts: &[Part]) {
    for part in parts {
        match part {
            Part::T(s) => b.s(s),
            Part::P(kind, s) => b.pii(kind, s),
            Part::N(kind, s) => b.neg(kind, s),
        }
    }
}

fn width(parts: &[Part]) -> usize {
    parts
        .iter()
        .map(|p| match p {
            Part::T(s) | Part::P(_, s) | Part::N(_, s) => s.chars().count(),
        })
        .sum()
}

fn pad(b: &mut B, n: usize) {
    b.s(&" ".repeat(n));
}

/// `psql` output: centred headers, `-+-` rule, `(N rows)`.
fn render_psql(b: &mut B, headers: &[&str], rows: &[Vec<Cell>]) {
    let widths = col_widths(headers, rows);
    for (i, h) in headers.iter().enumerate() {
        b.s(if i == 0 { " " } else { " | " });
        let room = widths[i] - h.chars().count();
        pad(b, room / 2);
        b.s(h);
        pad(b, room - room / 2);
    }
    b.s("\n");
    for (i, w) in widths.iter().enumerate() {
        b.s(if i == 0 { "-" } else { "-+-" });
        b.s(&"-".repeat(*w));
    }
    b.s("-\n");
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            b.s(if i == 0 { " " } else { " | " });
            emit(b, c);
            if i + 1 < row.len() {
                pad(b, widths[i] - width(c));
            }
        }
        b.s("\n");
    }
    b.s(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
}

/// `mysql` client output: `+---+` borders.
fn render_mysql(b: &mut B, headers: &[&str], rows: &[Vec<Cell>]) {
    let widths = col_widths(headers, rows);
    let rule = |b: &mut B| {
        for w in &widths {
            b.s("+");
            b.s(&"-".repeat(w + 2));
        }
        b.s("+\n");
    };
    rule(b);
    for (i, h) in headers.iter().enumerate() {
        b.s("| ");
        b.s(h);
        pad(b, widths[i] - h.chars().count() + 1);
    }
    b.s("|\n");
    rule(b);
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            b.s("| ");
            emit(b, c);
            pad(b, widths[i] - width(c) + 1);
        }
        b.s("|\n");
    }
    rule(b);
}

/// A GitHub-flavoured Markdown table.
fn render_markdown(b: &mut B, headers: &[&str], rows: &[Vec<Cell>], aligned: bool) {
    let widths = col_widths(headers, rows);
    for (i, h) in headers.iter().enumerate() {
        b.s("| ");
        b.s(h);
        if aligned {
            pad(b, widths[i] - h.chars().count());
        }
        b.s(" ");
    }
    b.s("|\n");
    for w in &widths {
        b.s("|");
        b.s(&"-".repeat(if aligned { w + 2 } else { 3 }));
    }
    b.s("|\n");
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            b.s("| ");
            emit(b, c);
            if aligned {
                pad(b, widths[i] - width(c));
            }
            b.s(" ");
        }
        b.s("|\n");
    }
}

/// `kubectl get` / `docker ps` columns: upper-case headers, 3 spaces.
fn render_columns(b: &mut B, headers: &[&str], rows: &[Vec<Cell>]) {
    let widths = col_widths(headers, rows);
    for (i, h) in headers.iter().enumerate() {
        b.s(h);
        if i + 1 < headers.len() {
            pad(b, widths[i] - h.chars().count() + 3);
        }
    }
    b.s("\n");
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            emit(b, c);
            if i + 1 < row.len() {
                pad(b, widths[i] - width(c) + 3);
            }
        }
        b.s("\n");
    }
}

/// CSV with RFC 4180 quoting where needed (or everywhere).
fn render_csv(b: &mut B, headers: &[&str], rows: &[Vec<Cell>], delim: &str, quote_all: bool) {
    b.s(&headers.join(delim));
    b.s("\r\n");
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                b.s(delim);
            }
            let needs = quote_all && width(c) > 0
                || c.iter().any(|p| match p {
                    Part::T(s) | Part::P(_, s) | Part::N(_, s) => s.contains(delim),
                });
            if needs {
                b.s("\"");
            }
            emit(b, c);
            if needs {
                b.s("\"");
            }
        }
        b.s("\r\n");
    }
}

fn render_html_table(b: &mut B, headers: &[&str], rows: &[Vec<Cell>]) {
    b.s("<table class=\"data\">\n  <thead><tr>");
    for h in headers {
        b.s("<th>");
        b.s(h);
        b.s("</th>");
    }
    b.s("</tr></thead>\n  <tbody>\n");
    for row in rows {
        b.s("    <tr>");
        for c in row {
            b.s("<td>");
            emit(b, c);
            b.s("</td>");
        }
        b.s("</tr>\n");
    }
    b.s("  </tbody>\n</table>\n");
}

fn col_widths(headers: &[&str], rows: &[Vec<Cell>]) -> Vec<usize> {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(width(c));
        }
    }
    w
}

/// A JSON value whose strings may hold labels. Strings are emitted as
/// given (already escaped: a PEM key in JSON carries `\\n`).
enum J {
    S(Vec<Part>),
    R(Vec<Part>),
    O(Vec<(String, J)>),
    A(Vec<J>),
}

fn js(s: impl Into<String>) -> J {
    J::S(t(s))
}

fn jp(kind: &'static str, s: impl Into<String>) -> J {
    J::S(p(kind, s))
}

fn jn(kind: &'static str, s: impl Into<String>) -> J {
    J::S(n(kind, s))
}

fn jr(s: impl Into<String>) -> J {
    J::R(t(s))
}

fn obj(fields: Vec<(&str, J)>) -> J {
    J::O(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// Writes `v`; `indent` is `Some(step)` for pretty output, `None` compact.
fn emit_json(b: &mut B, v: &J, indent: Option<usize>, level: usize) {
    let nl = |b: &mut B, level: usize| {
        if let Some(step) = indent {
            b.s("\n");
            pad(b, step * level);
        }
    };
    match v {
        J::S(parts) => {
            b.s("\"");
            emit(b, parts);
            b.s("\"");
        }
        J::R(parts) => emit(b, parts),
        J::O(fields) => {
            if fields.is_empty() {
                b.s("{}");
                return;
            }
            b.s("{");
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    b.s(",");
                }
                nl(b, level + 1);
                b.s("\"");
                b.s(k);
                b.s(if indent.is_some() { "\": " } else { "\":" });
                emit_json(b, v, indent, level + 1);
            }
            nl(b, level);
            b.s("}");
        }
        J::A(items) => {
            if items.is_empty() {
                b.s("[]");
                return;
            }
            b.s("[");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    b.s(",");
                }
                nl(b, level + 1);
                emit_json(b, v, indent, level + 1);
            }
            nl(b, level);
            b.s("]");
        }
    }
}

// ---- the generator ----

/// The held-out generator: its own templates and values, on the tuning
/// generator's random primitives (`range`, `chance`, `pick`, `chars`, …),
/// reached through `Deref`. Its own methods win over the tuning
/// generator's of the same name.
struct H(Gen);

impl std::ops::Deref for H {
    type Target = Gen;
    fn deref(&self) -> &Gen {
        &self.0
    }
}

impl std::ops::DerefMut for H {
    fn deref_mut(&mut self) -> &mut Gen {
        &mut self.0
    }
}

const DIGITS: &[u8] = b"0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Password characters: nothing that ends a quoted string, an INI or YAML
/// value, a CSV or Markdown cell, or reads as a placeholder or an address.
const PW_CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!#%*?-_.";
/// Characters of a URL's userinfo password (unreserved and a few sub-delims).
const URL_PW_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~!*";

const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: &[&str] = &["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Well-known test card numbers (all pass Luhn: labelled `card`).
const TEST_CARDS: &[&str] = &[
    "4111111111111111",
    "4242424242424242",
    "4012888888881881",
    "4000056655665556",
    "5555555555554444",
    "5105105105105100",
    "2223003122003222",
    "378282246310005",
    "371449635398431",
    "6011111111111117",
    "6011000990139424",
    "3530111333300000",
    "3566002020360505",
    "30569309025904",
];

impl H {
    /// `n` digits, the first not zero.
    fn number(&mut self, n: usize) -> String {
        format!("{}{}", self.range(1..10), self.digits(n - 1))
    }

    // ---- people and contact details ----

    fn first(&mut self) -> &'static str {
        self.pick(FIRST)
    }

    fn last(&mut self) -> &'static str {
        self.pick(LAST)
    }

    fn full_name(&mut self) -> String {
        let f = self.first();
        let l = self.last();
        match self.range(0..24) {
            0 => format!("{f} {}. {l}", char::from(self.pick(UPPER))),
            1 => format!("{f} {} {l}", self.first()),
            _ => format!("{f} {l}"),
        }
    }

    /// A name and an address that goes with it.
    fn person_with_email(&mut self) -> (String, String) {
        let f = self.first();
        let l = self.last();
        let name = if self.chance(0.08) {
            format!("{f} {}. {l}", char::from(self.pick(UPPER)))
        } else {
            format!("{f} {l}")
        };
        let email = self.email_for(f, l);
        (name, email)
    }

    fn email_for(&mut self, first: &str, last: &str) -> String {
        let f = fold(first);
        let l = fold(last);
        let local = match self.range(0..10) {
            0..3 => format!("{f}.{l}"),
            3 => format!("{}.{l}", &f[..1]),
            4 => format!("{l}{}", &f[..1]),
            5 => format!("{f}{l}{}", self.range(1..100)),
            6 => format!("{f}-{l}"),
            7 => f.clone(),
            8 => format!("{l}.{f}"),
            _ => format!(
                "{f}.{l}+{}",
                self.pick(&["invoices", "github", "crm", "2fa"])
            ),
        };
        let domain = self.pick(DOMAINS);
        if self.chance(0.05) {
            // As typed by a human: capitals in the local part and domain.
            let mut local = local;
            local[..1].make_ascii_uppercase();
            let mut domain = domain.to_string();
            domain[..1].make_ascii_uppercase();
            format!("{local}@{domain}")
        } else {
            format!("{local}@{domain}")
        }
    }

    fn email(&mut self) -> String {
        match self.range(0..10) {
            0 => format!(
                "{}@{}",
                self.pick(&[
                    "billing",
                    "security",
                    "dpo",
                    "accounts-payable",
                    "it.helpdesk",
                    "no-reply",
                    "postmaster",
                    "team+alerts",
                ]),
                self.pick(DOMAINS)
            ),
            1 => format!(
                "{}+{}@users.noreply.github.com",
                self.number(8),
                self.chars_in(4..12, LOWER_ALNUM)
            ),
            _ => {
                let f = self.first();
                let l = self.last();
                self.email_for(f, l)
            }
        }
    }

    /// A North American number: area and exchange codes as issued (first
    /// digit 2–9, no `N11`, no `N9X` area).
    fn nanp(&mut self) -> (String, String, String) {
        let area = loop {
            let a = format!(
                "{}{}{}",
                self.range(2..10),
                self.range(0..9),
                self.range(0..10)
            );
            if &a[1..] != "11" {
                break a;
            }
        };
        let exchange = loop {
            let e = format!(
                "{}{}{}",
                self.range(2..10),
                self.range(0..10),
                self.range(0..10)
            );
            if &e[1..] != "11" {
                break e;
            }
        };
        (area, exchange, format!("{:04}", self.range(0..10000)))
    }

    fn phone(&mut self) -> String {
        let (a, e, l) = self.nanp();
        match self.range(0..26) {
            0 => format!("+1 {a}-{e}-{l}"),
            1 => format!("+1 ({a}) {e} {l}"),
            2 => format!("1-{a}-{e}-{l}"),
            3 => format!("{a} {e} {l}"),
            4 | 5 => format!("({a}) {e}-{l}"),
            6 => format!("+1.{a}.{e}.{l}"),
            7 => format!("+1{a}{e}{l}"),
            8 => format!("+44 (0)20 7{} {}", self.digits(3), self.digits(4)),
            9 => format!("020 7{} {}", self.digits(3), self.digits(4)),
            10 => format!("07{} {}", self.digits(3), self.digits(6)),
            11 => format!("+44 161 {} {}", self.digits(3), self.digits(4)),
            12 => format!("+49 (0)30 {}", self.digits(8)),
            13 => format!("+49 15{} {}", self.digits(1), self.digits(8)),
            14 => format!(
                "+33 6 {} {} {} {}",
                self.digits(2),
                self.digits(2),
                self.digits(2),
                self.digits(2)
            ),
            15 => format!("+61 2 {} {}", self.digits(4), self.digits(4)),
            16 => format!(
                "+61 4{} {} {}",
                self.digits(2),
                self.digits(3),
                self.digits(3)
            ),
            17 => format!("+31 20 {} {}", self.digits(3), self.digits(4)),
            18 => format!(
                "+34 91{} {} {}",
                self.digits(1),
                self.digits(3),
                self.digits(3)
            ),
            19 => format!("+39 06 {} {}", self.digits(4), self.digits(4)),
            20 => format!("+81 90-{}-{}", self.digits(4), self.digits(4)),
            21 => format!(
                "+86 13{} {} {}",
                self.digits(1),
                self.digits(4),
                self.digits(4)
            ),
            22 => format!("+55 11 9{}-{}", self.digits(4), self.digits(4)),
            23 => format!("+353 87 {} {}", self.digits(3), self.digits(4)),
            24 => format!("+971 50 {} {}", self.digits(3), self.digits(4)),
            _ => format!("030 {}", self.digits(7)),
        }
    }

    fn ipv4(&mut self) -> String {
        match self.range(0..6) {
            0 => format!(
                "10.{}.{}.{}",
                self.range(0..256),
                self.range(0..256),
                self.range(2..255)
            ),
            1 => format!(
                "172.{}.{}.{}",
                self.range(16..32),
                self.range(0..256),
                self.range(2..255)
            ),
            2 => format!("192.168.{}.{}", self.range(0..256), self.range(2..255)),
            3 => format!(
                "100.{}.{}.{}",
                self.range(64..128),
                self.range(0..256),
                self.range(1..255)
            ),
            _ => {
                let first = self.pick(&[
                    23, 31, 34, 35, 45, 52, 54, 62, 77, 84, 91, 95, 104, 141, 151, 185, 193, 203,
                    212,
                ]);
                format!(
                    "{first}.{}.{}.{}",
                    self.range(0..256),
                    self.range(0..256),
                    self.range(1..255)
                )
            }
        }
    }

    fn ipv6(&mut self) -> String {
        let g = |h: &mut H| format!("{:x}", h.range(1..0x10000));
        match self.range(0..7) {
            0 => format!("2001:db8:{}:{}::{}", g(self), g(self), g(self)),
            1 => (0..8).map(|_| g(self)).collect::<Vec<_>>().join(":"),
            2 => format!(
                "fd{:02x}:{}:{}:{}::{}",
                self.range(0..256),
                g(self),
                g(self),
                g(self),
                g(self)
            ),
            3 => format!("2a00:1450:4001:{}::{}", g(self), g(self)),
            4 => format!(
                "2600:1f18:{}:{}:{}:{}:{}:{}",
                g(self),
                g(self),
                g(self),
                g(self),
                g(self),
                g(self)
            ),
            5 => format!(
                "fe80::{:x}:{:x}ff:fe{:02x}:{}",
                self.range(0x100..0x10000),
                self.range(0..0x100),
                self.range(0..0x100),
                g(self)
            ),
            _ => format!(
                "2001:0db8:{:04x}:{:04x}:0000:0000:{:04x}:{:04x}",
                self.range(0..0x10000),
                self.range(0..0x10000),
                self.range(0..0x10000),
                self.range(1..0x10000)
            ),
        }
    }

    // ---- payment and identity numbers ----

    fn card_digits(&mut self) -> String {
        if self.chance(0.1) {
            return self.pick(TEST_CARDS).to_string();
        }
        let (prefix, len) = match self.range(0..100) {
            0..40 => ("4".to_string(), if self.chance(0.03) { 13 } else { 16 }),
            40..55 => (self.range(51..56).to_string(), 16),
            55..62 => (self.range(2221..2721).to_string(), 16),
            62..73 => (self.pick(&["34", "37"]).to_string(), 15),
            73..81 => {
                let p = match self.range(0..3) {
                    0 => "6011".to_string(),
                    1 => "65".to_string(),
                    _ => self.range(644..650).to_string(),
                };
                (p, self.pick(&[16, 16, 16, 19]))
            }
            81..87 => (self.range(3528..3590).to_string(), 16),
            87..91 => ("36".to_string(), 14),
            91..96 => ("62".to_string(), self.pick(&[16, 16, 19])),
            _ => (
                self.pick(&["5018", "5020", "5038", "6304", "6759"])
                    .to_string(),
                self.pick(&[16, 18, 19]),
            ),
        };
        let body = self.digits(len - 1 - prefix.len());
        let payload = format!("{prefix}{body}");
        format!("{payload}{}", luhn_check_digit(&payload))
    }

    /// A card as it is printed: grouped with spaces or dashes, or compact.
    fn card(&mut self) -> String {
        let digits = self.card_digits();
        let sep = self.pick(&["", "", " ", " ", " ", "-"]);
        print_card(&digits, sep)
    }

    /// Card-shaped, brand prefix and all, with a wrong Luhn digit.
    fn card_lookalike(&mut self) -> String {
        let mut digits = self.card_digits();
        digits.pop();
        let good = luhn_check_digit(&digits);
        let bad = loop {
            let c = char::from(self.pick(DIGITS));
            if c != good {
                break c;
            }
        };
        digits.push(bad);
        let sep = self.pick(&["", " ", "-"]);
        print_card(&digits, sep)
    }

    fn masked_card(&mut self) -> String {
        let last4 = self.digits(4);
        match self.range(0..5) {
            0 => format!("************{last4}"),
            1 => format!("**** **** **** {last4}"),
            2 => format!("XXXX-XXXX-XXXX-{last4}"),
            3 => format!(
                "{}******{last4}",
                self.pick(&["411111", "555555", "378282"])
            ),
            _ => format!("•••• {last4}"),
        }
    }

    fn ssn(&mut self) -> String {
        let mut area = self.range(1..900);
        if area == 666 {
            area = 667;
        }
        format!(
            "{area:03}-{:02}-{:04}",
            self.range(1..100),
            self.range(1..10000)
        )
    }

    /// A placeholder or test SSN outside the issued ranges (never 9xx:
    /// those are ITINs, which are sensitive too).
    fn invalid_ssn(&mut self) -> String {
        match self.range(0..4) {
            0 => "000-00-0000".to_string(),
            1 => format!("666-{:02}-{:04}", self.range(1..100), self.range(1..10000)),
            2 => format!("{:03}-00-{:04}", self.range(1..900), self.range(1..10000)),
            _ => format!("{:03}-{:02}-0000", self.range(1..666), self.range(1..100)),
        }
    }

    fn iban_compact(&mut self) -> String {
        const COUNTRIES: &[(&str, &str)] = &[
            ("LU", "3n13c"),
            ("DK", "14n"),
            ("FI", "14n"),
            ("HU", "24n"),
            ("CZ", "20n"),
            ("RO", "4a16c"),
            ("GR", "7n16c"),
            ("TR", "6n16c"),
            ("LT", "16n"),
            ("EE", "16n"),
            ("HR", "17n"),
            ("SI", "15n"),
            ("SK", "20n"),
            ("SA", "2n18c"),
            ("AE", "19n"),
            ("BR", "23n1a1c"),
            ("MT", "4a5n18c"),
            ("IS", "22n"),
            ("LI", "5n12c"),
            ("BG", "4a6n8c"),
            ("DE", "18n"),
            ("FR", "10n11c2n"),
            ("NL", "4a10n"),
            ("ES", "20n"),
            ("IT", "1a10n12c"),
            ("GB", "4a14n"),
        ];
        let (country, spec) = self.pick(COUNTRIES);
        let mut bban = String::new();
        let mut count = 0;
        for c in spec.chars() {
            if let Some(d) = c.to_digit(10) {
                count = count * 10 + d as usize;
                continue;
            }
            let alphabet: &[u8] = match c {
                'n' => DIGITS,
                'a' => UPPER,
                _ if self.chance(0.6) => DIGITS,
                _ => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
            };
            bban.push_str(&self.chars(count, alphabet));
            count = 0;
        }
        let check = 98 - iban_mod97(&format!("{bban}{country}00"));
        format!("{country}{check:02}{bban}")
    }

    fn iban(&mut self) -> String {
        let iban = self.iban_compact();
        if self.chance(0.45) {
            group4(&iban)
        } else {
            iban
        }
    }

    fn iban_lookalike(&mut self) -> String {
        let iban = self.iban_compact();
        let good: u32 = iban[2..4].parse().expect("check digits");
        let bad = 2 + (good - 2 + self.range(1..95) as u32) % 97;
        let fake = format!("{}{bad:02}{}", &iban[..2], &iban[4..]);
        if self.chance(0.4) {
            group4(&fake)
        } else {
            fake
        }
    }

    // ---- tokens and secrets ----

    fn aws_key(&mut self) -> String {
        let prefix = if self.chance(0.85) { "AKIA" } else { "ASIA" };
        format!("{prefix}{}", self.chars(16, BASE32))
    }

    fn aws_secret(&mut self) -> String {
        self.chars(40, B64)
    }

    fn github_token(&mut self) -> String {
        if self.chance(0.25) {
            return format!(
                "github_pat_11{}_{}",
                self.chars(20, ALNUM),
                self.chars(59, ALNUM)
            );
        }
        let prefix = self.pick(&["ghp", "ghp", "ghs", "gho", "ghu", "ghr"]);
        let random = self.chars(30, ALNUM);
        format!("{prefix}_{random}{}", base62_crc32(&random))
    }

    fn gitlab_token(&mut self) -> String {
        format!("glpat-{}", self.chars(20, B64URL))
    }

    fn slack_token(&mut self) -> String {
        if self.chance(0.7) {
            format!(
                "xoxb-{}-{}-{}",
                self.number(12),
                self.number(13),
                self.chars(24, ALNUM)
            )
        } else {
            format!(
                "xoxp-{}-{}-{}-{}",
                self.number(11),
                self.number(12),
                self.number(13),
                self.hex(32)
            )
        }
    }

    fn stripe_key(&mut self) -> String {
        let prefix = self.pick(&["sk_live_", "sk_live_", "sk_test_", "sk_test_", "rk_live_"]);
        let len = self.pick(&[24, 99]);
        format!("{prefix}{}", self.chars(len, ALNUM))
    }

    fn npm_token(&mut self) -> String {
        let random = self.chars(30, ALNUM);
        format!("npm_{random}{}", base62_crc32(&random))
    }

    fn pypi_token(&mut self) -> String {
        format!("pypi-AgEIcHlwaS5vcmcCJD{}", self.chars_in(150..220, B64URL))
    }

    fn google_key(&mut self) -> String {
        format!("AIza{}", self.chars(35, B64URL))
    }

    fn jwt(&mut self) -> String {
        let (alg, sig) = self.pick(&[
            ("RS256", 256),
            ("RS512", 512),
            ("ES384", 96),
            ("PS256", 256),
            ("EdDSA", 64),
            ("HS512", 64),
        ]);
        let header = match self.range(0..3) {
            0 => format!(r#"{{"alg":"{alg}","kid":"{}"}}"#, self.chars(27, B64URL)),
            1 => format!(
                r#"{{"typ":"at+jwt","alg":"{alg}","kid":"{}"}}"#,
                self.hex(8)
            ),
            _ => format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#),
        };
        let iat = 1_690_000_000 + self.range(0..80_000_000);
        let payload = match self.range(0..3) {
            0 => format!(
                r#"{{"iss":"https://{}.eu.auth0.com/","sub":"auth0|{}","aud":["https://api.example.com","https://{}.eu.auth0.com/userinfo"],"iat":{iat},"exp":{},"azp":"{}","scope":"openid profile email read:orders"}}"#,
                self.chars(8, LOWER_ALNUM),
                self.hex(24),
                self.chars(8, LOWER_ALNUM),
                iat + 86400,
                self.chars(32, ALNUM)
            ),
            1 => format!(
                r#"{{"exp":{},"iat":{iat},"jti":"{}","iss":"https://sso.example.org/realms/main","typ":"Bearer","azp":"portal","session_state":"{}","preferred_username":"{}","email_verified":true,"realm_access":{{"roles":["offline_access","user"]}}}}"#,
                iat + 300,
                uuid4(self),
                uuid4(self),
                self.chars_in(4..10, LOWER_ALNUM)
            ),
            _ => format!(
                r#"{{"name":"{}","email":"{}","user_id":"{}","iss":"https://securetoken.google.com/app-{}","aud":"app-{}","auth_time":{iat},"iat":{iat},"exp":{}}}"#,
                self.full_name(),
                self.email(),
                self.chars(28, ALNUM),
                self.digits(5),
                self.digits(5),
                iat + 3600
            ),
        };
        let sig = self.bytes(sig);
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    /// A PEM private key; `nl` is the line break as written (`"\n"`,
    /// `"\r\n"`, or `"\\n"` inside a quoted string), `indent` prefixes every
    /// line after the first.
    fn private_key(&mut self, nl: &str, indent: &str) -> String {
        let (kind, lead, bytes, width) = self.pick(&[
            ("RSA PRIVATE KEY", "MIIEowIBAAKCAQEA", 1190, 64),
            ("RSA PRIVATE KEY", "MIIJKAIBAAKCAgEA", 2345, 64),
            ("PRIVATE KEY", "MIIEvgIBADANBgkqhkiG9w0BAQEFAASC", 1218, 64),
            (
                "PRIVATE KEY",
                "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg",
                138,
                64,
            ),
            ("EC PRIVATE KEY", "MHQCAQEEI", 121, 64),
            (
                "OPENSSH PRIVATE KEY",
                "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
                400,
                70,
            ),
            (
                "ENCRYPTED PRIVATE KEY",
                "MIIFLTBXBgkqhkiG9w0BBQ0wSjApBgkq",
                1330,
                64,
            ),
        ]);
        let encrypted_legacy = kind == "RSA PRIVATE KEY" && self.chance(0.2);
        let mut body = lead.to_string();
        let target = bytes * 4 / 3 + self.range(0..8);
        body.push_str(&self.chars(target.saturating_sub(body.len()), B64));
        let mut out = format!("-----BEGIN {kind}-----");
        if encrypted_legacy {
            out.push_str(&format!(
                "{nl}{indent}Proc-Type: 4,ENCRYPTED{nl}{indent}DEK-Info: AES-256-CBC,{}{nl}",
                self.hex(32).to_uppercase()
            ));
        }
        for chunk in body.as_bytes().chunks(width) {
            out.push_str(nl);
            out.push_str(indent);
            out.push_str(std::str::from_utf8(chunk).expect("ascii"));
        }
        out.push_str(nl);
        out.push_str(indent);
        out.push_str(&format!("-----END {kind}-----"));
        out
    }

    /// A PEM block that is public: certificate, CSR, public key, PGP key.
    fn public_block(&mut self, nl: &str, indent: &str) -> String {
        let (kind, lead, bytes) = self.pick(&[
            (
                "CERTIFICATE",
                "MIIFazCCA1OgAwIBAgIRAIIQz7DSQONZRGPgu2OCiwAwDQYJ",
                1390,
            ),
            (
                "CERTIFICATE",
                "MIIDzTCCArWgAwIBAgIQCjeHZF5ftIwiTv0b7RQMPDANBgkq",
                980,
            ),
            (
                "CERTIFICATE REQUEST",
                "MIICvDCCAaQCAQAwdzELMAkGA1UEBhMC",
                700,
            ),
            (
                "PUBLIC KEY",
                "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
                294,
            ),
            ("RSA PUBLIC KEY", "MIIBCgKCAQEA", 270),
            ("PGP PUBLIC KEY BLOCK", "mQINBGW", 1100),
        ]);
        let mut body = lead.to_string();
        let target: usize = bytes * 4 / 3;
        body.push_str(&self.chars(target.saturating_sub(body.len()), B64));
        let mut out = format!("-----BEGIN {kind}-----");
        if kind.starts_with("PGP") {
            out.push_str(nl);
            out.push_str(indent);
        }
        for chunk in body.as_bytes().chunks(64) {
            out.push_str(nl);
            out.push_str(indent);
            out.push_str(std::str::from_utf8(chunk).expect("ascii"));
        }
        if kind.starts_with("PGP") {
            out.push_str(&format!("{nl}{indent}={}", self.chars(4, B64)));
        }
        out.push_str(nl);
        out.push_str(indent);
        out.push_str(&format!("-----END {kind}-----"));
        out
    }

    fn url_password(&mut self) -> String {
        match self.range(0..10) {
            0 => format!(
                "{}%21{}%23{}",
                self.chars(4, URL_PW_CHARS),
                self.chars(5, URL_PW_CHARS),
                self.chars(3, URL_PW_CHARS)
            ),
            1 => self.password().replace(['#', '%', '?'], "-"),
            _ => self.chars_in(10..32, URL_PW_CHARS),
        }
    }

    /// A password as people choose them.
    fn password(&mut self) -> String {
        match self.range(0..6) {
            0 => format!(
                "{}{}{}",
                self.pick(&[
                    "Sommer",
                    "Autumn",
                    "Falcon",
                    "Hamburg",
                    "Liverpool",
                    "Kirsche",
                    "Tiger",
                    "Phoenix",
                    "Maple",
                    "Soleil",
                ]),
                self.range(1970..2026),
                self.pick(&["!", "!!", "#", "?", "*", ""])
            ),
            1 => format!(
                "{}-{}-{}{}",
                self.pick(&["blue", "green", "amber", "silver", "crimson"]),
                self.pick(&["falcon", "otter", "harbor", "glacier", "meadow"]),
                self.pick(&["river", "lamp", "kettle", "comet", "anchor"]),
                self.range(1..100)
            ),
            2 => format!(
                "{}{}{}",
                self.pick(&["P", "Q", "Tr", "Zx"]),
                self.chars_in(6..10, PW_CHARS),
                self.range(10..99)
            ),
            _ => self.chars_in(12..28, PW_CHARS),
        }
    }

    /// A secret without a format of its own.
    fn secret(&mut self) -> String {
        match self.range(0..12) {
            0 => self.hex(32),
            1 => format!("key-{}", self.hex(32)),
            2 => STANDARD.encode(self.bytes(32)),
            3 => self.chars_in(20..48, ALNUM),
            4 | 5 => self.password(),
            6 => format!(
                "sk-proj-{}T3BlbkFJ{}",
                self.chars(40, B64URL),
                self.chars(20, B64URL)
            ),
            7 => format!(
                "sk-ant-api03-{}-{}AA",
                self.chars(86, B64URL),
                self.chars(6, B64URL)
            ),
            8 => self.hex(40),
            9 => format!("ya29.a0{}", self.chars_in(120..180, B64URL)),
            10 => format!("django-insecure-{}", self.chars(50, PW_CHARS)),
            _ => self.chars_in(30..60, PW_CHARS),
        }
    }

    fn opaque_token(&mut self) -> String {
        match self.range(0..4) {
            0 => self.chars(40, ALNUM),
            1 => format!("{}.{}", self.hex(16), self.chars(43, B64URL)),
            2 => self.chars_in(32..64, B64URL),
            _ => format!("at_{}", self.chars(48, ALNUM)),
        }
    }

    fn placeholder(&mut self) -> &'static str {
        self.pick(&[
            "<PASSWORD>",
            "REPLACE_ME",
            "xxxxxxxxxxxxxxxx",
            "${{ secrets.DEPLOY_TOKEN }}",
            "$(cat /run/secrets/db_password)",
            "<%= ENV['API_KEY'] %>",
            "#{DB_PASS}",
            "%API_KEY%",
            "$env:API_TOKEN",
            "(sensitive value)",
            "[FILTERED]",
            "[Filtered]",
            "<masked>",
            "•••••••••",
            "*****",
            "REDACTED",
            "$__file{/etc/secrets/api_key}",
        ])
    }

    // ---- hard negatives ----

    fn date_any(&mut self) -> String {
        let (y, m, d) = (self.range(2019..2026), self.range(1..13), self.range(1..29));
        let mon = MONTHS[m - 1];
        match self.range(0..10) {
            0 | 1 => format!("{y}-{m:02}-{d:02}"),
            2 => format!("{d:02}/{m:02}/{y}"),
            3 => format!("{m:02}/{d:02}/{y}"),
            4 => format!("{d:02}.{m:02}.{y}"),
            5 => format!("{mon} {d}, {y}"),
            6 => format!("{d} {mon} {y}"),
            7 => format!("{y}{m:02}{d:02}"),
            8 => format!("{d}-{mon}-{y}"),
            _ => format!("{y}/{m:02}/{d:02}"),
        }
    }

    fn iso_ts(&mut self) -> String {
        let (y, m, d) = (self.range(2022..2026), self.range(1..13), self.range(1..29));
        let (hh, mm, ss) = (self.range(0..24), self.range(0..60), self.range(0..60));
        match self.range(0..4) {
            0 => format!("{y}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
            1 => format!(
                "{y}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:06}+00:00",
                self.range(0..1_000_000)
            ),
            2 => format!(
                "{y}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}.{:03} UTC",
                self.range(0..1000)
            ),
            _ => format!("{y}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}-05:00"),
        }
    }

    fn http_date(&mut self) -> String {
        format!(
            "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
            self.pick(WEEKDAYS),
            self.range(1..29),
            self.pick(MONTHS),
            self.range(2023..2026),
            self.range(0..24),
            self.range(0..60),
            self.range(0..60)
        )
    }

    fn epoch_s(&mut self) -> String {
        (1_600_000_000 + self.range(0..150_000_000)).to_string()
    }

    fn isbn13(&mut self) -> String {
        let payload = format!("{}{}", self.pick(&["978", "979"]), self.digits(9));
        let sum: u32 = payload
            .bytes()
            .enumerate()
            .map(|(i, c)| u32::from(c - b'0') * if i % 2 == 0 { 1 } else { 3 })
            .sum();
        let check = (10 - sum % 10) % 10;
        if self.chance(0.5) {
            format!("{payload}{check}")
        } else {
            format!(
                "{}-{}-{}-{}-{check}",
                &payload[..3],
                &payload[3..4],
                &payload[4..8],
                &payload[8..]
            )
        }
    }

    fn isbn10(&mut self) -> String {
        let payload = self.digits(9);
        let sum: u32 = payload
            .bytes()
            .enumerate()
            .map(|(i, c)| u32::from(c - b'0') * (10 - i as u32))
            .sum();
        let check = match (11 - sum % 11) % 11 {
            10 => 'X',
            c => char::from(b'0' + c as u8),
        };
        format!(
            "{}-{}-{}-{check}",
            &payload[..1],
            &payload[1..4],
            &payload[4..]
        )
    }

    /// An EAN-13 barcode (GS1 check digit); when its prefix is a card
    /// brand's it also fails Luhn, so it is no card by any rule.
    fn ean13(&mut self) -> String {
        loop {
            let prefix = self.pick(&["40", "42", "50", "54", "76", "80", "84", "87", "00", "03"]);
            let payload = format!("{prefix}{}", self.digits(10));
            let sum: u32 = payload
                .bytes()
                .enumerate()
                .map(|(i, c)| u32::from(c - b'0') * if i % 2 == 0 { 1 } else { 3 })
                .sum();
            let code = format!("{payload}{}", (10 - sum % 10) % 10);
            if !(brand_prefixed(&code) && luhn_valid(&code)) {
                return code;
            }
        }
    }

    /// 15 digits, Luhn-valid, a GSMA type allocation code: no card brand.
    fn imei(&mut self) -> String {
        // Type allocation codes outside every brand range (35xx overlaps
        // JCB's 3528–3589, so only 350x–351x here).
        let tac = self.pick(&["350", "351", "86", "01", "99"]);
        let payload = format!("{tac}{}", self.digits(14 - tac.len()));
        let code = format!("{payload}{}", luhn_check_digit(&payload));
        if self.chance(0.5) {
            code
        } else {
            format!("{}-{}-{}", &code[..8], &code[8..14], &code[14..])
        }
    }

    /// A SIM card's ICCID: 19 digits, `89`, Luhn-valid.
    fn iccid(&mut self) -> String {
        let payload = format!(
            "89{}{}",
            self.pick(&["01", "44", "49", "33", "31"]),
            self.digits(14)
        );
        format!("{payload}{}", luhn_check_digit(&payload))
    }

    /// Part numbers, some shaped like phone numbers (but with a leading 1
    /// no area code has).
    fn part_number(&mut self) -> String {
        match self.range(0..6) {
            0 => format!("1{}-{}-{}", self.digits(2), self.digits(3), self.digits(4)),
            1 => format!("{}-{}-{}", self.digits(4), self.digits(4), self.digits(2)),
            2 => format!(
                "{}-{}-{}-{}",
                self.digits(2),
                self.digits(4),
                self.digits(3),
                self.digits(1)
            ),
            3 => format!(
                "{}{}-{}",
                self.pick(&["74HC", "LM", "STM32F", "ATMEGA", "SN74"]),
                self.digits(3),
                self.pick(&["N", "DR", "PU", "QFN"])
            ),
            4 => format!(
                "PN {}.{}.{}",
                self.digits(3),
                self.digits(3),
                self.digits(3)
            ),
            _ => format!("A{}-{}", self.digits(4), self.digits(6)),
        }
    }

    fn semver_range(&mut self) -> String {
        let (a, b, c) = (self.range(0..20), self.range(0..30), self.range(0..40));
        match self.range(0..9) {
            0 => format!(">={a}.{b}.{c} <{}.0.0", a + 1),
            1 => format!("^{a}.{b}.{c}"),
            2 => format!("~{a}.{b}"),
            3 => format!(">= {a}.{b}, < {}.0", a + 1),
            4 => format!("=={a}.{b}.*"),
            5 => format!("[{a}.{b},{}.0)", a + 1),
            6 => format!("{a}.{b}.{c} - {}.{}.{}", a, b + 1, c),
            7 => format!("{a}.{b}.{c}-rc.{}", self.range(1..6)),
            _ => format!("v{a}.{b}.{c}+build.{}", self.range(1..999)),
        }
    }

    /// A four-part version whose parts are all < 256: IP-shaped.
    fn version4(&mut self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.range(1..20),
            self.range(0..40),
            self.range(0..200),
            self.range(0..256)
        )
    }

    fn oid(&mut self) -> &'static str {
        self.pick(&[
            "2.5.4.3",
            "2.5.4.10",
            "2.5.29.17",
            "2.5.29.19",
            "2.5.29.37",
            "1.2.840.113549.1.1.11",
            "1.3.6.1.5.5.7.3.1",
            "1.3.6.1.4.1.311.20.2.3",
            "2.16.840.1.101.3.4.2.1",
            "1.3.6.1.4.1.11129.2.4.2",
        ])
    }

    /// Dotted quads that are not addresses: an octet out of range.
    fn ip_lookalike(&mut self) -> String {
        match self.range(0..3) {
            0 => format!(
                "{}.{}.{}.{}",
                self.range(256..999),
                self.range(0..256),
                self.range(0..256),
                self.range(0..256)
            ),
            1 => format!(
                "10.{}.{}.{}",
                self.range(0..256),
                self.range(0..256),
                self.range(256..1000)
            ),
            _ => format!(
                "192.168.{}.{}.{}",
                self.range(0..256),
                self.range(0..256),
                self.range(0..256)
            ),
        }
    }

    fn ulid(&mut self) -> String {
        format!("01H{}", self.chars(23, CROCKFORD))
    }

    fn ksuid(&mut self) -> String {
        format!("2{}", self.chars(26, ALNUM))
    }

    fn snowflake(&mut self) -> String {
        let n = self.pick(&[17, 18]);
        format!("1{}", self.digits(n))
    }

    fn container_id(&mut self) -> String {
        self.hex(12)
    }

    fn mac_dash(&mut self) -> String {
        let parts: Vec<String> = (0..6).map(|_| self.hex(2).to_uppercase()).collect();
        if self.chance(0.5) {
            parts.join("-")
        } else {
            let h = parts.concat().to_lowercase();
            format!("{}.{}.{}", &h[..4], &h[4..8], &h[8..])
        }
    }

    /// Colon-separated hex words that no IPv6 parser accepts.
    fn hex_words(&mut self) -> String {
        let words = [
            "dead", "beef", "cafe", "babe", "f00d", "c0de", "face", "feed",
        ];
        let n = self.pick(&[3, 4, 5, 6]);
        (0..n)
            .map(|_| self.pick(&words))
            .collect::<Vec<_>>()
            .join(":")
    }

    fn vat_id(&mut self) -> String {
        match self.range(0..4) {
            0 => format!("DE{}", self.number(9)),
            1 => format!("FR{}{}", self.digits(2), self.number(9)),
            2 => format!("NL{}B{}", self.number(9), self.digits(2)),
            _ => format!("GB{}", self.number(9)),
        }
    }

    fn bic(&mut self) -> &'static str {
        self.pick(&[
            "COBADEFFXXX",
            "DEUTDEFF",
            "BNPAFRPPXXX",
            "INGBNL2A",
            "NWBKGB2L",
            "UBSWCHZH80A",
            "BCITITMM",
            "CAIXESBBXXX",
        ])
    }

    fn aws_unique_id(&mut self) -> String {
        format!(
            "{}{}",
            self.pick(&["AIDA", "AROA", "ANPA", "AGPA"]),
            self.chars(17, BASE32)
        )
    }

    fn account_id(&mut self) -> String {
        self.number(12)
    }

    fn b64_blob(&mut self) -> String {
        let n = self.range(32..300);
        STANDARD.encode(self.bytes(n))
    }

    fn amount(&mut self) -> String {
        format!("{}.{:02}", self.range(1..9000), self.range(0..100))
    }

    fn not_a_person(&mut self) -> &'static str {
        self.pick(NOT_PEOPLE)
    }
}

fn uuid4(h: &mut H) -> String {
    let x = h.hex(32);
    format!(
        "{}-{}-4{}-{}{}-{}",
        &x[..8],
        &x[8..12],
        &x[13..16],
        h.pick(&["8", "9", "a", "b"]),
        &x[17..20],
        &x[20..]
    )
}

fn fold(s: &str) -> String {
    ascii_fold(s).to_lowercase().replace([' ', '\''], "")
}

fn print_card(digits: &str, sep: &str) -> String {
    let groups: &[usize] = match digits.len() {
        13 => &[4, 3, 3, 3],
        14 => &[4, 6, 4],
        15 => &[4, 6, 5],
        17 => &[4, 4, 4, 5],
        18 => &[4, 4, 4, 6],
        19 => &[4, 4, 4, 4, 3],
        _ => &[4, 4, 4, 4],
    };
    let mut out = String::new();
    let mut at = 0;
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&digits[at..at + g]);
        at += g;
    }
    out
}

fn group4(s: &str) -> String {
    s.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a digit string starts like a card of some brand (a wide net:
/// Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro, Mir,
/// RuPay).
fn brand_prefixed(d: &str) -> bool {
    let p = |n: usize| d.get(..n).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
    d.starts_with('4')
        || (50..=59).contains(&p(2))
        || (60..=69).contains(&p(2))
        || (2200..=2720).contains(&p(4))
        || matches!(p(2), 34 | 36 | 37 | 38 | 39 | 81 | 82)
        || (300..=305).contains(&p(3))
        || (3528..=3589).contains(&p(4))
}

// ---- documents: CSV exports ----

impl H {
    fn csv_export(&mut self) -> Doc {
        let mut b = B::default();
        let delim = self.pick(&[",", ",", ",", ";", "\t"]);
        let quote_all = self.chance(0.3);
        let count = self.range(4..30);
        let (headers, rows): (&[&str], Vec<Vec<Cell>>) = match self.range(0..6) {
            0 => (
                &[
                    "customer_id",
                    "first_name",
                    "last_name",
                    "email",
                    "phone",
                    "country",
                    "signup_date",
                    "lifetime_value",
                    "notes",
                ],
                (0..count).map(|_| self.csv_customer()).collect(),
            ),
            1 => (
                &[
                    "txn_id",
                    "created",
                    "cardholder",
                    "card_number",
                    "exp",
                    "amount",
                    "currency",
                    "status",
                    "client_ip",
                    "auth_code",
                ],
                (0..count).map(|_| self.csv_payment()).collect(),
            ),
            2 => (
                &[
                    "emp_no",
                    "name",
                    "ssn",
                    "date_of_birth",
                    "iban",
                    "manager",
                    "ext",
                    "start_date",
                ],
                (0..count).map(|_| self.csv_staff()).collect(),
            ),
            3 => (
                &["isbn", "title", "author", "publisher", "year", "list_price"],
                (0..count).map(|_| self.csv_book()).collect(),
            ),
            4 => (
                &[
                    "sku",
                    "mpn",
                    "description",
                    "ean",
                    "qty",
                    "unit_price",
                    "supplier",
                    "bin",
                ],
                (0..count).map(|_| self.csv_inventory()).collect(),
            ),
            _ => (
                &[
                    "asset_tag",
                    "hostname",
                    "model",
                    "imei",
                    "iccid",
                    "mac",
                    "last_ip",
                    "assigned_to",
                    "enrolled",
                ],
                (0..count).map(|_| self.csv_device()).collect(),
            ),
        };
        if self.chance(0.3) {
            b.s("# exported ");
            b.neg("timestamp", &self.iso_ts());
            b.s(&format!(" by reports-worker, {count} rows\n"));
        }
        render_csv(&mut b, headers, &rows, delim, quote_all);
        b.doc("csv")
    }

    fn csv_customer(&mut self) -> Vec<Cell> {
        let f = self.first();
        let l = self.last();
        let id = if self.chance(0.5) {
            n("numeric_id", self.number(10))
        } else {
            t(format!("C-{:06}", self.range(0..999_999)))
        };
        let email = self.email_for(f, l);
        let phone = if self.chance(0.8) {
            p("phone", self.phone())
        } else {
            t("")
        };
        let notes = match self.range(0..8) {
            0 => {
                let mut c = t("asked about the ");
                c.extend(n("not_a_person", self.not_a_person()));
                c.extend(t(" offer"));
                c
            }
            1 => {
                let mut c = t("alt contact ");
                c.extend(p("email", self.email()));
                c
            }
            2 => {
                let mut c = t("merged into ");
                c.extend(n("uuid", uuid4(self)));
                c
            }
            3 => t("VIP; invoice monthly"),
            _ => t(""),
        };
        vec![
            id,
            p("person", f),
            p("person", l),
            p("email", email),
            phone,
            t(self.pick(COUNTRIES)),
            n("date", self.date_any()),
            t(self.amount()),
            notes,
        ]
    }

    fn csv_payment(&mut self) -> Vec<Cell> {
        let f = self.first();
        let l = self.last();
        let holder = if self.chance(0.3) {
            format!("{l}, {f}")
        } else {
            format!("{f} {l}")
        };
        let (card, status) = match self.range(0..20) {
            0..13 => (
                p("card", self.card()),
                self.pick(&["succeeded", "succeeded", "refunded", "disputed"]),
            ),
            13..17 => (n("masked_card", self.masked_card()), "succeeded"),
            _ => (n("card_lookalike", self.card_lookalike()), "invalid_number"),
        };
        let ip = if self.chance(0.85) {
            p("ipv4", self.ipv4())
        } else {
            p("ipv6", self.ipv6())
        };
        vec![
            n("random_id", format!("txn_{}", self.chars(24, ALNUM))),
            n("timestamp", self.iso_ts()),
            p("person", holder),
            card,
            t(format!("{:02}/{}", self.range(1..13), self.range(25..32))),
            t(self.amount()),
            t(self.pick(&["EUR", "USD", "GBP", "JPY", "AUD"])),
            t(status),
            ip,
            t(self.chars(6, b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789")),
        ]
    }

    fn csv_staff(&mut self) -> Vec<Cell> {
        let ssn = match self.range(0..10) {
            0 => t(""),
            1 => n("invalid_ssn", self.invalid_ssn()),
            2 => p("ssn", self.ssn().replace('-', "")),
            _ => p("ssn", self.ssn()),
        };
        let iban = if self.chance(0.7) {
            p("iban", self.iban())
        } else {
            t("")
        };
        let name = if self.chance(0.1) {
            self.full_name().to_uppercase()
        } else {
            self.full_name()
        };
        vec![
            t(format!("E{:05}", self.range(0..99_999))),
            p("person", name),
            ssn,
            n("date", self.date_any()),
            iban,
            p("person", self.full_name()),
            t(format!("x{}", self.digits(4))),
            n("date", self.date_any()),
        ]
    }

    fn csv_book(&mut self) -> Vec<Cell> {
        let isbn = if self.chance(0.7) {
            self.isbn13()
        } else {
            self.isbn10()
        };
        let author = if self.chance(0.25) {
            format!("{}, {}", self.last(), self.first())
        } else {
            self.full_name()
        };
        vec![
            n("isbn", isbn),
            t(self.pick(BOOK_TITLES)),
            p("person", author),
            n("not_a_person", self.pick(PUBLISHERS)),
            t(self.range(1995..2025).to_string()),
            t(self.amount()),
        ]
    }

    fn csv_inventory(&mut self) -> Vec<Cell> {
        vec![
            t(format!(
                "SKU-{}-{}",
                self.range(1000..9999),
                self.pick(&["BLK", "WHT", "XL", "S", "250ML"])
            )),
            n("part_number", self.part_number()),
            t(self.pick(&[
                "USB-C cable 2m",
                "Hex bolt M8x40 (100 pcs)",
                "Label printer roll",
                "Thermal paste 4g",
                "Ethernet patch cord Cat6",
                "Shipping box 40x30x20",
            ])),
            n("ean13", self.ean13()),
            t(self.range(0..5000).to_string()),
            t(self.amount()),
            n("not_a_person", self.pick(COMPANIES)),
            t(format!(
                "{}-{:02}-{:02}",
                char::from(self.pick(UPPER)),
                self.range(1..40),
                self.range(1..10)
            )),
        ]
    }

    fn csv_device(&mut self) -> Vec<Cell> {
        let ip = if self.chance(0.8) {
            p("ipv4", self.ipv4())
        } else {
            p("ipv6", self.ipv6())
        };
        vec![
            t(format!("IT-{:05}", self.range(0..99_999))),
            t(format!(
                "{}-{}",
                self.pick(&["lt", "mbp", "ws", "phone"]),
                self.chars(6, LOWER_ALNUM)
            )),
            t(self.pick(&[
                "iPhone 15",
                "Pixel 8",
                "Galaxy S23",
                "ThinkPad X1",
                "MacBook Air",
            ])),
            n("imei", self.imei()),
            n("iccid", self.iccid()),
            n("mac_address", self.mac_dash()),
            ip,
            p("person", self.full_name()),
            n("date", self.date_any()),
        ]
    }
}

// ---- documents: Markdown ----

impl H {
    fn markdown_doc(&mut self) -> Doc {
        let mut b = B::default();
        match self.range(0..4) {
            0 => self.md_roster(&mut b),
            1 => self.md_postmortem(&mut b),
            2 => self.md_account(&mut b),
            _ => self.md_setup(&mut b),
        }
        b.doc("markdown")
    }

    fn md_roster(&mut self, b: &mut B) {
        b.s(&format!("## On-call rota — week {}\n\n", self.range(1..53)));
        let rows: Vec<Vec<Cell>> = (0..self.range(3..9))
            .map(|_| {
                let (name, email) = self.person_with_email();
                let backup = self.full_name();
                vec![
                    p("person", name),
                    p("email", email),
                    p("phone", self.phone()),
                    t(self.pick(&["Mon–Wed", "Thu–Sun", "weekend", "follow-the-sun (EU)"])),
                    p("person", backup),
                ]
            })
            .collect();
        let aligned = self.chance(0.5);
        render_markdown(
            b,
            &["Engineer", "Email", "Phone", "Shift (UTC)", "Backup"],
            &rows,
            aligned,
        );
        b.s("\n> Escalation: call the duty phone **");
        b.pii("phone", &self.phone());
        b.s("** if nobody acks within 10 min, then page ");
        b.pii("person", &self.full_name());
        b.s(" (");
        b.pii("email", &self.email());
        b.s(").\n");
    }

    fn md_postmortem(&mut self, b: &mut B) {
        b.s(&format!(
            "# Incident INC-{}-{:04}: credentials printed in CI logs\n\n**Reporter:** ",
            self.range(2022..2026),
            self.range(1..9999)
        ));
        let (name, email) = self.person_with_email();
        b.pii("person", &name);
        b.s(" (");
        b.pii("email", &email);
        b.s(")  \n**Severity:** SEV-2 · **Status:** resolved  \n**Detected:** ");
        b.neg("timestamp", &self.iso_ts());
        b.s("\n\n## Summary\n\nA debug step in `deploy.yml` ran `env | sort`, which printed this to a public build log:\n\n```text\nAWS_ACCESS_KEY_ID=");
        let key = self.aws_key();
        b.pii("aws_access_key", &key);
        b.s("\nAWS_SECRET_ACCESS_KEY=");
        b.pii("secret", &self.aws_secret());
        b.s("\nGH_TOKEN=");
        let gh = self.github_token();
        b.pii("github_token", &gh);
        b.s("\nHOME=/home/runner\nNODE_VERSION=20.11.1\nRUNNER_NAME=ci-runner-3\n```\n\n## Timeline (UTC)\n\n");
        let runner = self.ipv4();
        let rows = vec![
            {
                let mut c = t(format!("Build #{} on runner `", self.range(1000..99_999)));
                c.extend(p("ipv4", runner.clone()));
                c.extend(t("` printed the environment"));
                vec![t("14:02"), c]
            },
            {
                let mut c = t("Secret-scanning alert for `");
                c.extend(p("github_token", gh));
                c.extend(t("`"));
                vec![t("14:19"), c]
            },
            {
                let mut c = p("person", self.full_name());
                c.extend(t(" disabled `"));
                c.extend(p("aws_access_key", key));
                c.extend(t("` (IAM user `"));
                c.extend(n("aws_unique_id", self.aws_unique_id()));
                c.extend(t("`)"));
                vec![t("14:25"), c]
            },
            {
                let mut c = t("New key stored as `");
                c.extend(n("placeholder", "${{ secrets.AWS_SECRET_ACCESS_KEY }}"));
                c.extend(t("`"));
                vec![t("15:10"), c]
            },
        ];
        render_markdown(b, &["Time", "Event"], &rows, false);
        b.s("\n## Affected hosts\n\n- `");
        b.pii("ipv4", &runner);
        b.s("` (ci-runner-3)\n- `");
        b.pii("ipv6", &self.ipv6());
        b.s("` (bastion)\n\n## Follow-ups\n\n- [ ] Rotate the Slack bot token `");
        b.pii("slack_token", &self.slack_token());
        b.s(&format!(
            "` — owner @{}\n- [ ] Pin `actions/checkout` to `",
            self.chars_in(4..9, LOWER_ALNUM)
        ));
        b.neg("git_sha", &self.hex(40));
        b.s("`\n- [x] Constrain `semver` to `");
        b.neg("semver_range", &self.semver_range());
        b.s("`\n");
    }

    fn md_account(&mut self, b: &mut B) {
        b.s("### Account: ");
        b.neg("not_a_person", self.pick(COMPANIES));
        b.s(" (ID ");
        b.neg("numeric_id", &self.number(10));
        b.s(")\n\n- **Primary contact:** ");
        let (name, email) = self.person_with_email();
        b.pii("person", &name);
        b.s(" — ");
        b.pii("email", &email);
        b.s(" — ");
        b.pii("phone", &self.phone());
        b.s("\n- **Billing contact:** ");
        let (name, email) = self.person_with_email();
        b.pii("person", &name);
        b.s(" <");
        b.pii("email", &email);
        b.s(">\n- **Bank:** IBAN `");
        b.pii("iban", &self.iban());
        b.s("` · BIC `");
        b.neg("bic", self.bic());
        b.s(&format!(
            "`\n- **Card on file:** {} ending in {} (exp {:02}/{})\n- **VAT ID:** ",
            self.pick(&["Visa", "Mastercard", "Amex"]),
            self.digits(4),
            self.range(1..13),
            self.range(25..32)
        ));
        b.neg("vat_id", &self.vat_id());
        b.s("\n- **Contract:** renewed ");
        b.neg("date", &self.date_any());
        b.s("; the ");
        b.neg("not_a_person", "Grace Period");
        b.s(" ends ");
        b.neg("date", &self.date_any());
        b.s("\n");
        if self.chance(0.5) {
            b.s("- **Notes:** customer asked us to charge card ");
            b.pii("card", &self.card());
            b.s(" for the overage; previous card (");
            b.neg("masked_card", &self.masked_card());
            b.s(") expired.\n");
        } else {
            b.s("- **Notes:** old IBAN ");
            b.neg("iban_lookalike", &self.iban_lookalike());
            b.s(" bounced (typo in the check digits).\n");
        }
        b.s("- **Sites:** ");
        b.neg("not_a_person", self.not_a_person());
        b.s(", ");
        b.neg("not_a_person", self.not_a_person());
        b.s("\n");
    }

    fn md_setup(&mut self, b: &mut B) {
        b.s(&format!(
            "# {} — local setup\n\nRequires Node `",
            self.pick(&["billing-portal", "crm-sync", "ops-dashboard", "partner-api"])
        ));
        b.neg("semver_range", &self.semver_range());
        b.s("` and Python `");
        b.neg("semver_range", &self.semver_range());
        b.s("`.\n\n1. Copy `.env.example` to `.env`.\n2. Ask ");
        b.pii("person", &self.full_name());
        b.s(" for the staging credentials, or use these (rotated weekly):\n\n```dotenv\nDATABASE_URL=postgresql://staging:");
        b.pii("url_password", &self.url_password());
        b.s("@");
        b.pii("ipv4", &self.ipv4());
        b.s(":5432/portal\nSTRIPE_SECRET_KEY=");
        b.pii("stripe_key", &self.stripe_key());
        b.s("\nSTRIPE_WEBHOOK_SECRET=");
        b.pii("secret", &format!("whsec_{}", self.chars(32, ALNUM)));
        b.s("\nGOOGLE_MAPS_API_KEY=");
        b.pii("google_api_key", &self.google_key());
        b.s("\nSENTRY_DSN=https://");
        b.neg(
            "sentry_dsn",
            &format!("{}@o{}.ingest.sentry.io", self.hex(32), self.digits(6)),
        );
        b.s(&format!("/{}\n", self.digits(7)));
        b.s("PASSWORD_MIN_LENGTH=");
        b.neg("config_param", "12");
        b.s("\n```\n\n3. Run `npm ci && npm run dev`, open http://localhost:3000 and sign in as `");
        b.pii("email", &self.email());
        b.s("` with the password `");
        b.pii("secret", &self.password());
        b.s("`.\n4. Test payments with card `");
        b.pii("card", &print_card(self.pick(TEST_CARDS), " "));
        b.s("`, any future expiry and any CVC.\n");
    }
}

// ---- documents: HTML ----

impl H {
    fn html_page(&mut self) -> Doc {
        let mut b = B::default();
        match self.range(0..5) {
            0 => self.html_profile(&mut b),
            1 => self.html_invoice(&mut b),
            2 => self.html_admin_users(&mut b),
            3 => self.html_form(&mut b),
            _ => self.html_embed(&mut b),
        }
        b.doc("html")
    }

    fn html_profile(&mut self, b: &mut B) {
        let (name, email) = self.person_with_email();
        b.s("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n  <title>");
        b.pii("person", &name);
        b.s(" · Customer profile</title>\n  <meta name=\"google-site-verification\" content=\"");
        b.neg("site_verification", &self.chars(43, B64URL));
        b.s("\">\n</head>\n<body>\n<div class=\"profile-card\" data-customer-id=\"");
        b.neg("ulid", &self.ulid());
        b.s("\">\n  <h2 class=\"name\">");
        b.pii("person", &name);
        b.s("</h2>\n  <p>Email: <a href=\"mailto:");
        b.pii("email", &email);
        b.s("\">");
        b.pii("email", &email);
        b.s("</a></p>\n  <p>Phone: <a href=\"tel:");
        let (a, e, l) = self.nanp();
        b.pii("phone", &format!("+1{a}{e}{l}"));
        b.s("\">");
        b.pii("phone", &format!("({a}) {e}-{l}"));
        b.s("</a></p>\n  <p>Member since <time datetime=\"");
        b.neg("timestamp", &self.iso_ts());
        b.s("\">");
        b.neg("date", &self.date_any());
        b.s("</time></p>\n  <p>Last sign-in from <code>");
        b.pii("ipv4", &self.ipv4());
        b.s("</code> (");
        b.s(self.pick(CITIES));
        b.s(")</p>\n");
        if self.chance(0.5) {
            b.s("  <p class=\"kyc\">SSN on file: <span class=\"masked\">");
            b.neg("masked_ssn", &format!("***-**-{}", self.digits(4)));
            b.s("</span> · DOB ");
            b.neg("date", &self.date_any());
            b.s("</p>\n");
        } else {
            b.s("  <p class=\"kyc\">Tax ID (SSN): ");
            b.pii("ssn", &self.ssn());
            b.s("</p>\n");
        }
        b.s("  <p>Account manager: ");
        b.pii("person", &self.full_name());
        b.s("</p>\n</div>\n</body>\n</html>\n");
    }

    fn html_invoice(&mut self, b: &mut B) {
        b.s(&format!(
            "<div class=\"invoice\">\n  <h1>Invoice INV-{}-{:05}</h1>\n  <table class=\"meta\">\n    <tr><th>",
            self.range(2022..2026),
            self.range(0..99_999)
        ));
        b.neg("not_a_person", "Bill To");
        b.s("</th><td>");
        b.pii("person", &self.full_name());
        b.s(&format!(
            "<br>{} {}<br>{}</td></tr>\n    <tr><th>Email</th><td>",
            self.range(1..300),
            self.pick(STREETS),
            self.pick(CITIES)
        ));
        b.pii("email", &self.email());
        b.s("</td></tr>\n    <tr><th>Payment</th><td>");
        if self.chance(0.6) {
            b.s("SEPA direct debit from ");
            b.pii("iban", &self.iban());
            b.s(" (mandate ");
            b.neg("ulid", &self.ulid());
            b.s(")");
        } else {
            b.s("Card ");
            b.neg("masked_card", &self.masked_card());
        }
        b.s("</td></tr>\n    <tr><th>Issued</th><td>");
        b.neg("date", &self.date_any());
        b.s("</td></tr>\n  </table>\n");
        let rows: Vec<Vec<Cell>> = (0..self.range(1..6))
            .map(|_| {
                if self.chance(0.5) {
                    let mut c = t(format!("{} — ISBN ", self.pick(BOOK_TITLES)));
                    c.extend(n("isbn", self.isbn13()));
                    vec![c, t(self.range(1..4).to_string()), t(self.amount())]
                } else {
                    let mut c = t("Spare part ");
                    c.extend(n("part_number", self.part_number()));
                    vec![c, t(self.range(1..20).to_string()), t(self.amount())]
                }
            })
            .collect();
        render_html_table(b, &["Item", "Qty", "Price"], &rows);
        b.s("  <p class=\"footer\">Questions? Call ");
        b.pii("phone", &self.phone());
        b.s(" or write to <a href=\"mailto:");
        let e = self.email();
        b.pii("email", &e);
        b.s("\">");
        b.pii("email", &e);
        b.s("</a>. VAT ID ");
        b.neg("vat_id", &self.vat_id());
        b.s(".</p>\n</div>\n");
    }

    fn html_admin_users(&mut self, b: &mut B) {
        b.s("<h3>Users (");
        let count = self.range(3..12);
        b.s(&count.to_string());
        b.s(")</h3>\n");
        let rows: Vec<Vec<Cell>> = (0..count)
            .map(|_| {
                let (name, email) = self.person_with_email();
                let ip = if self.chance(0.8) {
                    p("ipv4", self.ipv4())
                } else {
                    p("ipv6", self.ipv6())
                };
                vec![
                    p("person", name),
                    p("email", email),
                    t(self.pick(&["Owner", "Admin", "Member", "Billing", "Read-only"])),
                    n("timestamp", self.iso_ts()),
                    ip,
                    t(self.pick(&["✔ TOTP", "✔ WebAuthn", "✘"])),
                ]
            })
            .collect();
        render_html_table(
            b,
            &["User", "Email", "Role", "Last sign-in", "IP", "2FA"],
            &rows,
        );
    }

    fn html_form(&mut self, b: &mut B) {
        b.s("<div class=\"alert alert-danger\">Invalid email or password.</div>\n<form method=\"post\" action=\"/session\">\n  <input type=\"hidden\" name=\"utf8\" value=\"✓\">\n  <input type=\"hidden\" name=\"return_to\" value=\"/orders/");
        b.neg("uuid", &uuid4(self));
        b.s("\">\n  <label>Email <input type=\"email\" name=\"email\" value=\"");
        b.pii("email", &self.email());
        b.s("\"></label>\n  <label>Password <input type=\"password\" name=\"password\" value=\"");
        b.pii("secret", &self.password());
        b.s("\"></label>\n  <input type=\"hidden\" name=\"password_policy\" value=\"");
        b.neg("config_param", "min12-mixed");
        b.s("\">\n  <button type=\"submit\">Sign in</button>\n</form>\n<!-- debug: user_id=");
        b.s(&self.range(1..99_999).to_string());
        b.s(" remote_addr=");
        b.pii("ipv4", &self.ipv4());
        b.s(" forwarded_for=");
        b.pii("ipv6", &self.ipv6());
        b.s(" build=");
        b.neg("version", &self.version4());
        b.s(" -->\n");
    }

    fn html_embed(&mut self, b: &mut B) {
        let key = self.google_key();
        b.s("<div id=\"map\" style=\"height:320px\"></div>\n<script async src=\"https://maps.googleapis.com/maps/api/js?key=");
        b.pii("google_api_key", &key);
        b.s("&callback=initMap&libraries=places\"></script>\n<script>\n  window.firebaseConfig = {\n    apiKey: \"");
        b.pii("google_api_key", &self.google_key());
        let project = format!("shop-{}", self.digits(5));
        b.s(&format!(
            "\",\n    authDomain: \"{project}.firebaseapp.com\",\n    projectId: \"{project}\",\n    messagingSenderId: \""
        ));
        let sender = self.number(12);
        b.s(&sender);
        b.s("\",\n    appId: \"");
        b.neg("random_id", &format!("1:{sender}:web:{}", self.hex(22)));
        b.s("\"\n  };\n</script>\n<script src=\"https://cdn.example.com/lib/");
        b.s(&format!(
            "{}.{}.{}",
            self.range(1..9),
            self.range(0..20),
            self.range(0..20)
        ));
        b.s("/bundle.min.js\" integrity=\"");
        b.neg(
            "sri_hash",
            &format!("sha384-{}", STANDARD.encode(self.bytes(48))),
        );
        b.s("\" crossorigin=\"anonymous\"></script>\n<footer>Store: ");
        let place = loop {
            let p = self.not_a_person();
            if !p.contains('&') {
                break p;
            }
        };
        b.neg("not_a_person", place);
        b.s(" · Support ");
        b.pii("phone", &self.phone());
        b.s(" · <a href=\"mailto:");
        b.pii("email", &self.email());
        b.s("?subject=Order%20question\">Email us</a></footer>\n");
    }
}

// ---- documents: configuration files ----

impl H {
    fn config_file(&mut self) -> Doc {
        let mut b = B::default();
        match self.range(0..10) {
            0 => self.cfg_compose(&mut b),
            1 => self.cfg_aws(&mut b),
            2 => self.cfg_package_auth(&mut b),
            3 => self.cfg_properties(&mut b),
            4 => self.cfg_terraform(&mut b),
            5 => self.cfg_wireguard(&mut b),
            6 => self.cfg_django(&mut b),
            7 => self.cfg_appsettings(&mut b),
            8 => self.cfg_netrc_ssh(&mut b),
            _ => self.cfg_workflow(&mut b),
        }
        b.doc("config")
    }

    fn cfg_compose(&mut self, b: &mut B) {
        b.s("services:\n  db:\n    image: postgres:16.2-alpine\n    environment:\n      POSTGRES_USER: app\n      POSTGRES_PASSWORD: ");
        b.pii("secret", &self.password());
        b.s("\n      POSTGRES_DB: orders\n    ports:\n      - \"5432:5432\"\n  api:\n    image: ghcr.io/acme/api@");
        b.neg("image_digest", &format!("sha256:{}", self.hex(64)));
        b.s("\n    environment:\n      - DATABASE_URL=postgres://app:");
        b.pii("url_password", &self.url_password());
        b.s("@db:5432/orders\n      - REDIS_URL=rediss://default:");
        b.pii("url_password", &self.url_password());
        b.s("@cache.internal:6380/0\n      - SENTRY_ENVIRONMENT=staging\n      - JWT_SECRET=");
        b.pii("secret", &self.secret());
        b.s("\n      - OPENAI_API_KEY=");
        b.pii(
            "secret",
            &format!(
                "sk-proj-{}T3BlbkFJ{}",
                self.chars(40, B64URL),
                self.chars(20, B64URL)
            ),
        );
        b.s("\n    extra_hosts:\n      - \"billing.internal:");
        b.pii("ipv4", &self.ipv4());
        b.s("\"\n  worker:\n    image: ghcr.io/acme/worker:");
        b.s(&format!(
            "{}.{}.{}",
            self.range(1..5),
            self.range(0..30),
            self.range(0..20)
        ));
        b.s("\n    environment:\n      SMTP_PASSWORD: \"");
        b.neg("placeholder", "${SMTP_PASSWORD:?missing}");
        b.s("\"\n      MAX_TOKENS: \"");
        b.neg("config_param", "4096");
        b.s("\"\n      ADMIN_CONTACT: \"");
        b.pii("email", &self.email());
        b.s("\"\n");
    }

    fn cfg_aws(&mut self, b: &mut B) {
        b.s("$ cat ~/.aws/credentials\n[default]\naws_access_key_id = ");
        b.pii("aws_access_key", &self.aws_key());
        b.s("\naws_secret_access_key = ");
        b.pii("secret", &self.aws_secret());
        b.s("\n\n[prod-admin]\naws_access_key_id=");
        b.pii("aws_access_key", &format!("ASIA{}", self.chars(16, BASE32)));
        b.s("\naws_secret_access_key=");
        b.pii("secret", &self.aws_secret());
        b.s("\naws_session_token=");
        b.pii(
            "secret",
            &format!("IQoJb3JpZ2luX2VjE{}", self.chars_in(300..420, B64)),
        );
        let account = self.account_id();
        b.s("\n\n$ cat ~/.aws/config\n[profile prod-admin]\nrole_arn = ");
        b.neg(
            "arn",
            &format!("arn:aws:iam::{account}:role/OrganizationAccountAccessRole"),
        );
        b.s("\nsource_profile = default\nregion = eu-central-1\nmfa_serial = ");
        b.neg(
            "arn",
            &format!(
                "arn:aws:iam::{}:mfa/{}",
                self.account_id(),
                self.chars_in(4..10, LOWER_ALNUM)
            ),
        );
        b.s("\nduration_seconds = ");
        b.s(self.pick(&["3600", "43200"]));
        b.s("\n");
    }

    fn cfg_package_auth(&mut self, b: &mut B) {
        b.s("==> ~/.pypirc <==\n[distutils]\nindex-servers =\n    pypi\n    internal\n\n[pypi]\nusername = __token__\npassword = ");
        b.pii("pypi_token", &self.pypi_token());
        b.s("\n\n[internal]\nrepository = https://pypi.internal.example.com/\nusername = deploy\npassword = ");
        b.pii("secret", &self.password());
        b.s("\n\n==> ~/.npmrc <==\n@acme:registry=https://npm.pkg.github.com/\n//npm.pkg.github.com/:_authToken=");
        b.pii("github_token", &self.github_token());
        b.s("\n//registry.npmjs.org/:_authToken=\"");
        b.pii("npm_token", &self.npm_token());
        b.s("\"\nemail=");
        b.pii("email", &self.email());
        b.s("\nalways-auth=true\n\n==> /etc/pip.conf <==\n[global]\nindex-url = https://");
        b.s(self.pick(&["ci", "deploy", "jenkins"]));
        b.s(":");
        b.pii("url_password", &self.url_password());
        b.s("@artifactory.example.com/api/pypi/pypi/simple\ntrusted-host = artifactory.example.com\n");
    }

    fn cfg_properties(&mut self, b: &mut B) {
        b.s("# Spring Boot — generated ");
        b.neg("date", &self.date_any());
        b.s("\nspring.datasource.url=jdbc:postgresql://");
        b.pii("ipv4", &self.ipv4());
        b.s(":5432/billing?user=billing&password=");
        b.pii("secret", &self.chars_in(12..24, URL_PW_CHARS));
        b.s("&ssl=true\nspring.datasource.username=billing\nspring.datasource.password=");
        b.pii("secret", &self.password());
        b.s("\nspring.mail.host=smtp.example.com\nspring.mail.username=");
        b.pii("email", &self.email());
        b.s("\nspring.mail.password=");
        b.pii("secret", &self.password());
        b.s("\napp.jwt.signing-key=");
        b.pii("secret", &STANDARD.encode(self.bytes(48)));
        b.s("\napp.jwt.expiration-ms=86400000\napp.security.password-min-length=");
        b.neg("config_param", "12");
        b.s("\napp.security.token-validity-seconds=");
        b.neg("config_param", "1800");
        b.s("\nmanagement.endpoints.web.exposure.include=health,info\nlogging.level.org.hibernate.SQL=DEBUG\napp.support.phone=");
        b.pii("phone", &self.phone());
        b.s("\napp.build.version=");
        b.neg("version", &self.version4());
        b.s("\n");
    }

    fn cfg_terraform(&mut self, b: &mut B) {
        b.s("$ cat prod.auto.tfvars\nregion          = \"eu-west-1\"\ndb_username     = \"admin\"\ndb_password     = \"");
        b.pii("secret", &self.password());
        b.s("\"\ndatadog_api_key = \"");
        b.pii("secret", &self.hex(32));
        b.s("\"\nallowed_cidrs   = [\"");
        b.pii("ipv4", &self.ipv4());
        b.s("/32\", \"");
        b.pii("ipv4", &self.ipv4());
        b.s("/32\"]\nowner_email     = \"");
        b.pii("email", &self.email());
        b.s(&format!(
            "\"\n\n$ terraform plan\n  # aws_db_instance.main will be updated in-place\n  ~ resource \"aws_db_instance\" \"main\" {{\n        id       = \"db-{}\"\n      ~ password = ",
            self.chars(26, BASE32)
        ));
        b.neg("placeholder", "(sensitive value)");
        b.s("\n        username = \"admin\"\n        tags     = {\n            \"Owner\" = \"");
        b.pii("person", &self.full_name());
        b.s("\"\n        }\n    }\n\n  # tls_private_key.deploy will be created\n  + resource \"tls_private_key\" \"deploy\" {\n      + algorithm          = \"ED25519\"\n      + private_key_pem    = ");
        b.neg("placeholder", "(sensitive value)");
        b.s("\n      + public_key_openssh = (known after apply)\n    }\n\nPlan: 1 to add, 1 to change, 0 to destroy.\n");
    }

    fn cfg_wireguard(&mut self, b: &mut B) {
        b.s("[Interface]\nPrivateKey = ");
        b.pii("secret", &STANDARD.encode(self.bytes(32)));
        b.s("\nAddress = ");
        let net = self.range(0..256);
        b.pii("ipv4", &format!("10.8.{net}.1"));
        b.s("/24\nListenPort = 51820\nDNS = ");
        b.pii("ipv4", self.pick(&["1.1.1.1", "9.9.9.9", "8.8.8.8"]));
        b.s("\n");
        for _ in 0..self.range(1..4) {
            b.s("\n[Peer]\n# ");
            b.pii("person", &self.full_name());
            b.s("'s laptop\nPublicKey = ");
            b.neg("public_key", &STANDARD.encode(self.bytes(32)));
            b.s("\nPresharedKey = ");
            b.pii("secret", &STANDARD.encode(self.bytes(32)));
            b.s("\nAllowedIPs = ");
            b.pii("ipv4", &format!("10.8.{net}.{}", self.range(2..255)));
            b.s("/32\nEndpoint = ");
            b.pii("ipv4", &self.ipv4());
            b.s(":51820\nPersistentKeepalive = 25\n");
        }
    }

    fn cfg_django(&mut self, b: &mut B) {
        b.s("import os\nfrom pathlib import Path\n\nBASE_DIR = Path(__file__).resolve().parent.parent\nSECRET_KEY = \"");
        b.pii(
            "secret",
            &format!("django-insecure-{}", self.chars(50, PW_CHARS)),
        );
        b.s("\"\nDEBUG = False\nALLOWED_HOSTS = [\"app.example.com\", \"");
        b.pii("ipv4", &self.ipv4());
        b.s("\"]\n\nDATABASES = {\n    \"default\": {\n        \"ENGINE\": \"django.db.backends.postgresql\",\n        \"NAME\": \"app\",\n        \"USER\": \"app\",\n        \"PASSWORD\": \"");
        b.pii("secret", &self.password());
        b.s("\",\n        \"HOST\": \"");
        b.pii("ipv4", &self.ipv4());
        b.s("\",\n        \"PORT\": \"5432\",\n    }\n}\n\nEMAIL_HOST_PASSWORD = ");
        b.neg("placeholder", "os.environ[\"EMAIL_HOST_PASSWORD\"]");
        b.s("\nADMINS = [(\"");
        let (name, email) = self.person_with_email();
        b.pii("person", &name);
        b.s("\", \"");
        b.pii("email", &email);
        b.s("\")]\nAUTH_PASSWORD_VALIDATORS = [\n    {\"NAME\": \"django.contrib.auth.password_validation.MinimumLengthValidator\", \"OPTIONS\": {\"min_length\": 12}},\n]\nSESSION_COOKIE_AGE = 1209600\nSTRIPE_API_KEY = os.environ.get(\"STRIPE_API_KEY\", \"");
        b.pii("stripe_key", &self.stripe_key());
        b.s("\")\n");
    }

    fn cfg_appsettings(&mut self, b: &mut B) {
        let server = format!("sql-{}", self.chars(8, LOWER_ALNUM));
        let mut conn = t(format!(
            "Server=tcp:{server}.database.windows.net,1433;Initial Catalog=app;User ID=appadmin;Password="
        ));
        conn.extend(p("secret", self.password()));
        conn.extend(t(";Encrypt=True;Connection Timeout=30;"));
        let account = format!("st{}", self.chars(10, LOWER_ALNUM));
        let mut storage = t(format!(
            "DefaultEndpointsProtocol=https;AccountName={account};AccountKey="
        ));
        storage.extend(p("secret", STANDARD.encode(self.bytes(64))));
        storage.extend(t(";EndpointSuffix=core.windows.net"));
        let doc = obj(vec![
            (
                "ConnectionStrings",
                obj(vec![("Default", J::S(conn)), ("Storage", J::S(storage))]),
            ),
            (
                "Logging",
                obj(vec![(
                    "LogLevel",
                    obj(vec![
                        ("Default", js("Information")),
                        ("Microsoft.AspNetCore", js("Warning")),
                    ]),
                )]),
            ),
            (
                "Jwt",
                obj(vec![
                    ("Issuer", js("https://login.example.com")),
                    ("Audience", js("api")),
                    ("SigningKey", jp("secret", self.secret())),
                ]),
            ),
            (
                "Smtp",
                obj(vec![
                    ("Host", js("smtp.office365.com")),
                    ("Port", jr("587")),
                    ("User", jp("email", self.email())),
                    ("Password", jp("secret", self.password())),
                ]),
            ),
            (
                "Features",
                obj(vec![
                    ("TokenLifetimeMinutes", J::R(n("config_param", "60"))),
                    ("PasswordMinLength", J::R(n("config_param", "10"))),
                    ("SupportPhone", jp("phone", self.phone())),
                ]),
            ),
        ]);
        emit_json(b, &doc, Some(2), 0);
        b.s("\n");
    }

    fn cfg_netrc_ssh(&mut self, b: &mut B) {
        b.s("$ cat ~/.netrc\nmachine api.heroku.com\n  login ");
        b.pii("email", &self.email());
        b.s("\n  password ");
        b.pii("secret", &uuid4(self));
        b.s("\nmachine git.example.com login deploy password ");
        b.pii("secret", &self.password());
        b.s("\n\n$ cat ~/.ssh/config\nHost bastion\n  HostName ");
        b.pii("ipv4", &self.ipv4());
        b.s(&format!(
            "\n  User {}\n  IdentityFile ~/.ssh/id_ed25519\nHost db-primary\n  HostName ",
            self.chars_in(3..8, LOWER_ALNUM)
        ));
        b.pii("ipv6", &self.ipv6());
        b.s("\n  ProxyJump bastion\n\n$ cat ~/.ssh/id_ed25519.pub\nssh-ed25519 ");
        b.neg(
            "public_key",
            &format!("AAAAC3NzaC1lZDI1NTE5AAAAI{}", self.chars(43, B64)),
        );
        b.s(" ");
        b.pii("email", &self.email());
        b.s("\n\n$ cat ~/.ssh/id_ed25519\n");
        b.pii("private_key", &self.private_key("\n", ""));
        b.s("\n");
    }

    fn cfg_workflow(&mut self, b: &mut B) {
        b.s("name: release\non:\n  push:\n    tags: [\"v*\"]\nenv:\n  REGISTRY: ghcr.io\n  NODE_AUTH_TOKEN: ");
        b.neg("placeholder", "${{ secrets.NPM_TOKEN }}");
        b.s("\njobs:\n  publish:\n    runs-on: ubuntu-22.04\n    steps:\n      - uses: actions/checkout@");
        b.neg("git_sha", &self.hex(40));
        b.s(" # v4\n      - uses: actions/setup-node@v4\n        with:\n          node-version: \"20.x\"\n      - run: npm publish --access public\n        env:\n          NPM_TOKEN: ");
        b.pii("npm_token", &self.npm_token());
        b.s("\n      - name: notify\n        run: |\n          curl -sS -X POST https://slack.com/api/chat.postMessage \\\n            -H \"Authorization: Bearer ");
        b.pii("slack_token", &self.slack_token());
        b.s("\" \\\n            -d channel=C");
        b.neg("slack_id", &self.chars(10, BASE32));
        b.s(" -d text=\"released ${{ github.ref_name }}\"\n      - name: upload to pypi\n        env:\n          TWINE_USERNAME: __token__\n          TWINE_PASSWORD: ");
        if self.chance(0.5) {
            b.pii("pypi_token", &self.pypi_token());
        } else {
            b.neg("placeholder", "${{ secrets.PYPI_TOKEN }}");
        }
        b.s("\n        run: twine upload dist/*\n");
    }
}

// ---- documents: stack traces ----

impl H {
    fn stack_trace(&mut self) -> Doc {
        let mut b = B::default();
        match self.range(0..5) {
            0 => self.trace_python(&mut b),
            1 => self.trace_java(&mut b),
            2 => self.trace_node(&mut b),
            3 => self.trace_go(&mut b),
            _ => self.trace_rails(&mut b),
        }
        b.doc("stack_trace")
    }

    fn trace_python(&mut self, b: &mut B) {
        b.s("Traceback (most recent call last):\n  File \"/srv/app/venv/lib/python3.11/site-packages/sqlalchemy/engine/base.py\", line 145, in __init__\n    self._dbapi_connection = engine.raw_connection()\n  File \"/srv/app/billing/sync.py\", line 88, in sync_customer\n    resp = session.post(url, json=payload, timeout=10)\nsqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection to server at \"");
        b.pii("ipv4", &self.ipv4());
        b.s("\", port 5432 failed: FATAL:  password authentication failed for user \"billing\"\n\n(Background on this error at: https://sqlalche.me/e/20/e3q8)\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"/srv/app/billing/sync.py\", line 97, in sync_customer\n    resp.raise_for_status()\nrequests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: https://api.example.com/v2/customers?email=");
        b.pii("email", &self.email());
        b.s("&api_key=");
        b.pii("secret", &self.chars_in(24..40, ALNUM));
        b.s("\n\nLocal variables in sync_customer:\n    customer = {'id': ");
        b.s(&self.range(1..99_999).to_string());
        b.s(", 'name': '");
        b.pii("person", &self.full_name());
        b.s("', 'email': '");
        b.pii("email", &self.email());
        b.s("', 'phone': '");
        b.pii("phone", &self.phone());
        b.s("', 'card': '");
        b.pii("card", &self.card());
        b.s("'}\n    db_url = 'postgresql+psycopg2://billing:");
        b.pii("url_password", &self.url_password());
        b.s("@");
        b.pii("ipv4", &self.ipv4());
        b.s(":5432/billing'\n    retries = 3\n    started = ");
        b.neg("epoch", &format!("{}.{}", self.epoch_s(), self.digits(6)));
        b.s("\n");
    }

    fn trace_java(&mut self, b: &mut B) {
        b.neg("timestamp", &self.iso_ts());
        b.s(" ERROR 1 --- [nio-8080-exec-7] c.e.billing.PaymentController : Payment failed for customer ");
        b.pii("email", &self.email());
        b.s("\n");
        if self.chance(0.6) {
            b.s("com.example.billing.PaymentException: Card declined: ");
            b.pii("card", &self.card());
            b.s(" (holder ");
            b.pii("person", &self.full_name());
            b.s(")\n");
        } else {
            b.s("java.lang.IllegalArgumentException: Invalid card number ");
            b.neg("card_lookalike", &self.card_lookalike());
            b.s(" for com.example.billing.Customer@");
            b.neg("java_object", &self.hex(8));
            b.s("\n");
        }
        b.s("\tat com.example.billing.CardService.charge(CardService.java:142)\n\tat com.example.billing.PaymentController.pay(PaymentController.java:58)\n\tat java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)\n\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885)\nCaused by: org.postgresql.util.PSQLException: ERROR: duplicate key value violates unique constraint \"customers_iban_key\"\n  Detail: Key (iban)=(");
        b.pii("iban", &self.iban_compact());
        b.s(") already exists.\n\tat org.postgresql.core.v3.QueryExecutorImpl.receiveErrorResponse(QueryExecutorImpl.java:2713)\n\tat com.zaxxer.hikari.pool.ProxyPreparedStatement.executeUpdate(ProxyPreparedStatement.java:61)\n\t... 87 common frames omitted\nCaused by: java.net.ConnectException: Connection refused (to ");
        b.pii("ipv4", &self.ipv4());
        b.s(":5432, jdbc:postgresql://");
        b.pii("ipv4", &self.ipv4());
        b.s("/billing?password=");
        b.pii("secret", &self.chars_in(12..24, URL_PW_CHARS));
        b.s(")\n");
    }

    fn trace_node(&mut self, b: &mut B) {
        b.s("AxiosError: Request failed with status code 403\n    at settle (/app/node_modules/axios/lib/core/settle.js:19:12)\n    at IncomingMessage.handleStreamEnd (/app/node_modules/axios/lib/adapters/http.js:589:11)\n    at process.processTicksAndRejections (node:internal/process/task_queues:95:5) {\n  code: 'ERR_BAD_REQUEST',\n  config: {\n    method: 'post',\n    url: 'https://api.github.com/repos/acme/infra/dispatches',\n    headers: Object [AxiosHeaders] {\n      Accept: 'application/vnd.github+json',\n      'Content-Type': 'application/json',\n      Authorization: 'token ");
        b.pii("github_token", &self.github_token());
        b.s("',\n      'User-Agent': 'axios/1.6.7'\n    },\n    data: '{\"event_type\":\"deploy\",\"client_payload\":{\"requested_by\":\"");
        b.pii("email", &self.email());
        b.s("\",\"ref\":\"");
        b.neg("git_sha", &self.hex(40));
        b.s("\"}}'\n  },\n  response: {\n    status: 403,\n    headers: {\n      'x-github-request-id': '");
        b.neg(
            "request_id",
            &format!(
                "{}:{}:{}:{}:{}",
                self.hex(4).to_uppercase(),
                self.hex(4).to_uppercase(),
                self.hex(6).to_uppercase(),
                self.hex(6).to_uppercase(),
                self.hex(8).to_uppercase()
            ),
        );
        b.s("',\n      'x-ratelimit-reset': '");
        b.neg("epoch", &self.epoch_s());
        b.s("'\n    },\n    data: {\n      message: 'Resource not accessible by integration',\n      documentation_url: 'https://docs.github.com/rest'\n    }\n  }\n}\n");
    }

    fn trace_go(&mut self, b: &mut B) {
        b.s(&format!(
            "{}/{:02}/{:02} {:02}:{:02}:{:02} http: panic serving ",
            self.range(2022..2026),
            self.range(1..13),
            self.range(1..29),
            self.range(0..24),
            self.range(0..60),
            self.range(0..60)
        ));
        b.pii("ipv4", &self.ipv4());
        b.s(&format!(
            ":{}: runtime error: invalid memory address or nil pointer dereference\ngoroutine {} [running]:\nnet/http.(*conn).serve.func1()\n\t/usr/local/go/src/net/http/server.go:1898 +0xbe\npanic({{",
            self.range(1024..65535),
            self.range(1..9999)
        ));
        b.neg("memory_address", &format!("0x{}", self.hex(6)));
        b.s("?, ");
        b.neg("memory_address", &format!("0x{}", self.hex(6)));
        b.s("?})\n\t/usr/local/go/src/runtime/panic.go:770 +0x132\nmain.(*Handler).chargeCard(");
        b.neg("memory_address", &format!("0xc000{}", self.hex(6)));
        b.s(", {");
        b.neg("memory_address", &format!("0x{}", self.hex(6)));
        b.s(", ");
        b.neg("memory_address", &format!("0xc000{}", self.hex(6)));
        b.s("})\n\t/app/handler.go:142 +0x2f4\nrequest dump:\nPOST /v1/charge HTTP/1.1\nHost: payments.internal\nAuthorization: Basic ");
        let user = self.chars_in(4..9, LOWER_ALNUM);
        let pw = self.password();
        b.pii("secret", &STANDARD.encode(format!("{user}:{pw}")));
        b.s("\nX-Forwarded-For: ");
        b.pii("ipv4", &self.ipv4());
        b.s(", ");
        b.pii("ipv4", &self.ipv4());
        b.s("\nContent-Type: application/json\n\n{\"card\":\"");
        b.pii("card", &self.card());
        b.s(&format!("\",\"cvc\":\"{}\",\"name\":\"", self.digits(3)));
        b.pii("person", &self.full_name());
        b.s("\",\"email\":\"");
        b.pii("email", &self.email());
        b.s("\"}\n");
    }

    fn trace_rails(&mut self, b: &mut B) {
        b.s("Started POST \"/users/sign_in\" for ");
        b.pii("ipv4", &self.ipv4());
        b.s(" at ");
        b.neg("timestamp", &self.iso_ts());
        b.s("\nProcessing by Users::SessionsController#create as HTML\n  Parameters: {\"authenticity_token\"=>\"");
        b.neg("placeholder", "[FILTERED]");
        b.s("\", \"user\"=>{\"email\"=>\"");
        let email = self.email();
        b.pii("email", &email);
        b.s("\", \"password\"=>\"");
        b.neg("placeholder", "[FILTERED]");
        b.s("\", \"remember_me\"=>\"1\"}, \"commit\"=>\"Log in\"}\n  User Load (0.6ms)  SELECT \"users\".* FROM \"users\" WHERE \"users\".\"email\" = $1 LIMIT $2  [[\"email\", \"");
        b.pii("email", &email);
        b.s("\"], [\"LIMIT\", 1]]\nCompleted 500 Internal Server Error in 48ms (ActiveRecord: 3.1ms | Allocations: 10233)\n\nNoMethodError (undefined method `otp_secret' for nil:NilClass):\n\napp/controllers/users/sessions_controller.rb:27:in `create'\napp/models/user.rb:112:in `validate_and_consume_otp!'\n\nSentry event ");
        b.neg("hex_id", &self.hex(32));
        b.s(" sent (user: {\"id\"=>");
        b.s(&self.range(1..99_999).to_string());
        b.s(", \"email\"=>\"");
        b.pii("email", &email);
        b.s("\", \"ip_address\"=>\"");
        b.pii("ipv6", &self.ipv6());
        b.s("\", \"name\"=>\"");
        b.pii("person", &self.full_name());
        b.s("\"})\n");
    }
}

// ---- documents: HTTP dumps ----

impl H {
    fn http_dump(&mut self) -> Doc {
        let mut b = B::default();
        match self.range(0..5) {
            0 => self.http_curl(&mut b),
            1 => self.http_raw_stripe(&mut b),
            2 => self.http_python_debug(&mut b),
            3 => self.http_har(&mut b),
            _ => self.http_webhook(&mut b),
        }
        b.doc("http_dump")
    }

    fn http_curl(&mut self, b: &mut B) {
        let ip = self.ipv4();
        let host = self.pick(&["api.example.com", "crm.example.io", "hr.example.net"]);
        b.s(&format!("$ curl -v https://{host}/v1/customers?email="));
        let email = self.email();
        b.pii("email", &email);
        b.s(" \\\n    -H \"X-Api-Key: ");
        b.pii("secret", &self.chars_in(32..48, ALNUM));
        b.s("\"\n*   Trying ");
        b.pii("ipv4", &ip);
        b.s(&format!(":443...\n* Connected to {host} ("));
        b.pii("ipv4", &ip);
        b.s(") port 443 (#0)\n* ALPN: offers h2,http/1.1\n* TLSv1.3 (OUT), TLS handshake, Client hello (1):\n* SSL connection using TLSv1.3 / TLS_AES_256_GCM_SHA384\n* Server certificate:\n*  subject: CN=");
        b.s(host);
        b.s("\n*  start date: ");
        b.neg("date", &self.date_any());
        b.s("\n*  issuer: C=US; O=Let's Encrypt; CN=R3\n*  X509v3 Subject Alternative Name (OID ");
        b.neg("oid", self.oid());
        b.s(")\n> GET /v1/customers?email=");
        b.pii("email", &email);
        b.s(&format!(
            " HTTP/2\n> Host: {host}\n> User-Agent: curl/8.5.0\n> Accept: */*\n> Authorization: Bearer "
        ));
        if self.chance(0.5) {
            b.pii("jwt", &self.jwt());
        } else {
            b.pii("secret", &self.opaque_token());
        }
        b.s("\n>\n< HTTP/2 200\n< date: ");
        b.neg("date", &self.http_date());
        b.s("\n< content-type: application/json\n< x-request-id: ");
        b.neg("uuid", &uuid4(self));
        b.s("\n< set-cookie: __session=");
        b.pii("jwt", &self.jwt());
        b.s("; Path=/; HttpOnly; Secure; SameSite=Lax\n< strict-transport-security: max-age=63072000\n<\n");
        let doc = obj(vec![
            (
                "data",
                J::A(vec![obj(vec![
                    (
                        "id",
                        jn("random_id", format!("cus_{}", self.chars(14, ALNUM))),
                    ),
                    ("name", jp("person", self.full_name())),
                    ("email", jp("email", email)),
                    ("phone", jp("phone", self.phone())),
                    (
                        "address",
                        obj(vec![
                            (
                                "line1",
                                js(format!("{} {}", self.range(1..300), self.pick(STREETS))),
                            ),
                            ("city", js(self.pick(CITIES))),
                            ("postal_code", js(self.digits(5))),
                        ]),
                    ),
                ])]),
            ),
            ("has_more", jr("false")),
        ]);
        emit_json(b, &doc, None, 0);
        b.s("\n* Connection #0 to host ");
        b.s(host);
        b.s(" left intact\n");
    }

    fn http_raw_stripe(&mut self, b: &mut B) {
        b.s("POST /v1/payment_methods HTTP/1.1\nHost: api.stripe.com\nAuthorization: Bearer ");
        b.pii("stripe_key", &self.stripe_key());
        b.s("\nIdempotency-Key: ");
        b.neg("uuid", &uuid4(self));
        b.s("\nStripe-Version: 2023-10-16\nContent-Type: application/x-www-form-urlencoded\n\ntype=card&card[number]=");
        let card = self.card_digits();
        b.pii("card", &card);
        b.s(&format!(
            "&card[exp_month]={:02}&card[exp_year]={}&card[cvc]={}&billing_details[email]=",
            self.range(1..13),
            self.range(2025..2032),
            self.digits(3)
        ));
        let email = self.email();
        b.pii("email", &email);
        b.s("\n\nHTTP/1.1 200 OK\nServer: nginx\nDate: ");
        b.neg("date", &self.http_date());
        b.s("\nContent-Type: application/json\nRequest-Id: ");
        b.neg("random_id", &format!("req_{}", self.chars(14, ALNUM)));
        b.s("\n\n");
        let doc = obj(vec![
            (
                "id",
                jn("random_id", format!("pm_{}", self.chars(24, ALNUM))),
            ),
            ("object", js("payment_method")),
            (
                "billing_details",
                obj(vec![
                    ("email", jp("email", email)),
                    ("name", jp("person", self.full_name())),
                    ("phone", jr("null")),
                ]),
            ),
            (
                "card",
                obj(vec![
                    ("brand", js("visa")),
                    ("last4", js(card[card.len() - 4..].to_string())),
                    ("fingerprint", jn("random_id", self.chars(16, ALNUM))),
                    ("exp_month", jr(self.range(1..13).to_string())),
                    ("exp_year", jr(self.range(2025..2032).to_string())),
                ]),
            ),
            (
                "customer",
                jn("random_id", format!("cus_{}", self.chars(14, ALNUM))),
            ),
            ("livemode", jr("false")),
        ]);
        emit_json(b, &doc, Some(2), 0);
        b.s("\n");
    }

    fn http_python_debug(&mut self, b: &mut B) {
        b.s("send: b'POST /oauth/token HTTP/1.1\\r\\nHost: auth.example.com\\r\\nUser-Agent: python-requests/2.31.0\\r\\nAccept-Encoding: gzip, deflate\\r\\nAccept: */*\\r\\nConnection: keep-alive\\r\\nAuthorization: Basic ");
        let client = self.chars(20, LOWER_ALNUM);
        let client_secret = self.chars(32, ALNUM);
        b.pii(
            "secret",
            &STANDARD.encode(format!("{client}:{client_secret}")),
        );
        b.s(&format!(
            "\\r\\nContent-Length: {}\\r\\nContent-Type: application/x-www-form-urlencoded\\r\\n\\r\\n'\nsend: b'grant_type=password&username=",
            self.range(60..140)
        ));
        b.pii("email", &self.email());
        b.s("&password=");
        b.pii("secret", &self.chars_in(10..24, URL_PW_CHARS));
        b.s("&scope=openid+profile'\nreply: 'HTTP/1.1 200 OK\\r\\n'\nheader: Content-Type: application/json\nheader: Cache-Control: no-store\nheader: Date: ");
        b.neg("date", &self.http_date());
        b.s("\n");
        let doc = obj(vec![
            ("access_token", jp("jwt", self.jwt())),
            ("token_type", jn("config_param", "Bearer")),
            ("expires_in", jr("3600")),
            ("refresh_token", jp("secret", self.opaque_token())),
            ("id_token", jp("jwt", self.jwt())),
            ("scope", js("openid profile")),
        ]);
        emit_json(b, &doc, None, 0);
        b.s("\n");
    }

    fn http_har(&mut self, b: &mut B) {
        let key = self.google_key();
        let mut url = t("https://maps.googleapis.com/maps/api/geocode/json?address=");
        url.extend(t(format!(
            "{}+{}&key=",
            self.range(1..300),
            self.pick(STREETS).replace(' ', "+")
        )));
        url.extend(p("google_api_key", key.clone()));
        let header = |name: &str, value: J| obj(vec![("name", js(name)), ("value", value)]);
        let mut bearer = t("Bearer ");
        bearer.extend(p("jwt", self.jwt()));
        let body = {
            let mut c = t("{\\\"results\\\":[{\\\"formatted_address\\\":\\\"");
            c.extend(t(format!(
                "{} {}, {}",
                self.range(1..300),
                self.pick(STREETS),
                self.pick(CITIES)
            )));
            c.extend(t("\\\",\\\"place_id\\\":\\\""));
            c.extend(n("random_id", self.chars(27, B64URL)));
            c.extend(t("\\\"}],\\\"status\\\":\\\"OK\\\"}"));
            c
        };
        let entry = obj(vec![
            ("startedDateTime", jn("timestamp", self.iso_ts())),
            (
                "time",
                jr(format!("{}.{}", self.range(20..900), self.range(0..10))),
            ),
            (
                "request",
                obj(vec![
                    ("method", js("GET")),
                    ("url", J::S(url)),
                    ("httpVersion", js("h3")),
                    (
                        "headers",
                        J::A(vec![
                            header("authorization", J::S(bearer)),
                            header("x-api-key", jp("secret", self.secret())),
                            header(
                                "user-agent",
                                js(
                                    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.112 Safari/537.36",
                                ),
                            ),
                        ]),
                    ),
                    (
                        "queryString",
                        J::A(vec![header("key", jp("google_api_key", key))]),
                    ),
                ]),
            ),
            (
                "response",
                obj(vec![
                    ("status", jr("200")),
                    (
                        "content",
                        obj(vec![
                            ("mimeType", js("application/json; charset=UTF-8")),
                            ("text", J::S(body)),
                        ]),
                    ),
                ]),
            ),
            ("serverIPAddress", jp("ipv6", self.ipv6())),
            ("connection", js(self.range(100_000..999_999).to_string())),
        ]);
        let har = obj(vec![(
            "log",
            obj(vec![
                ("version", js("1.2")),
                (
                    "creator",
                    obj(vec![
                        ("name", js("WebInspector")),
                        ("version", js("537.36")),
                    ]),
                ),
                ("entries", J::A(vec![entry])),
            ]),
        )]);
        emit_json(b, &har, Some(2), 0);
        b.s("\n");
    }

    fn http_webhook(&mut self, b: &mut B) {
        if self.chance(0.5) {
            b.s("Delivery ");
            let id = uuid4(self);
            b.neg("uuid", &id);
            b.s(" — push to acme/api — ");
            b.neg("timestamp", &self.iso_ts());
            b.s(&format!(
                "\nRequest URL: https://ci.example.com/hooks/github\nRequest method: POST\nHeaders:\n  Accept: */*\n  Content-Type: application/json\n  User-Agent: GitHub-Hookshot/{}\n  X-GitHub-Delivery: ",
                self.hex(7)
            ));
            b.neg("uuid", &id);
            b.s(&format!(
                "\n  X-GitHub-Event: push\n  X-GitHub-Hook-ID: {}\n  X-Hub-Signature-256: ",
                self.number(9)
            ));
            b.neg("signature", &format!("sha256={}", self.hex(64)));
            b.s("\nPayload:\n");
            let (name, email) = self.person_with_email();
            let user = self.chars_in(4..10, LOWER_ALNUM);
            let doc = obj(vec![
                ("ref", js("refs/heads/main")),
                ("before", jn("git_sha", self.hex(40))),
                ("after", jn("git_sha", self.hex(40))),
                (
                    "pusher",
                    obj(vec![
                        ("name", js(user.clone())),
                        ("email", jp("email", email.clone())),
                    ]),
                ),
                (
                    "head_commit",
                    obj(vec![
                        ("id", jn("git_sha", self.hex(40))),
                        ("message", js(self.pick(COMMIT_SUBJECTS))),
                        ("timestamp", jn("timestamp", self.iso_ts())),
                        (
                            "author",
                            obj(vec![
                                ("name", jp("person", name)),
                                ("email", jp("email", email)),
                                ("username", js(user)),
                            ]),
                        ),
                    ]),
                ),
            ]);
            emit_json(b, &doc, None, 0);
            b.s(&format!(
                "\nResponse: 200 OK in 0.{}s\n",
                self.range(10..99)
            ));
        } else {
            b.s("POST /webhooks/stripe HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\nContent-Type: application/json; charset=utf-8\r\nStripe-Signature: ");
            let ts = self.epoch_s();
            b.neg("signature", &format!("t={ts},v1={}", self.hex(64)));
            b.s("\r\n\r\n");
            let doc = obj(vec![
                (
                    "id",
                    jn("random_id", format!("evt_{}", self.chars(24, ALNUM))),
                ),
                ("type", js("charge.dispute.created")),
                ("created", J::R(n("epoch", ts))),
                (
                    "data",
                    obj(vec![(
                        "object",
                        obj(vec![
                            (
                                "id",
                                jn("random_id", format!("dp_{}", self.chars(24, ALNUM))),
                            ),
                            ("amount", jr(self.range(100..99_999).to_string())),
                            (
                                "evidence",
                                obj(vec![
                                    ("customer_name", jp("person", self.full_name())),
                                    ("customer_email_address", jp("email", self.email())),
                                    ("customer_purchase_ip", jp("ipv4", self.ipv4())),
                                    ("billing_address", js(self.pick(CITIES))),
                                ]),
                            ),
                        ]),
                    )]),
                ),
            ]);
            emit_json(b, &doc, Some(2), 0);
            b.s("\r\n\r\nHTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nwebhook secret mismatch: expected ");
            b.neg("placeholder", "whsec_****");
            b.s("\r\n");
        }
    }
}

// ---- documents: e-mail and chat threads ----

impl H {
    fn thread(&mut self) -> Doc {
        let mut b = B::default();
        match self.range(0..4) {
            0 => self.email_thread(&mut b),
            1 => self.slack_export(&mut b),
            2 => self.support_chat(&mut b),
            _ => self.meeting_notes(&mut b),
        }
        b.doc("thread")
    }

    fn email_thread(&mut self, b: &mut B) {
        let f = self.first();
        let l = self.last();
        let name = format!("{f} {l}");
        let email = self.email_for(f, l);
        let (agent, agent_email) = self.person_with_email();
        b.s("From: \"");
        b.pii("person", &name);
        b.s("\" <");
        b.pii("email", &email);
        b.s(">\nTo: ");
        b.pii("email", &agent_email);
        b.s("\nCc: ");
        let (cc, cc_email) = self.person_with_email();
        b.pii("person", &cc);
        b.s(" <");
        b.pii("email", &cc_email);
        b.s(&format!(
            ">\nDate: {}, {} {} {} {:02}:{:02}:{:02} +0{}00\nSubject: Re: Refund for order #{}\nMessage-ID: <",
            self.pick(WEEKDAYS),
            self.range(1..29),
            self.pick(MONTHS),
            self.range(2023..2026),
            self.range(0..24),
            self.range(0..60),
            self.range(0..60),
            self.range(0..3),
            self.range(100_000..999_999)
        ));
        b.neg(
            "message_id",
            &format!(
                "{}.{}@mail.{}",
                self.hex(16),
                self.digits(6),
                self.pick(DOMAINS)
            ),
        );
        b.s(">\nIn-Reply-To: <");
        b.neg(
            "message_id",
            &format!("CA+{}@mail.gmail.com", self.chars(40, B64URL)),
        );
        b.s(">\n\nHi ");
        b.pii("person", agent.split(' ').next().expect("first name"));
        b.s(",\n\n");
        for _ in 0..self.range(2..5) {
            self.customer_paragraph(b);
            b.s("\n\n");
        }
        match self.range(0..3) {
            0 => {
                b.s("Best,\n");
                b.pii("person", f);
            }
            1 => {
                b.s("Mit freundlichen Grüßen\n");
                b.pii("person", &name);
                b.s("\nTel.: ");
                b.pii("phone", &self.phone());
            }
            _ => {
                b.s("--\n");
                b.pii("person", &name);
                b.s(" | ");
                b.pii("phone", &self.phone());
                b.s(" | ");
                b.neg("not_a_person", self.pick(COMPANIES));
            }
        }
        b.s("\n\nOn ");
        b.neg("date", &self.date_any());
        b.s(", ");
        b.pii("person", &agent);
        b.s(" <");
        b.pii("email", &agent_email);
        b.s("> wrote:\n> Dear ");
        b.s(self.pick(&["Mr. ", "Ms. ", "Dr. ", "Mx. "]));
        b.pii("person", l);
        b.s(",\n>\n> we could not process the refund to the card ending in ");
        b.s(&self.digits(4));
        b.s(". Could you\n> send us the IBAN of the account? Our reference: ");
        b.neg("ulid", &self.ulid());
        b.s(".\n>\n> Kind regards,\n> ");
        b.pii("person", &agent);
        b.s("\n> Customer Care\n");
    }

    /// A paragraph a customer writes to support.
    fn customer_paragraph(&mut self, b: &mut B) {
        match self.range(0..12) {
            0 => {
                b.s("The card you charged was ");
                b.pii("card", &self.card());
                b.s(" — please refund to my bank account instead: IBAN ");
                b.pii("iban", &self.iban());
                b.s(", account holder ");
                b.pii("person", &self.full_name());
                b.s(".");
            }
            1 => {
                b.s("My new phone number is ");
                b.pii("phone", &self.phone());
                b.s(", the old one (");
                b.pii("phone", &self.phone());
                b.s(") no longer works.");
            }
            2 => {
                b.s("I can't log in. The temporary password is ");
                b.pii("secret", &self.password());
                b.s(" but it says expired.");
            }
            3 => {
                b.s("Meine Kontonummer (IBAN): ");
                b.pii("iban", &self.iban());
                b.s(". Passwort: ");
                b.pii("secret", &self.password());
            }
            4 => {
                b.s("For the credit check: SSN ");
                b.pii("ssn", &self.ssn());
                b.s(", born ");
                b.neg("date", &self.date_any());
                b.s(".");
            }
            5 => {
                b.s("The book I ordered (ISBN ");
                b.neg("isbn", &self.isbn13());
                b.s(") arrived damaged, the replacement (ISBN ");
                b.neg("isbn", &self.isbn10());
                b.s(") never came.");
            }
            6 => {
                b.s("My phone's IMEI is ");
                b.neg("imei", &self.imei());
                b.s(" and the SIM is ");
                b.neg("iccid", &self.iccid());
                b.s(", in case you need them for the insurance claim.");
            }
            7 => {
                b.s("Your form rejected ");
                b.neg("card_lookalike", &self.card_lookalike());
                b.s(" — I probably mistyped, the right one is ");
                b.pii("card", &self.card());
                b.s(".");
            }
            8 => {
                b.s("Please also update the billing e-mail to ");
                b.pii("email", &self.email());
                b.s(" (my colleague ");
                b.pii("person", &self.full_name());
                b.s(" handles invoices now).");
            }
            9 => {
                b.s("We stayed at the ");
                b.neg("not_a_person", self.not_a_person());
                b.s(" and then the ");
                b.neg("not_a_person", self.not_a_person());
                b.s(", both charged twice.");
            }
            10 => {
                b.s("The replacement part is ");
                b.neg("part_number", &self.part_number());
                b.s(", serial ");
                b.neg(
                    "random_id",
                    &self.chars(12, b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"),
                );
                b.s(", barcode ");
                b.neg("ean13", &self.ean13());
                b.s(".");
            }
            _ => {
                b.s("Order placed ");
                b.neg("date", &self.date_any());
                b.s(" at ");
                b.s(&format!(
                    "{:02}:{:02}",
                    self.range(0..24),
                    self.range(0..60)
                ));
                b.s(", invoice ");
                b.neg("numeric_id", &self.number(10));
                b.s(", amount €");
                b.s(&self.amount());
                b.s(".");
            }
        }
    }

    fn slack_export(&mut self, b: &mut B) {
        let people: Vec<String> = (0..3).map(|_| self.full_name()).collect();
        b.s(&format!("#incident-{}  (exported ", self.range(1000..9999)));
        b.neg("date", &self.date_any());
        b.s(")\n");
        let mut minute = self.range(0..30);
        let mut line = |h: &mut H, b: &mut B, who: usize| {
            minute += h.range(1..4);
            b.s(&format!("[14:{minute:02}] "));
            b.pii("person", &people[who % people.len()]);
            b.s(": ");
        };
        line(self, b, 0);
        b.s(&format!(
            "heads up, the build log for <https://ci.example.com/job/{0}|#{0}> printed `DATABASE_URL=postgres://svc:",
            self.range(1000..9999)
        ));
        b.pii("url_password", &self.url_password());
        b.s("@");
        b.pii("ipv4", &self.ipv4());
        b.s(":5432/prod`\n");
        line(self, b, 1);
        b.s(":scream: rotating now, cc <@U");
        b.neg("slack_id", &self.chars(8, BASE32));
        b.s(">\n");
        line(self, b, 1);
        b.s("old key was ");
        b.pii("aws_access_key", &self.aws_key());
        b.s(", new one is in vault under `kv/prod/aws`\n");
        line(self, b, 0);
        b.s("can someone check whether ");
        b.pii("email", &self.email());
        b.s(" still has access?\n");
        line(self, b, 2);
        b.s("also the bot token `");
        b.pii("slack_token", &self.slack_token());
        b.s("` was in the same log\n");
        line(self, b, 2);
        b.s("and the password for the reporting user is ");
        b.pii("secret", &self.password());
        b.s(" in plain text in the same file :facepalm:\n");
        line(self, b, 1);
        b.s("revoked. Incident ts ");
        b.neg(
            "slack_id",
            &format!("{}.{}", self.epoch_s(), self.digits(6)),
        );
        b.s("\n");
        line(self, b, 0);
        b.s("fixed in ");
        b.neg("git_sha", &self.hex(7));
        b.s(", thanks all 🙏\n");
    }

    fn support_chat(&mut self, b: &mut B) {
        let f = self.first();
        let l = self.last();
        b.s("Chat transcript — ");
        b.neg("date", &self.date_any());
        b.s(" — Conversation ID ");
        b.neg("ulid", &self.ulid());
        b.s("\nVisitor: ");
        b.pii("person", &format!("{f} {l}"));
        b.s(" (");
        let email = self.email_for(f, l);
        b.pii("email", &email);
        b.s(")\nPage: https://shop.example.com/checkout?step=payment&ref=");
        b.neg("random_id", &self.chars(21, B64URL));
        b.s("\nIP: ");
        b.pii("ipv4", &self.ipv4());
        let agent = self.first();
        b.s("\n\n[10:31:04] Visitor: hi, my payment keeps failing\n[10:31:30] ");
        b.pii("person", agent);
        b.s(" (agent): Hi ");
        b.pii("person", f);
        b.s("! Sorry to hear that. Which card are you using?\n[10:32:12] Visitor: ");
        b.neg("card_lookalike", &self.card_lookalike());
        b.s(&format!(
            "  exp {:02}/{}\n[10:32:40] ",
            self.range(1..13),
            self.range(25..32)
        ));
        b.pii("person", agent);
        b.s(" (agent): our system says the number is invalid, could you double-check it?\n[10:33:02] Visitor: oh sorry it's ");
        b.pii("card", &self.card());
        b.s("\n[10:34:15] Visitor: also my SSN is ");
        b.pii("ssn", &self.ssn());
        b.s(" if you need it for the financing\n[10:35:00] ");
        b.pii("person", agent);
        b.s(" (agent): please never share your SSN in chat! I've redacted it: ");
        b.neg("masked_ssn", &format!("***-**-{}", self.digits(4)));
        b.s("\n[10:36:21] Visitor: ok. you can call me at ");
        b.pii("phone", &self.phone());
        b.s("\n[10:36:40] Visitor: or on my work line (");
        b.pii("phone", &self.phone());
        b.s(")\n[10:37:02] ");
        b.pii("person", agent);
        b.s(" (agent): Thanks! Ticket ");
        b.neg("numeric_id", &self.number(10));
        b.s(" created; confirmation goes to ");
        b.pii("email", &email);
        b.s(".\n");
    }

    fn meeting_notes(&mut self, b: &mut B) {
        b.s("Meeting notes — vendor onboarding (");
        b.neg("date", &self.date_any());
        b.s(")\nAttendees: ");
        for i in 0..self.range(2..5) {
            if i > 0 {
                b.s(", ");
            }
            b.pii("person", &self.full_name());
        }
        b.s(" (");
        b.neg("not_a_person", self.pick(COMPANIES));
        b.s(")\n\n- ");
        b.pii("person", self.first());
        b.s(" will send the contract to ");
        b.pii("email", &self.email());
        b.s(" by Friday.\n- Vendor bank details: IBAN ");
        b.pii("iban", &self.iban());
        b.s(", BIC ");
        b.neg("bic", self.bic());
        b.s(", VAT ");
        b.neg("vat_id", &self.vat_id());
        b.s(".\n- Portal login for the vendor: user `");
        b.s(&self.chars_in(5..10, LOWER_ALNUM));
        b.s("`, password `");
        b.pii("secret", &self.password());
        b.s("` (change on first login!)\n- VPN gateway is ");
        b.pii("ipv4", &self.ipv4());
        b.s("; fallback ");
        b.pii("ipv6", &self.ipv6());
        b.s(".\n- Firmware on the scanners must be ");
        b.neg("version", &self.version4());
        b.s(" or newer (");
        b.neg("semver_range", &self.semver_range());
        b.s(" breaks).\n- Next sync: ");
        b.neg("date", &self.date_any());
        b.s(" 15:00 CET at the ");
        b.neg("not_a_person", self.not_a_person());
        b.s(" office.\n");
    }
}

// ---- documents: SQL output ----

impl H {
    fn sql_output(&mut self) -> Doc {
        let mut b = B::default();
        match self.range(0..4) {
            0 => self.sql_psql(&mut b),
            1 => self.sql_mysql(&mut b),
            2 => self.sql_dump(&mut b),
            _ => self.sql_log(&mut b),
        }
        b.doc("sql_table")
    }

    fn sql_psql(&mut self, b: &mut B) {
        b.s("app=> SELECT id, full_name, email, phone, ssn, created_at FROM customers WHERE created_at > now() - interval '1 day' ORDER BY id LIMIT 20;\n");
        let mut id = self.range(1..90_000);
        let rows: Vec<Vec<Cell>> = (0..self.range(1..20))
            .map(|_| {
                id += self.range(1..40);
                let (name, email) = self.person_with_email();
                let ssn = match self.range(0..6) {
                    0 => t(""),
                    1 => n("invalid_ssn", self.invalid_ssn()),
                    _ => p("ssn", self.ssn()),
                };
                let phone = if self.chance(0.8) {
                    p("phone", self.phone())
                } else {
                    t("")
                };
                vec![
                    t(id.to_string()),
                    p("person", name),
                    p("email", email),
                    phone,
                    ssn,
                    n("timestamp", self.iso_ts()),
                ]
            })
            .collect();
        render_psql(
            b,
            &["id", "full_name", "email", "phone", "ssn", "created_at"],
            &rows,
        );
        b.s("\n");
    }

    fn sql_mysql(&mut self, b: &mut B) {
        b.s("mysql> SELECT u.id, u.username, u.email, u.last_ip, pm.card_number, pm.iban FROM users u JOIN payment_methods pm ON pm.user_id = u.id LIMIT 10;\n");
        let count = self.range(1..11);
        let rows: Vec<Vec<Cell>> = (0..count)
            .map(|_| {
                let ip = if self.chance(0.8) {
                    p("ipv4", self.ipv4())
                } else {
                    p("ipv6", self.ipv6())
                };
                let (card, iban) = match self.range(0..4) {
                    0 => (t("NULL"), p("iban", self.iban_compact())),
                    1 => (n("masked_card", self.masked_card()), t("NULL")),
                    _ => (p("card", self.card_digits()), t("NULL")),
                };
                vec![
                    t(self.range(1..99_999).to_string()),
                    t(self.chars_in(4..12, LOWER_ALNUM)),
                    p("email", self.email()),
                    ip,
                    card,
                    iban,
                ]
            })
            .collect();
        render_mysql(
            b,
            &["id", "username", "email", "last_ip", "card_number", "iban"],
            &rows,
        );
        b.s(&format!(
            "{count} row{} in set (0.0{} sec)\n",
            if count == 1 { "" } else { "s" },
            self.range(0..10)
        ));
    }

    fn sql_dump(&mut self, b: &mut B) {
        b.s("-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n--\n-- Host: ");
        b.pii("ipv4", &self.ipv4());
        b.s("    Database: crm\n-- ------------------------------------------------------\n-- Server version\t8.0.36\n\nLOCK TABLES `contacts` WRITE;\nINSERT INTO `contacts` VALUES ");
        for i in 0..self.range(2..9) {
            if i > 0 {
                b.s(",");
            }
            b.s(&format!("({},'", i + 1));
            let (name, email) = self.person_with_email();
            b.pii("person", &name);
            b.s("','");
            b.pii("email", &email);
            b.s("','");
            b.pii("phone", &self.phone());
            b.s("','");
            b.neg("date", &self.date_any());
            b.s("',");
            if self.chance(0.3) {
                b.s("'");
                b.neg("not_a_person", self.not_a_person());
                b.s("'");
            } else {
                b.s("NULL");
            }
            b.s(")");
        }
        b.s(";\nUNLOCK TABLES;\n\n-- PostgreSQL section (pg_dump)\nCOPY public.employees (id, name, ssn, iban, hired) FROM stdin;\n");
        for i in 0..self.range(2..8) {
            b.s(&format!("{}\t", i + 1));
            b.pii("person", &self.full_name());
            b.s("\t");
            if self.chance(0.85) {
                b.pii("ssn", &self.ssn());
            } else {
                b.s("\\N");
            }
            b.s("\t");
            b.pii("iban", &self.iban_compact());
            b.s("\t");
            b.neg("date", &self.date_any());
            b.s("\n");
        }
        b.s("\\.\n\nALTER USER 'reporting'@'%' IDENTIFIED BY '");
        b.pii("secret", &self.password());
        b.s("';\n");
    }

    fn sql_log(&mut self, b: &mut B) {
        for _ in 0..self.range(3..8) {
            let pid = self.range(1000..99_999);
            b.neg("timestamp", &self.iso_ts());
            b.s(&format!(" [{pid}] "));
            b.neg("user_at_db", "app@crm");
            match self.range(0..6) {
                0 => {
                    b.s(&format!(
                        " LOG:  duration: {}.{} ms  statement: UPDATE customers SET phone = '",
                        self.range(100..9999),
                        self.range(0..10)
                    ));
                    b.pii("phone", &self.phone());
                    b.s("', email = '");
                    b.pii("email", &self.email());
                    b.s(&format!("' WHERE id = {}\n", self.range(1..99_999)));
                }
                1 => {
                    b.s(" ERROR:  new row for relation \"cards\" violates check constraint \"luhn_ok\"\n");
                    b.neg("timestamp", &self.iso_ts());
                    b.s(&format!(
                        " [{pid}] DETAIL:  Failing row contains ({}, ",
                        self.range(1..999)
                    ));
                    b.neg("card_lookalike", &self.card_lookalike());
                    b.s(", ");
                    b.neg("date", &self.date_any());
                    b.s(").\n");
                }
                2 => {
                    b.s(" STATEMENT:  ALTER ROLE reporting WITH PASSWORD '");
                    b.pii("secret", &self.password());
                    b.s("'\n");
                }
                3 => {
                    b.s(" LOG:  connection received: host=");
                    b.pii("ipv4", &self.ipv4());
                    b.s(&format!(" port={}\n", self.range(1024..65535)));
                }
                4 => {
                    b.s(" LOG:  statement: SELECT * FROM customers WHERE iban = '");
                    b.pii("iban", &self.iban_compact());
                    b.s("' OR tax_id = '");
                    b.pii("ssn", &self.ssn());
                    b.s("'\n");
                }
                _ => {
                    b.s(" LOG:  statement: INSERT INTO audit (actor, ip, note) VALUES ('");
                    b.pii("person", &self.full_name());
                    b.s("', '");
                    b.pii("ipv6", &self.ipv6());
                    b.s("', 'exported ");
                    b.s(&self.range(1..5000).to_string());
                    b.s(" rows')\n");
                }
            }
        }
    }
}

// ---- documents: Kubernetes, Docker, Helm ----

impl H {
    fn cluster_output(&mut self) -> Doc {
        let mut b = B::default();
        match self.range(0..6) {
            0 => self.kube_pods(&mut b),
            1 => self.kube_describe(&mut b),
            2 => self.kube_secret(&mut b),
            3 => self.docker_inspect(&mut b),
            4 => self.docker_ps_logs(&mut b),
            _ => self.helm_values(&mut b),
        }
        b.doc("k8s_docker")
    }

    fn node_name(&mut self) -> String {
        format!(
            "ip-10-{}-{}-{}.{}",
            self.range(0..256),
            self.range(0..256),
            self.range(1..255),
            self.pick(&["ec2.internal", "eu-west-1.compute.internal"])
        )
    }

    fn kube_pods(&mut self, b: &mut B) {
        b.s("$ kubectl get pods -n payments -o wide\n");
        let rows: Vec<Vec<Cell>> = (0..self.range(2..12))
            .map(|_| {
                let app = self.pick(&["api", "worker", "billing", "cron", "gateway"]);
                vec![
                    t(format!(
                        "{app}-{}-{}",
                        self.chars(9, LOWER_ALNUM),
                        self.chars(5, LOWER_ALNUM)
                    )),
                    t("1/1"),
                    t(self.pick(&["Running", "Running", "Running", "CrashLoopBackOff"])),
                    t(self.range(0..9).to_string()),
                    t(format!("{}d{}h", self.range(0..30), self.range(0..24))),
                    p("ipv4", self.ipv4()),
                    n("node_name", self.node_name()),
                    t("<none>"),
                    t("<none>"),
                ]
            })
            .collect();
        render_columns(
            b,
            &[
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "IP",
                "NODE",
                "NOMINATED NODE",
                "READINESS GATES",
            ],
            &rows,
        );
    }

    fn kube_describe(&mut self, b: &mut B) {
        let hash = self.chars(9, LOWER_ALNUM);
        b.s(&format!(
            "Name:             billing-worker-{hash}-{}\nNamespace:        payments\nPriority:         0\nService Account:  billing\nNode:             ",
            self.chars(5, LOWER_ALNUM)
        ));
        b.neg("node_name", &self.node_name());
        b.s("/");
        b.pii("ipv4", &self.ipv4());
        b.s("\nStart Time:       ");
        b.neg("date", &self.http_date());
        b.s(&format!(
            "\nLabels:           app=billing-worker\n                  pod-template-hash={hash}\nAnnotations:      owner: "
        ));
        b.pii("email", &self.email());
        b.s("\nStatus:           Running\nIP:               ");
        let ip = self.ipv4();
        b.pii("ipv4", &ip);
        b.s("\nIPs:\n  IP:  ");
        b.pii("ipv4", &ip);
        b.s(&format!(
            "\nControlled By:  ReplicaSet/billing-worker-{hash}\nContainers:\n  worker:\n    Container ID:   containerd://"
        ));
        b.neg("hex_id", &self.hex(64));
        b.s("\n    Image:          registry.example.com/billing/worker:");
        b.s(&format!(
            "{}.{}.{}",
            self.range(1..5),
            self.range(0..30),
            self.range(0..20)
        ));
        b.s("\n    Image ID:       registry.example.com/billing/worker@");
        b.neg("image_digest", &format!("sha256:{}", self.hex(64)));
        b.s("\n    Port:           8080/TCP\n    State:          Running\n    Environment:\n      DB_HOST:            ");
        b.pii("ipv4", &self.ipv4());
        b.s("\n      DB_PASSWORD:        ");
        b.neg(
            "secret_ref",
            "<set to the key 'password' in secret 'billing-db'>",
        );
        b.s("  Optional: false\n      STRIPE_API_KEY:     ");
        b.pii("stripe_key", &self.stripe_key());
        b.s("\n      SMTP_PASSWORD:      ");
        b.pii("secret", &self.password());
        b.s("\n      SENTRY_DSN:         https://");
        b.neg(
            "sentry_dsn",
            &format!("{}@o{}.ingest.sentry.io", self.hex(32), self.digits(6)),
        );
        b.s(&format!("/{}\n      TOKEN_TTL_SECONDS:  ", self.digits(7)));
        b.neg("config_param", "3600");
        b.s("\n    Mounts:\n      /var/run/secrets/kubernetes.io/serviceaccount from kube-api-access-");
        b.s(&self.chars(5, LOWER_ALNUM));
        b.s(" (ro)\nEvents:\n  Type    Reason   Age   From     Message\n  ----    ------   ----  ----     -------\n  Normal  Pulled   3m    kubelet  Successfully pulled image in 1.2s\n");
    }

    fn kube_secret(&mut self, b: &mut B) {
        b.s("$ kubectl get secret billing-db -n payments -o yaml\napiVersion: v1\ndata:\n  api-token: ");
        b.pii("secret", &STANDARD.encode(self.opaque_token()));
        b.s("\n  password: ");
        b.pii("secret", &STANDARD.encode(self.password()));
        b.s("\n  tls.crt: ");
        b.neg("base64", &STANDARD.encode(self.public_block("\n", "")));
        b.s("\n  username: ");
        b.s(&STANDARD.encode("billing"));
        b.s("\nkind: Secret\nmetadata:\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: |\n      {\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"billing-db\",\"namespace\":\"payments\"},\"type\":\"Opaque\"}\n  creationTimestamp: \"");
        b.neg("timestamp", &self.iso_ts());
        b.s("\"\n  name: billing-db\n  namespace: payments\n  resourceVersion: \"");
        b.s(&self.number(8));
        b.s("\"\n  uid: ");
        b.neg("uuid", &uuid4(self));
        b.s("\ntype: Opaque\n");
    }

    fn docker_inspect(&mut self, b: &mut B) {
        let mut env = vec![];
        let mut kv = |k: &str, kind: Option<&'static str>, v: String| {
            let mut c = t(format!("{k}="));
            match kind {
                Some(kind) => c.extend(p(kind, v)),
                None => c.extend(t(v)),
            }
            env.push(J::S(c));
        };
        kv("POSTGRES_PASSWORD", Some("secret"), self.password());
        kv("API_TOKEN", Some("secret"), self.opaque_token());
        kv("GITHUB_TOKEN", Some("github_token"), self.github_token());
        kv(
            "PATH",
            None,
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
        kv("LANG", None, "C.UTF-8".into());
        kv("NODE_VERSION", None, "20.11.1".into());
        let mut maintainer = p("person", self.full_name());
        maintainer.extend(t(" <"));
        maintainer.extend(p("email", self.email()));
        maintainer.extend(t(">"));
        let doc = J::A(vec![obj(vec![
            ("Id", jn("hex_id", self.hex(64))),
            ("Created", jn("timestamp", self.iso_ts())),
            ("Name", js("/billing-api")),
            (
                "Config",
                obj(vec![
                    ("Hostname", jn("hex_id", self.container_id())),
                    ("Env", J::A(env)),
                    (
                        "Image",
                        js(format!(
                            "acme/billing-api:{}.{}.{}",
                            self.range(1..5),
                            self.range(0..30),
                            self.range(0..20)
                        )),
                    ),
                    (
                        "Labels",
                        obj(vec![
                            ("maintainer", J::S(maintainer)),
                            (
                                "org.opencontainers.image.revision",
                                jn("git_sha", self.hex(40)),
                            ),
                        ]),
                    ),
                ]),
            ),
            (
                "NetworkSettings",
                obj(vec![(
                    "Networks",
                    obj(vec![(
                        "bridge",
                        obj(vec![
                            ("Gateway", jp("ipv4", "172.17.0.1")),
                            (
                                "IPAddress",
                                jp("ipv4", format!("172.17.0.{}", self.range(2..255))),
                            ),
                            ("IPPrefixLen", jr("16")),
                            (
                                "MacAddress",
                                jn(
                                    "mac_address",
                                    format!("02:42:ac:11:00:{:02x}", self.range(2..255)),
                                ),
                            ),
                            ("GlobalIPv6Address", jp("ipv6", self.ipv6())),
                        ]),
                    )]),
                )]),
            ),
        ])]);
        b.s("$ docker inspect billing-api\n");
        emit_json(b, &doc, Some(4), 0);
        b.s("\n");
    }

    fn docker_ps_logs(&mut self, b: &mut B) {
        b.s("$ docker ps\n");
        let rows: Vec<Vec<Cell>> = (0..self.range(2..6))
            .map(|_| {
                let (image, port, name) = self.pick(&[
                    ("postgres:16", "5432/tcp", "db"),
                    ("redis:7-alpine", "6379/tcp", "cache"),
                    ("acme/api:latest", "8080/tcp", "api"),
                    ("nginx:1.25", "80/tcp, 443/tcp", "proxy"),
                ]);
                vec![
                    n("hex_id", self.container_id()),
                    t(image),
                    t("\"docker-entrypoint.s…\""),
                    t(format!("{} hours ago", self.range(2..48))),
                    t(format!("Up {} hours", self.range(1..48))),
                    t(port),
                    t(name),
                ]
            })
            .collect();
        render_columns(
            b,
            &[
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES",
            ],
            &rows,
        );
        b.s("$ docker logs --tail 20 api\n");
        for _ in 0..self.range(4..10) {
            b.s("[");
            b.neg("timestamp", &self.iso_ts());
            b.s("] ");
            match self.range(0..6) {
                0 => {
                    b.s("warn: login failed for ");
                    b.pii("email", &self.email());
                    b.s(" from ");
                    b.pii("ipv4", &self.ipv4());
                }
                1 => {
                    b.s("debug: outbound request {\"url\":\"https://api.sendgrid.com/v3/mail/send\",\"headers\":{\"authorization\":\"Bearer ");
                    b.pii(
                        "secret",
                        &format!("SG.{}.{}", self.chars(22, B64URL), self.chars(43, B64URL)),
                    );
                    b.s("\"}}");
                }
                2 => {
                    b.s("info: user ");
                    b.pii("person", &self.full_name());
                    b.s(" (");
                    b.pii("email", &self.email());
                    b.s(") updated phone to ");
                    b.pii("phone", &self.phone());
                }
                3 => {
                    b.s("error: payout failed: IBAN ");
                    b.neg("iban_lookalike", &self.iban_lookalike());
                    b.s(" failed validation");
                }
                4 => {
                    b.s("info: GET /healthz 200 1ms (");
                    b.neg("ip_lookalike", &self.ip_lookalike());
                    b.s(" is not a valid address, using X-Real-IP ");
                    b.pii("ipv4", &self.ipv4());
                    b.s(")");
                }
                _ => {
                    b.s("info: listening on :8080 (build ");
                    b.neg("version", &self.version4());
                    b.s(", commit ");
                    b.neg("git_sha", &self.hex(12));
                    b.s(")");
                }
            }
            b.s("\n");
        }
    }

    fn helm_values(&mut self, b: &mut B) {
        b.s("$ helm get values billing -n payments\nUSER-SUPPLIED VALUES:\nimage:\n  tag: ");
        b.s(&format!(
            "{}.{}.{}",
            self.range(1..5),
            self.range(0..30),
            self.range(0..20)
        ));
        b.s("\ningress:\n  hosts:\n    - billing.example.com\npostgresql:\n  auth:\n    username: billing\n    password: ");
        b.pii("secret", &self.password());
        b.s("\n    secretKeys:\n      adminPasswordKey: ");
        b.neg("config_param", "postgres-password");
        b.s("\nredis:\n  auth:\n    password: \"");
        b.pii("secret", &self.password());
        b.s("\"\nexternalApis:\n  mapsKey: ");
        b.pii("google_api_key", &self.google_key());
        b.s("\n  slackWebhookSecret: ");
        b.pii("secret", &self.secret());
        b.s("\n  sessionTokenTtl: ");
        b.neg("config_param", "15m");
        b.s("\nnodeSelector:\n  kubernetes.io/hostname: ");
        b.neg("node_name", &self.node_name());
        b.s("\nresources:\n  limits:\n    memory: 512Mi\n");
    }
}

// ---- documents: JSON API responses ----

impl H {
    fn api_json(&mut self) -> Doc {
        let mut b = B::default();
        let doc = match self.range(0..7) {
            0 => self.api_idp_user(),
            1 => self.api_payment_customers(),
            2 => self.api_crm_search(),
            3 => self.api_sms(),
            4 => self.api_llm(),
            5 => self.api_sts(),
            _ => self.api_collaborators(),
        };
        let indent = self.pick(&[Some(2), Some(2), Some(4), None]);
        emit_json(&mut b, &doc, indent, 0);
        if indent.is_some() {
            b.s("\n");
        }
        b.doc("json_api")
    }

    /// A compact international number (`+14155550132`).
    fn e164(&mut self) -> String {
        match self.range(0..4) {
            0 | 1 => {
                let (a, e, l) = self.nanp();
                format!("+1{a}{e}{l}")
            }
            2 => format!("+447{}", self.digits(9)),
            _ => format!("+4915{}", self.digits(9)),
        }
    }

    fn api_idp_user(&mut self) -> J {
        let f = self.first();
        let l = self.last();
        let email = self.email_for(f, l);
        let ip = if self.chance(0.7) {
            jp("ipv4", self.ipv4())
        } else {
            jp("ipv6", self.ipv6())
        };
        obj(vec![
            ("user_id", js(format!("auth0|{}", self.hex(24)))),
            ("email", jp("email", email)),
            ("email_verified", jr("true")),
            ("name", jp("person", format!("{f} {l}"))),
            ("given_name", jp("person", f)),
            ("family_name", jp("person", l)),
            ("nickname", js(fold(f))),
            (
                "picture",
                J::S({
                    let mut c = t("https://s.gravatar.com/avatar/");
                    c.extend(n("hex_id", self.hex(32)));
                    c.extend(t("?s=480&r=pg&d=https%3A%2F%2Fcdn.auth0.com%2Favatars%2F"));
                    c.extend(t(format!("{}.png", fold(f).get(..2).unwrap_or("xx"))));
                    c
                }),
            ),
            ("phone_number", jp("phone", self.e164())),
            ("phone_verified", jr("false")),
            ("last_ip", ip),
            ("logins_count", jr(self.range(1..400).to_string())),
            (
                "identities",
                J::A(vec![obj(vec![
                    ("provider", js("google-oauth2")),
                    ("user_id", jn("numeric_id", self.number(21))),
                    ("connection", js("google-oauth2")),
                    ("isSocial", jr("true")),
                    (
                        "access_token",
                        jp(
                            "secret",
                            format!("ya29.a0{}", self.chars_in(120..180, B64URL)),
                        ),
                    ),
                    ("expires_in", jr("3599")),
                ])]),
            ),
            (
                "app_metadata",
                obj(vec![
                    ("plan", js("pro")),
                    (
                        "stripe_customer_id",
                        jn("random_id", format!("cus_{}", self.chars(14, ALNUM))),
                    ),
                ]),
            ),
            (
                "user_metadata",
                obj(vec![
                    ("timezone", js("Europe/Berlin")),
                    ("preferred_contact", js("phone")),
                    ("password_changed_at", jn("timestamp", self.iso_ts())),
                ]),
            ),
            ("created_at", jn("timestamp", self.iso_ts())),
            ("last_login", jn("timestamp", self.iso_ts())),
            ("multifactor", J::A(vec![js("guardian")])),
        ])
    }

    fn api_payment_customers(&mut self) -> J {
        let data: Vec<J> = (0..self.range(1..5))
            .map(|_| {
                let vat = self.vat_id();
                obj(vec![
                    (
                        "id",
                        jn("random_id", format!("cus_{}", self.chars(14, ALNUM))),
                    ),
                    ("object", js("customer")),
                    (
                        "address",
                        obj(vec![
                            ("city", js(self.pick(CITIES))),
                            ("country", js(self.pick(COUNTRIES))),
                            (
                                "line1",
                                js(format!("{} {}", self.range(1..300), self.pick(STREETS))),
                            ),
                            ("postal_code", js(self.digits(5))),
                        ]),
                    ),
                    ("email", jp("email", self.email())),
                    ("name", jp("person", self.full_name())),
                    ("phone", jp("phone", self.phone())),
                    (
                        "invoice_settings",
                        obj(vec![(
                            "default_payment_method",
                            jn("random_id", format!("pm_{}", self.chars(24, ALNUM))),
                        )]),
                    ),
                    (
                        "metadata",
                        obj(vec![
                            ("crm_id", jn("numeric_id", self.number(10))),
                            ("legacy_card", jp("card", self.card())),
                        ]),
                    ),
                    (
                        "sources",
                        obj(vec![(
                            "data",
                            J::A(vec![obj(vec![
                                (
                                    "id",
                                    jn("random_id", format!("card_{}", self.chars(24, ALNUM))),
                                ),
                                ("brand", js("Visa")),
                                ("last4", js(self.digits(4))),
                                ("fingerprint", jn("random_id", self.chars(16, ALNUM))),
                                ("exp_month", jr(self.range(1..13).to_string())),
                                ("exp_year", jr(self.range(2025..2032).to_string())),
                            ])]),
                        )]),
                    ),
                    (
                        "tax_ids",
                        obj(vec![(
                            "data",
                            J::A(vec![obj(vec![
                                ("type", js("eu_vat")),
                                ("value", jn("vat_id", vat)),
                            ])]),
                        )]),
                    ),
                ])
            })
            .collect();
        obj(vec![
            ("object", js("list")),
            ("url", js("/v1/customers")),
            ("has_more", jr("true")),
            ("data", J::A(data)),
        ])
    }

    fn api_crm_search(&mut self) -> J {
        let results: Vec<J> = (0..self.range(1..6))
            .map(|_| {
                let f = self.first();
                let l = self.last();
                let mut props = vec![
                    ("firstname", jp("person", f)),
                    ("lastname", jp("person", l)),
                    ("email", jp("email", self.email_for(f, l))),
                    ("phone", jp("phone", self.phone())),
                    ("company", jn("not_a_person", self.pick(COMPANIES))),
                    ("hs_object_id", jn("numeric_id", self.number(11))),
                    ("notes_last_contacted", jn("timestamp", self.iso_ts())),
                ];
                if self.chance(0.4) {
                    props.push(("mobilephone", jp("phone", self.phone())));
                }
                if self.chance(0.3) {
                    props.push(("iban__c", jp("iban", self.iban_compact())));
                }
                if self.chance(0.3) {
                    props.push(("device_imei__c", jn("imei", self.imei())));
                }
                obj(vec![
                    ("id", js(self.number(11))),
                    ("properties", obj(props)),
                    ("createdAt", jn("timestamp", self.iso_ts())),
                    ("archived", jr("false")),
                ])
            })
            .collect();
        let cursor = URL_SAFE_NO_PAD.encode(format!(
            "{{\"offset\":{},\"ts\":{}}}",
            self.range(10..5000),
            self.epoch_s()
        ));
        let mut link = t("https://api.example.com/crm/v3/objects/contacts?limit=10&cursor=");
        link.extend(n("b64_json", cursor));
        obj(vec![
            ("total", jr(self.range(1..900).to_string())),
            ("results", J::A(results)),
            (
                "paging",
                obj(vec![(
                    "next",
                    obj(vec![("after", js(self.number(6))), ("link", J::S(link))]),
                )]),
            ),
        ])
    }

    fn api_sms(&mut self) -> J {
        let account = format!("AC{}", self.hex(32));
        let messages: Vec<J> = (0..self.range(1..5))
            .map(|_| {
                let sid = format!("SM{}", self.hex(32));
                let mut body = t("Hi ");
                body.extend(p("person", self.first()));
                body.extend(t(format!(
                    ", your order {} has shipped. Track: https://t.example.com/",
                    self.range(100_000..999_999)
                )));
                body.extend(n("random_id", self.chars(10, ALNUM)));
                obj(vec![
                    ("sid", jn("hex_id", sid.clone())),
                    ("account_sid", jn("hex_id", account.clone())),
                    ("from", jp("phone", self.e164())),
                    ("to", jp("phone", self.e164())),
                    ("body", J::S(body)),
                    ("status", js("delivered")),
                    ("date_sent", jn("date", self.http_date())),
                    ("price", js("-0.0079")),
                    (
                        "uri",
                        js(format!(
                            "/2010-04-01/Accounts/{account}/Messages/{sid}.json"
                        )),
                    ),
                ])
            })
            .collect();
        obj(vec![
            ("messages", J::A(messages)),
            ("page", jr("0")),
            ("page_size", jr("50")),
            ("next_page_uri", jr("null")),
        ])
    }

    fn api_llm(&mut self) -> J {
        let mut args = t("{\\\"customer_email\\\":\\\"");
        args.extend(p("email", self.email()));
        args.extend(t("\\\",\\\"iban\\\":\\\""));
        args.extend(p("iban", self.iban_compact()));
        args.extend(t(format!(
            "\\\",\\\"amount\\\":{},\\\"note\\\":\\\"per call with ",
            self.amount()
        )));
        args.extend(p("person", self.full_name()));
        args.extend(t("\\\"}"));
        let prompt = self.range(200..9000);
        let completion = self.range(10..900);
        obj(vec![
            (
                "id",
                jn("random_id", format!("chatcmpl-{}", self.chars(29, ALNUM))),
            ),
            ("object", js("chat.completion")),
            ("created", J::R(n("epoch", self.epoch_s()))),
            ("model", js("gpt-4o-2024-08-06")),
            (
                "choices",
                J::A(vec![obj(vec![
                    ("index", jr("0")),
                    (
                        "message",
                        obj(vec![
                            ("role", js("assistant")),
                            ("content", jr("null")),
                            (
                                "tool_calls",
                                J::A(vec![obj(vec![
                                    (
                                        "id",
                                        jn("random_id", format!("call_{}", self.chars(24, ALNUM))),
                                    ),
                                    ("type", js("function")),
                                    (
                                        "function",
                                        obj(vec![
                                            ("name", js("create_refund")),
                                            ("arguments", J::S(args)),
                                        ]),
                                    ),
                                ])]),
                            ),
                        ]),
                    ),
                    ("finish_reason", js("tool_calls")),
                ])]),
            ),
            (
                "usage",
                obj(vec![
                    ("prompt_tokens", J::R(n("config_param", prompt.to_string()))),
                    (
                        "completion_tokens",
                        J::R(n("config_param", completion.to_string())),
                    ),
                    (
                        "total_tokens",
                        J::R(n("config_param", (prompt + completion).to_string())),
                    ),
                ]),
            ),
            (
                "system_fingerprint",
                jn("random_id", format!("fp_{}", self.hex(10))),
            ),
        ])
    }

    fn api_sts(&mut self) -> J {
        let account = self.account_id();
        let session = format!("gha-{}", self.digits(10));
        if self.chance(0.5) {
            let role_id = self.aws_unique_id().replacen("AIDA", "AROA", 1);
            obj(vec![
                (
                    "Credentials",
                    obj(vec![
                        (
                            "AccessKeyId",
                            jp("aws_access_key", format!("ASIA{}", self.chars(16, BASE32))),
                        ),
                        ("SecretAccessKey", jp("secret", self.aws_secret())),
                        (
                            "SessionToken",
                            jp(
                                "secret",
                                format!("IQoJb3JpZ2luX2VjE{}", self.chars_in(300..420, B64)),
                            ),
                        ),
                        ("Expiration", jn("timestamp", self.iso_ts())),
                    ]),
                ),
                (
                    "AssumedRoleUser",
                    obj(vec![
                        (
                            "AssumedRoleId",
                            J::S({
                                let mut c = n("aws_unique_id", role_id);
                                c.extend(t(format!(":{session}")));
                                c
                            }),
                        ),
                        (
                            "Arn",
                            jn(
                                "arn",
                                format!("arn:aws:sts::{account}:assumed-role/Deploy/{session}"),
                            ),
                        ),
                    ]),
                ),
            ])
        } else {
            let keys: Vec<J> = (0..self.range(1..3))
                .map(|_| {
                    obj(vec![
                        ("UserName", js("ci-deployer")),
                        ("AccessKeyId", jp("aws_access_key", self.aws_key())),
                        ("Status", js(self.pick(&["Active", "Inactive"]))),
                        ("CreateDate", jn("timestamp", self.iso_ts())),
                    ])
                })
                .collect();
            obj(vec![
                ("AccessKeyMetadata", J::A(keys)),
                (
                    "User",
                    obj(vec![
                        ("UserId", jn("aws_unique_id", self.aws_unique_id())),
                        (
                            "Arn",
                            jn("arn", format!("arn:aws:iam::{account}:user/ci-deployer")),
                        ),
                    ]),
                ),
            ])
        }
    }

    fn api_collaborators(&mut self) -> J {
        J::A(
            (0..self.range(1..5))
                .map(|_| {
                    let login = self.chars_in(4..12, LOWER_ALNUM);
                    let id = self.number(8);
                    let name = if self.chance(0.8) {
                        jp("person", self.full_name())
                    } else {
                        jr("null")
                    };
                    let email = if self.chance(0.6) {
                        jp("email", self.email())
                    } else {
                        jr("null")
                    };
                    obj(vec![
                        ("login", js(login.clone())),
                        ("id", jr(id.clone())),
                        (
                            "node_id",
                            jn("node_id", format!("U_kgDO{}", self.chars(8, B64URL))),
                        ),
                        (
                            "avatar_url",
                            js(format!("https://avatars.githubusercontent.com/u/{id}?v=4")),
                        ),
                        ("type", js("User")),
                        ("site_admin", jr("false")),
                        ("name", name),
                        (
                            "company",
                            js(format!("@{}", self.chars_in(3..9, LOWER_ALNUM))),
                        ),
                        ("blog", js(format!("https://{login}.dev"))),
                        ("location", js(self.pick(CITIES))),
                        ("email", email),
                        (
                            "permissions",
                            obj(vec![("admin", jr("false")), ("push", jr("true"))]),
                        ),
                    ])
                })
                .collect(),
        )
    }
}

// ---- documents: git ----

impl H {
    fn git_output(&mut self) -> Doc {
        let mut b = B::default();
        match self.range(0..3) {
            0 => self.git_log(&mut b),
            1 => self.git_show(&mut b),
            _ => self.git_remotes(&mut b),
        }
        b.doc("git")
    }

    fn git_date(&mut self) -> String {
        format!(
            "{} {} {} {:02}:{:02}:{:02} {} {}",
            self.pick(WEEKDAYS),
            self.pick(MONTHS),
            self.range(1..29),
            self.range(0..24),
            self.range(0..60),
            self.range(0..60),
            self.range(2021..2026),
            self.pick(&["+0100", "+0200", "-0500", "+0000", "+0530"])
        )
    }

    fn git_author(&mut self, b: &mut B, label: &str) {
        let (name, email) = self.person_with_email();
        b.s(label);
        b.pii("person", &name);
        b.s(" <");
        if self.chance(0.3) {
            b.pii(
                "email",
                &format!(
                    "{}+{}@users.noreply.github.com",
                    self.number(8),
                    self.chars_in(4..10, LOWER_ALNUM)
                ),
            );
        } else {
            b.pii("email", &email);
        }
        b.s(">\n");
    }

    fn git_log(&mut self, b: &mut B) {
        for _ in 0..self.range(2..7) {
            b.s("commit ");
            b.neg("git_sha", &self.hex(40));
            b.s("\n");
            if self.chance(0.2) {
                b.s("Merge: ");
                b.neg("git_sha", &self.hex(7));
                b.s(" ");
                b.neg("git_sha", &self.hex(7));
                b.s("\n");
            }
            self.git_author(b, "Author: ");
            b.s("Date:   ");
            b.neg("date", &self.git_date());
            b.s("\n\n    ");
            match self.range(0..6) {
                0 => {
                    b.s("chore: remove leaked key ");
                    b.pii("aws_access_key", &self.aws_key());
                    b.s(" from fixtures\n\n    It was only valid for the sandbox account ");
                    b.neg("numeric_id", &self.account_id());
                    b.s(".\n");
                }
                1 => {
                    b.s("deps: bump lodash to ");
                    b.neg("semver_range", &self.semver_range());
                    b.s("\n");
                }
                2 => {
                    b.s("billing: retry SEPA debits with backoff\n\n    Reported by ");
                    b.pii("person", &self.full_name());
                    b.s(&format!(
                        " (#{}). Tested against the sandbox IBAN\n    ",
                        self.range(100..9999)
                    ));
                    b.pii("iban", &self.iban());
                    b.s(".\n");
                }
                3 => {
                    b.s("fix: stop logging card numbers\n\n    The validator printed rejected input such as ");
                    b.neg("card_lookalike", &self.card_lookalike());
                    b.s("\n    verbatim; now only the last four digits are logged.\n");
                }
                4 => {
                    b.s(self.pick(COMMIT_SUBJECTS));
                    b.s("\n");
                }
                _ => {
                    b.s("ci: use OIDC instead of the static token\n\n    Old token (revoked): ");
                    b.pii("gitlab_token", &self.gitlab_token());
                    b.s("\n");
                }
            }
            if self.chance(0.4) {
                b.s("\n");
                self.git_author(b, "    Co-authored-by: ");
            }
            if self.chance(0.3) {
                if !self.chance(0.4) {
                    b.s("\n");
                }
                self.git_author(b, "    Signed-off-by: ");
            }
            b.s("\n");
        }
    }

    fn git_show(&mut self, b: &mut B) {
        b.s("commit ");
        b.neg("git_sha", &self.hex(40));
        b.s("\n");
        self.git_author(b, "Author: ");
        b.s("Date:   ");
        b.neg("date", &self.git_date());
        b.s(&format!(
            "\n\n    config: move secrets to env\n\ndiff --git a/config/production.yml b/config/production.yml\nindex {}..{} 100644\n--- a/config/production.yml\n+++ b/config/production.yml\n@@ -12,9 +12,9 @@ database:\n   host: ",
            self.hex(7),
            self.hex(7)
        ));
        b.pii("ipv4", &self.ipv4());
        b.s("\n   port: 5432\n   username: app\n-  password: ");
        b.pii("secret", &self.password());
        b.s("\n+  password: ");
        b.neg("placeholder", "<%= ENV[\"DB_PASSWORD\"] %>");
        b.s("\n mailer:\n-  api_key: ");
        b.pii("secret", &self.secret());
        b.s("\n+  api_key: ");
        b.neg("placeholder", "<%= ENV[\"MAILER_API_KEY\"] %>");
        b.s("\n   from: ");
        b.pii("email", &self.email());
        b.s("\ndiff --git a/.env.test b/.env.test\n--- a/.env.test\n+++ b/.env.test\n@@ -1,4 +1,4 @@\n-STRIPE_KEY=");
        b.pii("stripe_key", &self.stripe_key());
        b.s("\n+STRIPE_KEY=");
        b.neg("placeholder", "REPLACE_ME");
        b.s("\n TOKEN_LIFETIME=");
        b.neg("config_param", "900");
        b.s("\n");
    }

    fn git_remotes(&mut self, b: &mut B) {
        b.s("$ git remote -v\n");
        let token = format!("ghs_{}", {
            let random = self.chars(30, ALNUM);
            format!("{random}{}", base62_crc32(&random))
        });
        for what in ["fetch", "push"] {
            b.s("origin\thttps://x-access-token:");
            b.pii("github_token", &token);
            b.s(&format!("@github.com/acme/infra.git ({what})\n"));
        }
        b.s("upstream\t");
        b.neg("scp_user", "git@github.com");
        b.s(":acme-oss/infra.git (fetch)\n$ git config --list --show-origin | grep -e user -e url\nfile:/home/ci/.gitconfig\tuser.name=");
        let (name, email) = self.person_with_email();
        b.pii("person", &name);
        b.s("\nfile:/home/ci/.gitconfig\tuser.email=");
        b.pii("email", &email);
        b.s("\nfile:.git/config\tremote.mirror.url=https://oauth2:");
        b.pii("gitlab_token", &self.gitlab_token());
        b.s("@gitlab.example.com/acme/infra.git\n$ cat ~/.git-credentials\nhttps://");
        b.s(&self.chars_in(4..10, LOWER_ALNUM));
        b.s(":");
        b.pii("github_token", &self.github_token());
        b.s("@github.com\nhttps://");
        b.s(&self.chars_in(4..10, LOWER_ALNUM));
        b.s(":");
        b.pii("url_password", &self.url_password());
        b.s("@bitbucket.org\n");
    }
}

// ---- the extra self-check ----

/// Checks the kinds `check` does not know, and that no negative is a valid
/// card, SSN or IBAN by accident.
fn check_heldout(doc: &Doc) {
    for l in &doc.labels {
        let v = &doc.text[l.start..l.end];
        assert_eq!(v, v.trim(), "label with surrounding space: {l:?}");
        if l.kind == "phone" {
            let d = v.chars().filter(char::is_ascii_digit).count();
            assert!((7..=15).contains(&d), "phone with {d} digits: {v:?}");
        }
    }
    for l in &doc.negatives {
        let v = &doc.text[l.start..l.end];
        let digits: String = v.chars().filter(char::is_ascii_digit).collect();
        let ok = match l.kind {
            "card_lookalike" => !luhn_valid(&digits),
            "imei" | "iccid" => luhn_valid(&digits) && !brand_prefixed(&digits),
            "ip_lookalike" => v.parse::<std::net::Ipv4Addr>().is_err(),
            "hex_words" | "mac_address" | "request_id" => v.parse::<std::net::Ipv6Addr>().is_err(),
            // Shaped like `NPA-NXX-XXXX` only with a leading 1 (no area code).
            "part_number" => {
                let nanp_shaped = v.len() == 12
                    && v.bytes().enumerate().all(|(i, c)| match i {
                        3 | 7 => c == b'-',
                        _ => c.is_ascii_digit(),
                    });
                !nanp_shaped || v.starts_with('1')
            }
            _ => true,
        };
        assert!(ok, "negative is not what it claims: {} {v:?}", l.kind);
        let card_chars = v
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.'));
        if card_chars && (13..=19).contains(&digits.len()) && !matches!(l.kind, "imei" | "iccid") {
            assert!(
                !(brand_prefixed(&digits) && luhn_valid(&digits)),
                "negative is a valid card: {} {v:?}",
                l.kind
            );
        }
        let b = v.as_bytes();
        if b.len() == 11
            && b.iter().enumerate().all(|(i, c)| match i {
                3 | 6 => *c == b'-' || *c == b' ',
                _ => c.is_ascii_digit(),
            })
        {
            let (a, g, s) = (&v[..3], &v[4..6], &v[7..]);
            assert!(
                a == "000" || a == "666" || a.starts_with('9') || g == "00" || s == "0000",
                "negative is a valid SSN: {} {v:?}",
                l.kind
            );
        }
        let compact: String = v.chars().filter(|c| *c != ' ').collect();
        let cb = compact.as_bytes();
        if (15..=34).contains(&cb.len())
            && cb[..2].iter().all(u8::is_ascii_uppercase)
            && cb[2..4].iter().all(u8::is_ascii_digit)
            && cb
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            assert_ne!(
                iban_mod97(&super::rearrange(&compact)),
                1,
                "negative is a valid IBAN: {} {v:?}",
                l.kind
            );
        }
    }
}

// ---- word lists (written for this corpus, not taken from mod.rs) ----

#[rustfmt::skip]
const FIRST: &[&str] = &[
    "Aaliyah", "Adebayo", "Aditi", "Ahmed", "Aiko", "Alexei", "Alice", "Amira", "Andrea",
    "Andrés", "Ángel", "Anika", "Antoine", "Aoife", "Arash", "Ashley", "Barbara", "Benjamin",
    "Bogdan", "Brian", "Caroline", "Catherine", "Chiara", "Christopher", "Ciarán", "Claire",
    "Connor", "Dagmar", "Daniela", "Deepak", "Diego", "Dorothy", "Eduardo", "Eleanor", "Emeka",
    "Emil", "Erik", "Esther", "Fernanda", "Finn", "Florian", "Francisco", "Gareth", "Grace",
    "Gustavo", "Hamid", "Heather", "Helga", "Hugo", "Hyun-woo", "Ines", "Isabel", "Jacob",
    "Jakub", "Jan", "Jasmine", "Jesús", "Ji-ho", "Joanna", "Jonas", "Kai", "Karen", "Kateřina",
    "Kenji", "Kevin", "Khalid", "Kofi", "Laura", "Leon", "Liam", "Lucy", "Magdalena", "Marco",
    "Margaret", "Mariana", "Marta", "Megan", "Mei", "Mia", "Miguel", "Nadia", "Natalia",
    "Nikolai", "Nora", "Oluwaseun", "Paolo", "Patrick", "Paula", "Rachel", "Rafael", "Ravi",
    "Rebecca", "Ricardo", "Rosa", "Ryan", "Samuel", "Sandra", "Santiago", "Sergei", "Simone",
    "Stefan", "Steven", "Sunita", "Susan", "Takeshi", "Tariq", "Teresa", "Thomas", "Timo",
    "Ulrike", "Vanessa", "Vikram", "Wojciech", "Xavier", "Yasmin", "Yusuf", "Zhiwei", "Zoe",
    "Bill", "Will", "Rose", "Amber", "Ruby", "Ivy", "Sandy", "Crystal", "Mark", "Victoria",
];

#[rustfmt::skip]
const LAST: &[&str] = &[
    "Abbott", "Achebe", "Adeyemi", "Alvarez", "Andersen", "Aoki", "Bauer", "Bergström", "Bhatt",
    "Blanco", "Brennan", "Brooks", "Campbell", "Carter", "Castillo", "Chakraborty", "Chowdhury",
    "Coleman", "Cruz", "Dąbrowski", "Dimitrov", "Doyle", "Eriksen", "Evans", "Fitzgerald",
    "Fontaine", "Foster", "Fujita", "Gallagher", "Gomes", "Gonzalez", "Gupta", "Hall", "Hamilton",
    "Hashemi", "Hayes", "Henderson", "Herrera", "Hughes", "Ibrahim", "Ito", "Jensen", "Jiménez",
    "Kapoor", "Kelly", "Khan", "Kowalczyk", "Krause", "Kumar", "Lambert", "Larsen", "Lehmann",
    "Lindgren", "Lombardi", "MacLeod", "Marchetti", "Mendoza", "Meyer", "Mitchell", "Morales",
    "Murphy", "Nakamura", "Ndlovu", "Novak", "O'Sullivan", "Ortiz", "Osei", "Palmer", "Petrović",
    "Phillips", "Popescu", "Quinn", "Ramírez", "Reddy", "Reyes", "Richter", "Rivera", "Roberts",
    "Rojas", "Schulz", "Shapiro", "Shevchenko", "Sokolov", "Sørensen", "Stewart", "Sullivan",
    "Takahashi", "Torres", "Vargas", "Vasquez", "Vogel", "Watanabe", "Weiss", "Yamamoto",
    "Yilmaz", "Zielinski", "Zimmermann", "van den Broek", "de la Cruz", "Al-Farsi", "Nguyễn",
    "Ferreira-Lopes", "Rose", "Mark", "Hope", "Young", "Bishop", "Mason", "Price",
];

/// Capitalised phrases that start with (or are) a first name but name a
/// product, a place, a company or a form field.
const NOT_PEOPLE: &[&str] = &[
    "Grace Period",
    "Bill To",
    "Will Call",
    "Rose Gold",
    "Amber Alert",
    "Ruby Gems",
    "Ivy Bridge",
    "Sandy Bridge",
    "Crystal Reports",
    "Summer Sale",
    "Jackson Hole",
    "Santa Clara",
    "Lincoln Tunnel",
    "Chelsea Market",
    "Sydney Opera House",
    "Hilton Garden Inn",
    "Stanley Cup",
    "Carolina Panthers",
    "Victoria Harbour",
    "Angel Falls",
    "Jasmine Rice",
    "Marco Polo Airport",
    "Simon & Schuster",
    "Marks & Spencer",
    "Johnson & Johnson",
];

const COMPANIES: &[&str] = &[
    "Northwind Traders",
    "Contoso Ltd",
    "Fabrikam Inc",
    "Wayne Enterprises",
    "Stark Industries",
    "Dunder Mifflin",
    "Sterling Cooper",
    "Vandelay Industries",
    "Tyrell Corporation",
    "Cyberdyne Systems",
    "Procter & Gamble",
    "Ben & Jerry's",
];

const PUBLISHERS: &[&str] = &[
    "Simon & Schuster",
    "Addison-Wesley",
    "No Starch Press",
    "Manning Publications",
    "Pearson Education",
    "John Wiley & Sons",
    "Random House",
];

const BOOK_TITLES: &[&str] = &[
    "Designing Data-Intensive Applications",
    "The Pragmatic Programmer",
    "Site Reliability Engineering",
    "Zero to One",
    "A Philosophy of Software Design",
    "The Rust Programming Language",
    "Thinking, Fast and Slow",
    "Clean Architecture",
];

const DOMAINS: &[&str] = &[
    "proton.me",
    "icloud.com",
    "hey.com",
    "mailbox.org",
    "gmx.at",
    "libero.it",
    "seznam.cz",
    "naver.com",
    "qq.com",
    "163.com",
    "bigpond.com.au",
    "shaw.ca",
    "telenet.be",
    "ziggo.nl",
    "tutanota.com",
    "cs.stanford.edu",
    "nhs.net",
    "hmrc.gov.uk",
    "example.co.nz",
    "northwind-traders.com",
    "contoso.com",
    "fabrikam.io",
    "initrode.net",
    "hooli.xyz",
    "piedpiper.dev",
    "vandelay.industries",
];

const COUNTRIES: &[&str] = &[
    "US", "GB", "DE", "FR", "AU", "NL", "ES", "IT", "JP", "CN", "BR", "IE", "AE",
];

const CITIES: &[&str] = &[
    "Rotterdam",
    "Gdańsk",
    "São Paulo",
    "Melbourne",
    "Toronto",
    "Dublin",
    "Bengaluru",
    "Nairobi",
    "Seville",
    "Tampere",
];

const STREETS: &[&str] = &[
    "Keizersgracht",
    "Rua Augusta",
    "Collins Street",
    "Queen Street West",
    "Baggot Street",
    "MG Road",
    "Calle Sierpes",
    "Hämeenkatu",
];

const COMMIT_SUBJECTS: &[&str] = &[
    "docs: clarify retention policy",
    "refactor: split invoice renderer",
    "test: cover leap-year due dates",
    "perf: batch webhook deliveries",
    "fix(api): 404 instead of 500 for unknown customers",
];
