//! A labelled synthetic corpus for the masking benches.
//!
//! Tool results shaped like what MCP servers return — JSON database rows,
//! log lines, support tickets, config dumps — with the exact byte range and
//! type (`Detector::name()`) of every sensitive value, and hard negatives
//! that look sensitive but are not: order numbers failing Luhn, invalid
//! SSNs, IBAN look-alikes failing mod-97, version strings shaped like IPs,
//! UUIDs, timestamps, git SHAs, base64 blobs, publishable Stripe keys,
//! public PEM blocks, placeholders such as `${DB_PASSWORD}`, brand and place
//! names that start with a first name. Values carry valid checksums (Luhn,
//! mod-97, the CRC32 of GitHub and npm tokens, JWTs with real JSON parts),
//! and [`generate`] re-checks every label and negative before returning.
//!
//! Labelling conventions (what a detector is scored against):
//! - a value with a format of its own is labelled with that format even
//!   next to a secret-like name: `GITHUB_TOKEN=ghp_…` is `github_token`,
//!   `"access_token": "eyJ…"` is `jwt`, a PEM block under `"private_key"`
//!   is `private_key`;
//! - `secret` is the value (without quotes) next to a secret-like name when
//!   it has no format of its own; placeholders, masked values and config
//!   parameters (`password_min_length: 12`, `"token_type": "Bearer"`) are
//!   negatives;
//! - `url_password` is only the password of `scheme://user:password@host`;
//! - a card, SSN or IBAN label spans the whole number with its separators;
//! - a private key label spans `-----BEGIN …-----` to `-----END …-----`;
//! - a person label spans the name without a title (`Dr. Okafor` → `Okafor`).
//!
//! Deterministic: the same seed gives the same corpus (`StdRng`, rand 0.10).

// Each bench binary that includes this module uses a different part of it.
#![allow(dead_code)]

/// The held-out corpus: other templates, for a fair score
/// (`heldout::generate_heldout`).
pub mod heldout;

use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};

/// One tool result: its text, the sensitive values in it, and the hard
/// negatives placed in it (which must stay unflagged).
#[derive(Debug, Clone)]
pub struct Doc {
    pub text: String,
    pub labels: Vec<Label>,
    pub negatives: Vec<Label>,
    /// What the tool result looks like: `db_rows`, `log_lines`, `ticket`
    /// or `config_dump` (the held-out corpus has its own shapes: `csv`,
    /// `markdown`, `html`, `config`, `stack_trace`, `http_dump`, `thread`,
    /// `sql_table`, `k8s_docker`, `json_api`, `git`).
    pub shape: &'static str,
}

/// A byte range of [`Doc::text`] (UTF-8 offsets, on char boundaries). For a
/// label `kind` is a `Detector::name()`; for a negative it names the kind
/// of look-alike (`order_number`, `version`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    pub start: usize,
    pub end: usize,
    pub kind: &'static str,
}

/// Documents until their texts add up to at least `target_bytes`.
pub fn generate(seed: u64, target_bytes: usize) -> Vec<Doc> {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    let mut docs = Vec::new();
    let mut total = 0;
    while total < target_bytes {
        let doc = match g.range(0..100) {
            0..28 => g.db_rows(),
            28..54 => g.log_lines(),
            54..80 => g.ticket(),
            _ => g.config_dump(),
        };
        check(&doc);
        total += doc.text.len();
        docs.push(doc);
    }
    docs
}

/// The text of a document grows left to right; labels are recorded as it
/// grows, so their offsets are exact by construction.
#[derive(Default)]
struct B {
    text: String,
    labels: Vec<Label>,
    negatives: Vec<Label>,
}

impl B {
    fn s(&mut self, s: &str) {
        self.text.push_str(s);
    }

    fn pii(&mut self, kind: &'static str, value: &str) {
        let start = self.text.len();
        self.text.push_str(value);
        self.labels.push(Label {
            start,
            end: self.text.len(),
            kind,
        });
    }

    fn neg(&mut self, kind: &'static str, value: &str) {
        let start = self.text.len();
        self.text.push_str(value);
        self.negatives.push(Label {
            start,
            end: self.text.len(),
            kind,
        });
    }

    fn doc(self, shape: &'static str) -> Doc {
        Doc {
            text: self.text,
            labels: self.labels,
            negatives: self.negatives,
            shape,
        }
    }
}

/// A JSON object written field by field, compact (`"a":1,"b":2`) or spaced.
struct Obj {
    first: bool,
    colon: &'static str,
    comma: &'static str,
}

impl Obj {
    fn open(b: &mut B, spaced: bool) -> Obj {
        b.s("{");
        Obj {
            first: true,
            colon: if spaced { ": " } else { ":" },
            comma: if spaced { ", " } else { "," },
        }
    }

    fn key(&mut self, b: &mut B, k: &str) {
        if !self.first {
            b.s(self.comma);
        }
        self.first = false;
        b.s("\"");
        b.s(k);
        b.s("\"");
        b.s(self.colon);
    }

    fn str(&mut self, b: &mut B, k: &str, v: &str) {
        self.key(b, k);
        b.s("\"");
        b.s(v);
        b.s("\"");
    }

    fn raw(&mut self, b: &mut B, k: &str, v: &str) {
        self.key(b, k);
        b.s(v);
    }

    fn pii(&mut self, b: &mut B, k: &str, kind: &'static str, v: &str) {
        self.key(b, k);
        b.s("\"");
        b.pii(kind, v);
        b.s("\"");
    }

    fn neg(&mut self, b: &mut B, k: &str, kind: &'static str, v: &str) {
        self.key(b, k);
        b.s("\"");
        b.neg(kind, v);
        b.s("\"");
    }

    fn close(self, b: &mut B) {
        b.s("}");
    }
}

struct Gen {
    rng: StdRng,
}

const DIGITS: &[u8] = b"0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Characters of generated passwords and secrets: nothing that would end a
/// JSON string, a YAML scalar or a URL's userinfo, and no `$`/`{` (which
/// would read as a placeholder).
const SECRET_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*-_.+=~";
const URL_PASSWORD_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*-_.~";

/// Card separators a ticket may use (zero-width ones are an evasion).
const CARD_SEPARATORS: &[&str] = &[
    " ", " ", " ", "-", "-", ".", "\u{200b}", "\u{200b}", "\u{2060}", "\u{200d}", "\u{feff}",
];

impl Gen {
    fn range(&mut self, r: Range<usize>) -> usize {
        self.rng.random_range(r)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        *xs.choose(&mut self.rng).expect("non-empty list")
    }

    fn chars(&mut self, n: usize, alphabet: &[u8]) -> String {
        (0..n)
            .map(|_| char::from(alphabet[self.range(0..alphabet.len())]))
            .collect()
    }

    /// A random length in `len`, then that many chars.
    fn chars_in(&mut self, len: Range<usize>, alphabet: &[u8]) -> String {
        let n = self.range(len);
        self.chars(n, alphabet)
    }

    fn digits(&mut self, n: usize) -> String {
        self.chars(n, DIGITS)
    }

    fn hex(&mut self, n: usize) -> String {
        self.chars(n, HEX)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.rng.random::<u8>()).collect()
    }

    // ---- values that must be masked ----

    /// The digits of a card of a random brand, with a valid Luhn digit.
    fn card_digits(&mut self) -> String {
        let (prefix, len) = match self.range(0..100) {
            0..35 => (
                "4".to_string(),
                self.pick(&[16, 16, 16, 16, 16, 16, 13, 19]),
            ),
            35..52 => (self.range(51..56).to_string(), 16),
            52..60 => (self.range(2221..2721).to_string(), 16),
            60..72 => (self.pick(&["34", "37"]).to_string(), 15),
            72..80 => {
                let p = match self.range(0..3) {
                    0 => "6011".to_string(),
                    1 => "65".to_string(),
                    _ => self.range(644..650).to_string(),
                };
                (p, 16)
            }
            80..86 => (self.range(3528..3590).to_string(), 16),
            86..91 => {
                let p = if self.chance(0.5) {
                    "36".to_string()
                } else {
                    self.range(300..306).to_string()
                };
                (p, 14)
            }
            _ => ("62".to_string(), self.pick(&[16, 16, 17, 18, 19])),
        };
        let body = self.digits(len - 1 - prefix.len());
        let payload = format!("{prefix}{body}");
        let check = luhn_check_digit(&payload);
        format!("{payload}{check}")
    }

    fn card(&mut self, separator: &str) -> String {
        let digits = self.card_digits();
        group_card(&digits, separator)
    }

    /// A card as a ticket might write it: any separator, sometimes mixed.
    fn card_evasive(&mut self) -> String {
        let digits = self.card_digits();
        if self.chance(0.15) {
            // Mixed separators, as typed by hand.
            let groups = card_groups(digits.len());
            let mut out = String::new();
            let mut at = 0;
            for (i, g) in groups.iter().enumerate() {
                if i > 0 {
                    out.push_str(self.pick(&[" ", "-", "."]));
                }
                out.push_str(&digits[at..at + g]);
                at += g;
            }
            return out;
        }
        let sep = if self.chance(0.2) {
            ""
        } else {
            self.pick(CARD_SEPARATORS)
        };
        group_card(&digits, sep)
    }

    /// 13–19 digits with a card brand's prefix and a wrong Luhn digit.
    fn order_number(&mut self) -> String {
        let mut digits = self.card_digits();
        if self.chance(0.3) {
            // Other lengths too, not just card-shaped ones.
            let len = self.range(13..20);
            digits = format!("{}{}", self.range(1..10), self.digits(len - 1));
        }
        let last = digits.pop().expect("digits") as u8 - b'0';
        let payload = digits;
        let good = luhn_check_digit(&payload) as u8 - b'0';
        let mut bad = last;
        if bad == good {
            bad = (good + self.range(1..10) as u8) % 10;
        }
        format!("{payload}{bad}")
    }

    fn ssn_parts(&mut self) -> (usize, usize, usize) {
        let mut area = self.range(1..900);
        if area == 666 {
            area = 665;
        }
        (area, self.range(1..100), self.range(1..10000))
    }

    fn ssn(&mut self, separator: &str) -> String {
        let (a, g, s) = self.ssn_parts();
        format!("{a:03}{separator}{g:02}{separator}{s:04}")
    }

    /// Shaped like an SSN, in a range the SSA never issues.
    fn invalid_ssn(&mut self) -> String {
        let (mut a, mut g, mut s) = self.ssn_parts();
        match self.range(0..5) {
            0 => a = 0,
            1 => a = 666,
            2 => a = self.range(900..1000),
            3 => g = 0,
            _ => s = 0,
        }
        let sep = self.pick(&["-", "-", "-", " ", "."]);
        format!("{a:03}{sep}{g:02}{sep}{s:04}")
    }

    /// A compact IBAN with valid check digits.
    fn iban_compact(&mut self) -> String {
        const COUNTRIES: &[(&str, &str)] = &[
            ("DE", "18n"),
            ("DE", "18n"),
            ("GB", "4a14n"),
            ("GB", "4a14n"),
            ("FR", "10n11c2n"),
            ("ES", "20n"),
            ("IT", "1a10n12c"),
            ("NL", "4a10n"),
            ("CH", "5n12c"),
            ("BE", "12n"),
            ("PL", "24n"),
            ("AT", "16n"),
            ("SE", "20n"),
            ("NO", "11n"),
            ("IE", "4a14n"),
            ("PT", "21n"),
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
                'a' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                _ if self.chance(0.7) => DIGITS,
                _ => UPPER_ALNUM,
            };
            bban.push_str(&self.chars(count, alphabet));
            count = 0;
        }
        let check = 98 - iban_mod97(&format!("{bban}{country}00"));
        format!("{country}{check:02}{bban}")
    }

    fn iban(&mut self, grouped: bool) -> String {
        let iban = self.iban_compact();
        if grouped { group4(&iban) } else { iban }
    }

    /// An IBAN whose check digits are wrong.
    fn iban_lookalike(&mut self) -> String {
        let iban = self.iban_compact();
        let (country, rest) = iban.split_at(2);
        let good: u32 = rest[..2].parse().expect("check digits");
        let bad = 2 + (good - 2 + self.range(1..95) as u32) % 97;
        let fake = format!("{country}{bad:02}{}", &rest[2..]);
        debug_assert_ne!(iban_mod97(&rearrange(&fake)), 1);
        if self.chance(0.4) {
            group4(&fake)
        } else {
            fake
        }
    }

    fn email(&mut self) -> String {
        const DOMAINS: &[&str] = &[
            "example.com",
            "example.org",
            "mail.example.net",
            "corp.example.com",
            "gmail.com",
            "outlook.com",
            "yahoo.co.jp",
            "company.co.uk",
            "uni-heidelberg.de",
            "posteo.de",
            "acme-logistics.io",
            "fastmail.fm",
            "student.ethz.ch",
            "orange.fr",
            "web.de",
            "example.com.br",
        ];
        let first = ascii_fold(self.pick(FIRST_NAMES)).to_lowercase();
        let last = ascii_fold(self.pick(SURNAMES))
            .to_lowercase()
            .replace([' ', '\''], "");
        let local = match self.range(0..8) {
            0 | 1 => format!("{first}.{last}"),
            2 => format!("{}{last}", &first[..1]),
            3 => format!("{first}_{last}{}", self.range(1..100)),
            4 => format!(
                "{first}.{last}+{}",
                self.pick(&["billing", "news", "mcp", "test"])
            ),
            5 => self.chars_in(6..12, LOWER_ALNUM),
            6 => format!("{first}{}", self.range(70..2010)),
            _ => self
                .pick(&["support", "billing", "admin", "noreply", "ops-alerts", "hr"])
                .to_string(),
        };
        let domain = self.pick(DOMAINS);
        let email = format!("{local}@{domain}");
        if self.chance(0.05) {
            email.to_uppercase()
        } else {
            email
        }
    }

    fn phone(&mut self) -> String {
        let area = self.range(201..990);
        let exchange = self.range(200..1000);
        let line = self.range(0..10000);
        match self.range(0..12) {
            0 => format!("+1 ({area}) {exchange}-{line:04}"),
            1 => format!("({area}) {exchange}-{line:04}"),
            2 => format!("{area}-{exchange}-{line:04}"),
            3 => format!("{area}.{exchange}.{line:04}"),
            4 => format!("+1{area}{exchange}{line:04}"),
            5 => format!("+1-{area}-{exchange}-{line:04}"),
            6 => format!("+44 20 {} {}", self.digits(4), self.digits(4)),
            7 => format!("+44 7{} {}", self.digits(3), self.digits(6)),
            8 => format!("+49 {} {}", self.range(30..90), self.digits(8)),
            9 => format!(
                "+33 {} {} {} {} {}",
                self.range(1..8),
                self.digits(2),
                self.digits(2),
                self.digits(2),
                self.digits(2)
            ),
            10 => format!("+81 3-{}-{}", self.digits(4), self.digits(4)),
            _ => format!("+91 9{} {}", self.digits(4), self.digits(5)),
        }
    }

    fn ipv4(&mut self) -> String {
        match self.range(0..6) {
            0 => format!(
                "10.{}.{}.{}",
                self.range(0..256),
                self.range(0..256),
                self.range(1..255)
            ),
            1 => format!("192.168.{}.{}", self.range(0..256), self.range(1..255)),
            2 => format!(
                "172.{}.{}.{}",
                self.range(16..32),
                self.range(0..256),
                self.range(1..255)
            ),
            3 => format!(
                "{}.{}",
                self.pick(&["203.0.113", "198.51.100", "192.0.2"]),
                self.range(1..255)
            ),
            _ => {
                let mut first = self.range(1..224);
                if first == 127 || first == 10 {
                    first = 81;
                }
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
        let group = |g: &mut Gen| {
            let v = g.range(0..0x10000);
            if g.chance(0.3) {
                format!("{:x}", v & 0xfff)
            } else {
                format!("{v:x}")
            }
        };
        let ip = match self.range(0..6) {
            0 => {
                let tail: Vec<String> = (0..self.range(1..4)).map(|_| group(self)).collect();
                format!("2001:db8:{}::{}", group(self), tail.join(":"))
            }
            1 => {
                let groups: Vec<String> = (0..8)
                    .map(|_| format!("{:04x}", self.range(0..0x10000)))
                    .collect();
                groups.join(":")
            }
            2 => {
                let tail: Vec<String> = (0..4).map(|_| group(self)).collect();
                format!("fe80::{}", tail.join(":"))
            }
            3 => {
                let head: Vec<String> = (0..3).map(|_| group(self)).collect();
                format!("2a02:{}::{}", head.join(":"), group(self))
            }
            4 => {
                let groups: Vec<String> = (0..8).map(|_| group(self)).collect();
                groups.join(":")
            }
            _ => format!("2606:4700:{}::{}", group(self), group(self)),
        };
        if self.chance(0.05) {
            ip.to_uppercase()
        } else {
            ip
        }
    }

    fn aws_access_key(&mut self) -> String {
        let prefix = if self.chance(0.8) { "AKIA" } else { "ASIA" };
        format!("{prefix}{}", self.chars(16, UPPER_ALNUM))
    }

    /// `ghp_` tokens end in the base62 CRC32 of their random part, as
    /// GitHub's do; fine-grained `github_pat_` tokens have two parts.
    fn github_token(&mut self) -> String {
        if self.chance(0.2) {
            return format!(
                "github_pat_{}_{}",
                self.chars(22, BASE62),
                self.chars(59, BASE62)
            );
        }
        let prefix = self.pick(&["ghp", "ghp", "ghp", "gho", "ghu", "ghs", "ghr"]);
        let random = self.chars(30, BASE62);
        format!("{prefix}_{random}{}", base62_crc32(&random))
    }

    fn gitlab_token(&mut self) -> String {
        format!("glpat-{}", self.chars(20, B64URL))
    }

    fn slack_token(&mut self) -> String {
        if self.chance(0.6) {
            format!(
                "xoxb-{}-{}-{}",
                self.chars_in(10..14, DIGITS),
                self.chars_in(10..14, DIGITS),
                self.chars(24, BASE62)
            )
        } else {
            format!(
                "xoxp-{}-{}-{}-{}",
                self.chars_in(10..14, DIGITS),
                self.chars_in(10..14, DIGITS),
                self.chars_in(10..14, DIGITS),
                self.hex(32)
            )
        }
    }

    fn stripe_key(&mut self) -> String {
        let prefix = self.pick(&["sk_live_", "sk_live_", "sk_live_", "rk_live_", "sk_test_"]);
        let len = if self.chance(0.5) { 24 } else { 99 };
        format!("{prefix}{}", self.chars(len, BASE62))
    }

    /// A publishable key: public by design, must not be masked.
    fn stripe_publishable(&mut self) -> String {
        let prefix = self.pick(&["pk_live_", "pk_test_"]);
        let len = if self.chance(0.5) { 24 } else { 99 };
        format!("{prefix}{}", self.chars(len, BASE62))
    }

    fn npm_token(&mut self) -> String {
        let random = self.chars(30, BASE62);
        format!("npm_{random}{}", base62_crc32(&random))
    }

    /// `pypi-` and a macaroon: base64url of bytes starting with the
    /// `pypi.org` location, as real upload tokens do.
    fn pypi_token(&mut self) -> String {
        let tail = self.chars_in(140..200, B64URL);
        format!("pypi-AgEIcHlwaS5vcmc{tail}")
    }

    fn google_api_key(&mut self) -> String {
        format!("AIza{}", self.chars(35, B64URL))
    }

    fn jwt(&mut self) -> String {
        let (alg, sig_len) =
            self.pick(&[("HS256", 32), ("RS256", 256), ("ES256", 64), ("RS256", 256)]);
        let header = match self.range(0..3) {
            0 => format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#),
            1 => format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{}"}}"#, self.hex(16)),
            _ => format!(r#"{{"typ":"JWT","alg":"{alg}"}}"#),
        };
        let iat = 1_700_000_000 + self.range(0..60_000_000);
        let payload = format!(
            r#"{{"iss":"https://idp.example.com","sub":"{}","aud":"mcpgate","email":"{}","iat":{iat},"exp":{},"scope":"openid profile"}}"#,
            self.range(1000..999_999),
            self.email(),
            iat + 3600
        );
        let sig = self.bytes(sig_len);
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    /// A PEM private key block; `nl` is the line break as it appears in the
    /// text (`"\n"`, or `"\\n"` inside a JSON string), `indent` prefixes
    /// every line after the first (YAML block scalars).
    fn private_key(&mut self, nl: &str, indent: &str) -> String {
        let (kind, start, lines, width) = self.pick(&[
            ("RSA PRIVATE KEY", "MIIEpAIBAAKCAQEA", 25, 64),
            ("PRIVATE KEY", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", 26, 64),
            ("PRIVATE KEY", "MC4CAQAwBQYDK2VwBCIEI", 1, 64),
            ("EC PRIVATE KEY", "MHcCAQEEI", 3, 64),
            ("OPENSSH PRIVATE KEY", "b3BlbnNzaC1rZXktdjEAAAAA", 7, 70),
            (
                "ENCRYPTED PRIVATE KEY",
                "MIIFHDBOBgkqhkiG9w0BBQ0wQTAp",
                27,
                64,
            ),
            ("DSA PRIVATE KEY", "MIIBuwIBAAKBgQ", 12, 64),
        ]);
        self.pem(kind, start, lines, width, nl, indent)
    }

    fn pem(
        &mut self,
        kind: &str,
        start: &str,
        lines: usize,
        width: usize,
        nl: &str,
        indent: &str,
    ) -> String {
        let mut body = start.to_string();
        let total = lines * width - self.range(0..width / 2);
        body.push_str(&self.chars(total.saturating_sub(body.len()), B64));
        let mut out = format!("-----BEGIN {kind}-----");
        for chunk in body.as_bytes().chunks(width) {
            out.push_str(nl);
            out.push_str(indent);
            out.push_str(std::str::from_utf8(chunk).expect("ascii"));
        }
        if kind == "RSA PRIVATE KEY" || kind == "CERTIFICATE" {
            out.push('=');
        }
        out.push_str(nl);
        out.push_str(indent);
        out.push_str(&format!("-----END {kind}-----"));
        out
    }

    /// A certificate or public key: PEM, but public.
    fn public_pem(&mut self, nl: &str, indent: &str) -> String {
        if self.chance(0.6) {
            self.pem(
                "CERTIFICATE",
                "MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkq",
                20,
                64,
                nl,
                indent,
            )
        } else {
            self.pem(
                "PUBLIC KEY",
                "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A",
                7,
                64,
                nl,
                indent,
            )
        }
    }

    fn url_password(&mut self) -> String {
        if self.chance(0.1) {
            // Percent-encoded reserved characters.
            return format!(
                "{}%40{}%3A{}",
                self.chars(5, URL_PASSWORD_CHARS),
                self.chars(4, URL_PASSWORD_CHARS),
                self.chars(6, URL_PASSWORD_CHARS)
            );
        }
        let n = self.range(8..25);
        self.chars(n, URL_PASSWORD_CHARS)
    }

    /// A secret value without a format of its own.
    fn secret_value(&mut self) -> String {
        match self.range(0..9) {
            0 => self.hex(32),
            1 => self.hex(64),
            2 => STANDARD.encode(self.bytes(30)),
            3 => {
                let n = self.range(12..40);
                self.chars(n, SECRET_CHARS)
            }
            4 => format!(
                "{}{}{}",
                self.pick(&["Summer", "Winter", "Welcome", "Berlin", "Dragon", "Monkey"]),
                self.range(1990..2026),
                self.pick(&["!", "?", "#1", "!!", ""])
            ),
            5 => format!(
                "{}-{}-{}-{}",
                self.pick(&["correct", "purple", "silent", "rapid"]),
                self.pick(&["horse", "monkey", "river", "engine"]),
                self.pick(&["battery", "window", "copper", "lantern"]),
                self.pick(&["staple", "forest", "pepper", "orbit"])
            ),
            6 => format!("SG.{}.{}", self.chars(22, B64URL), self.chars(43, B64URL)),
            7 => format!("whsec_{}", self.chars(32, BASE62)),
            _ => self.chars(40, B64),
        }
    }

    fn person(&mut self) -> String {
        let first = if self.chance(0.85) {
            self.pick(FIRST_NAMES)
        } else {
            self.pick(RARE_FIRST_NAMES)
        };
        let last = self.pick(SURNAMES);
        match self.range(0..20) {
            0 => format!(
                "{first} {}. {last}",
                char::from(b'A' + self.range(0..26) as u8)
            ),
            1 | 2 => format!("{first} {last} {}", self.pick(SURNAMES)),
            _ => format!("{first} {last}"),
        }
    }

    /// A name in a script without letter case: no cue a dictionary of
    /// capitalised names can use.
    fn cjk_person(&mut self) -> &'static str {
        self.pick(&[
            "王伟",
            "李娜",
            "张敏",
            "刘洋",
            "佐藤健",
            "鈴木花子",
            "김민준",
            "박서연",
        ])
    }

    // ---- hard negatives ----

    fn version4(&mut self) -> String {
        let parts = [
            self.range(1..31),
            self.range(0..20),
            self.range(0..20),
            self.range(0..256),
        ];
        format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[3])
    }

    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-4{}-{}{}-{}",
            &h[..8],
            &h[8..12],
            &h[13..16],
            self.pick(&["8", "9", "a", "b"]),
            &h[17..20],
            &h[20..]
        )
    }

    fn date(&mut self) -> String {
        format!(
            "{}-{:02}-{:02}",
            self.range(2022..2026),
            self.range(1..13),
            self.range(1..29)
        )
    }

    fn timestamp(&mut self) -> String {
        let d = self.date();
        let (h, m, s) = (self.range(0..24), self.range(0..60), self.range(0..60));
        match self.range(0..4) {
            0 => format!("{d}T{h:02}:{m:02}:{s:02}Z"),
            1 => format!("{d}T{h:02}:{m:02}:{s:02}.{:03}Z", self.range(0..1000)),
            2 => format!("{d}T{h:02}:{m:02}:{s:02}+0{}:00", self.range(1..10)),
            _ => format!("{d} {h:02}:{m:02}:{s:02}"),
        }
    }

    fn epoch_ms(&mut self) -> String {
        (1_700_000_000_000u64 + self.rng.random_range(0..60_000_000_000u64)).to_string()
    }

    fn tracking_number(&mut self) -> String {
        match self.range(0..3) {
            0 => format!("1Z{}{}", self.chars(6, UPPER_ALNUM), self.digits(10)),
            1 => format!("94001{}", self.digits(17)),
            _ => self.digits(12),
        }
    }

    fn base64_blob(&mut self) -> String {
        let n = self.range(24..400);
        STANDARD.encode(self.bytes(n))
    }

    fn amount(&mut self) -> String {
        format!("{}.{:02}", self.range(1..5000), self.range(0..100))
    }

    fn placeholder(&mut self) -> &'static str {
        self.pick(&[
            "${DB_PASSWORD}",
            "${SECRET_KEY}",
            "$API_TOKEN",
            "{{ .Values.db.password }}",
            "{{ secrets.API_KEY }}",
            "<your-api-key>",
            "YOUR_API_KEY_HERE",
            "********",
            "***",
            "[REDACTED]",
            "<redacted>",
            "%(DB_PASSWORD)s",
            "vault:secret/data/db#password",
            "env:STRIPE_KEY",
        ])
    }

    // ---- documents ----

    fn db_rows(&mut self) -> Doc {
        let mut b = B::default();
        let spaced = self.chance(0.6);
        let table = self.pick(&[
            "customers",
            "customers",
            "orders",
            "orders",
            "employees",
            "integrations",
        ]);
        let rows = self.range(3..14);
        let shape = self.range(0..10);
        match shape {
            0..5 => b.s("[\n"),
            5..8 => b.s(&format!(
                "{{\"table\": \"{table}\", \"count\": {rows}, \"rows\": [\n"
            )),
            _ => {}
        }
        for i in 0..rows {
            if shape < 8 {
                b.s("  ");
            }
            match table {
                "customers" => self.customer_row(&mut b, spaced),
                "orders" => self.order_row(&mut b, spaced),
                "employees" => self.employee_row(&mut b, spaced),
                _ => self.integration_row(&mut b, spaced),
            }
            if shape < 8 && i + 1 < rows {
                b.s(",");
            }
            b.s("\n");
        }
        match shape {
            0..5 => b.s("]"),
            5..8 => b.s("]}"),
            _ => {}
        }
        b.doc("db_rows")
    }

    fn name_fields(&mut self, b: &mut B, o: &mut Obj) {
        match self.range(0..10) {
            0..6 => {
                let p = self.person();
                o.pii(b, "name", "person", &p);
            }
            6..8 => {
                let first = self.pick(FIRST_NAMES);
                let last = self.pick(SURNAMES);
                o.pii(b, "first_name", "person", first);
                o.pii(b, "last_name", "person", last);
            }
            8 => {
                let p = self.person();
                o.pii(b, "full_name", "person", &p);
            }
            _ => {
                let p = self.person();
                o.pii(b, "customer_name", "person", &p);
            }
        }
    }

    fn customer_row(&mut self, b: &mut B, spaced: bool) {
        let mut o = Obj::open(b, spaced);
        o.raw(b, "id", &self.range(1..99_999).to_string());
        if self.chance(0.6) {
            let u = self.uuid();
            o.neg(b, "uuid", "uuid", &u);
        }
        self.name_fields(b, &mut o);
        if self.chance(0.9) {
            let e = self.email();
            o.pii(b, "email", "email", &e);
        }
        if self.chance(0.7) {
            let p = self.phone();
            o.pii(b, "phone", "phone", &p);
        }
        if self.chance(0.35) {
            match self.range(0..20) {
                0 => {
                    let s = self.ssn("");
                    o.pii(b, "ssn", "ssn", &s);
                }
                1 => {
                    let s = self.invalid_ssn();
                    o.neg(b, "ssn", "invalid_ssn", &s);
                }
                2 => {
                    let s = self.ssn(" ");
                    o.pii(b, "ssn", "ssn", &s);
                }
                _ => {
                    let s = self.ssn("-");
                    o.pii(b, "ssn", "ssn", &s);
                }
            }
        }
        if self.chance(0.5) {
            let d = self.date();
            o.neg(b, "dob", "timestamp", &d);
        }
        if self.chance(0.5) {
            o.key(b, "address");
            let mut a = Obj::open(b, spaced);
            let street = format!(
                "{} {} {}",
                self.range(1..300),
                self.pick(&[
                    "Elm", "Oak", "Main", "Linden", "Harbour", "Mill", "Station", "Church"
                ]),
                self.pick(&["Street", "Avenue", "Road", "Lane", "Way", "Drive"])
            );
            a.str(b, "street", &street);
            let city = self.pick(&[
                "Springfield",
                "Berlin",
                "Lyon",
                "Leeds",
                "Porto",
                "Zürich",
                "Kraków",
                "Osaka",
            ]);
            a.str(b, "city", city);
            a.str(b, "postcode", &self.digits(5));
            a.str(
                b,
                "country",
                self.pick(&["US", "DE", "FR", "GB", "PT", "CH", "PL", "JP"]),
            );
            a.close(b);
        }
        if self.chance(0.4) {
            o.key(b, "card");
            let mut c = Obj::open(b, spaced);
            c.str(
                b,
                "brand",
                self.pick(&["visa", "mastercard", "amex", "discover", "jcb"]),
            );
            let sep = self.pick(&["", "", " ", "-"]);
            let card = self.card(sep);
            c.pii(b, "number", "card", &card);
            c.str(
                b,
                "exp",
                &format!("{:02}/{}", self.range(1..13), self.range(25..32)),
            );
            c.close(b);
        }
        if self.chance(0.35) {
            let grouped = self.chance(0.4);
            let iban = self.iban(grouped);
            o.pii(b, "iban", "iban", &iban);
        }
        if self.chance(0.1) {
            let iban = self.iban_lookalike();
            o.neg(b, "ref", "iban_lookalike", &iban);
        }
        let ts = self.timestamp();
        o.neg(b, "created_at", "timestamp", &ts);
        if self.chance(0.3) {
            let ms = self.epoch_ms();
            o.key(b, "updated_ms");
            b.neg("epoch_ms", &ms);
        }
        if self.chance(0.4) {
            let ip = self.ipv4();
            o.pii(b, "last_login_ip", "ipv4", &ip);
        } else if self.chance(0.15) {
            let ip = self.ipv6();
            o.pii(b, "last_login_ip", "ipv6", &ip);
        }
        o.raw(b, "balance", &self.amount());
        if self.chance(0.25) {
            let n = self.order_number();
            o.neg(b, "loyalty_no", "order_number", &n);
        }
        if self.chance(0.15) {
            let blob = self.base64_blob();
            o.key(b, "avatar");
            b.s("\"data:image/png;base64,iVBORw0KGgo");
            b.neg("base64", &blob);
            b.s("\"");
        }
        if self.chance(0.2) {
            o.key(b, "notes");
            b.s("\"");
            self.short_note(b);
            b.s("\"");
        }
        o.str(
            b,
            "status",
            self.pick(&["active", "suspended", "closed", "trial"]),
        );
        o.close(b);
    }

    /// A short free-text note for a JSON field (no quotes inside).
    fn short_note(&mut self, b: &mut B) {
        match self.range(0..6) {
            0 => {
                b.s("called about the ");
                let p = self.brand_phrase();
                b.neg("not_a_person", p);
                b.s(" order");
            }
            1 => {
                b.s("prefers contact via ");
                let e = self.email();
                b.pii("email", &e);
            }
            2 => {
                b.s("spoke with ");
                let p = self.person();
                b.pii("person", &p);
                b.s(" on ");
                let d = self.date();
                b.neg("timestamp", &d);
            }
            3 => {
                b.s("VIP since ");
                let d = self.date();
                b.neg("timestamp", &d);
            }
            4 => {
                b.s("uses app ");
                let v = format!("v{}", self.version4());
                b.neg("version", &v);
            }
            _ => b.s("n/a"),
        }
    }

    fn brand_phrase(&mut self) -> &'static str {
        self.pick(PERSON_LOOKALIKES)
    }

    fn order_row(&mut self, b: &mut B, spaced: bool) {
        let mut o = Obj::open(b, spaced);
        if self.chance(0.6) {
            let n = self.order_number();
            o.neg(b, "order_id", "order_number", &n);
        } else {
            o.str(
                b,
                "order_id",
                &format!(
                    "ORD-{}-{:06}",
                    self.range(2022..2026),
                    self.range(0..999_999)
                ),
            );
        }
        if self.chance(0.5) {
            let p = self.person();
            o.pii(b, "customer", "person", &p);
        }
        let e = self.email();
        o.pii(b, "customer_email", "email", &e);
        o.key(b, "items");
        b.s("[");
        for i in 0..self.range(1..4) {
            if i > 0 {
                b.s(o.comma);
            }
            let mut it = Obj::open(b, spaced);
            it.str(
                b,
                "sku",
                &format!(
                    "SKU-{}-{}",
                    self.range(1000..9999),
                    self.pick(&["BLK", "RED", "XL", "M"])
                ),
            );
            if self.chance(0.2) {
                let p = self.brand_phrase();
                it.neg(b, "name", "not_a_person", p);
            } else {
                let p = self.pick(PRODUCTS);
                it.neg(b, "name", "product_name", p);
            }
            it.raw(b, "qty", &self.range(1..5).to_string());
            it.raw(b, "price", &self.amount());
            it.close(b);
        }
        b.s("]");
        o.key(b, "payment");
        let mut p = Obj::open(b, spaced);
        match self.range(0..10) {
            0..5 => {
                p.str(b, "method", "card");
                let sep = self.pick(&["", "", " ", "-"]);
                let card = self.card(sep);
                p.pii(b, "card_number", "card", &card);
            }
            5..7 => {
                p.str(b, "method", "sepa");
                let grouped = self.chance(0.5);
                let iban = self.iban(grouped);
                p.pii(b, "iban", "iban", &iban);
            }
            7 => {
                p.str(b, "method", "card");
                p.str(b, "card_last4", &self.digits(4));
                let k = self.stripe_publishable();
                p.neg(b, "publishable_key", "stripe_publishable", &k);
            }
            _ => {
                p.str(b, "method", "invoice");
            }
        }
        p.close(b);
        if self.chance(0.5) {
            o.key(b, "shipping");
            let mut s = Obj::open(b, spaced);
            if self.chance(0.6) {
                let name = self.person();
                s.pii(b, "name", "person", &name);
            }
            s.str(b, "carrier", self.pick(&["UPS", "USPS", "FedEx", "DHL"]));
            let t = self.tracking_number();
            s.neg(b, "tracking", "tracking_number", &t);
            s.close(b);
        }
        if self.chance(0.3) {
            let ip = self.ipv4();
            o.pii(b, "ip", "ipv4", &ip);
        }
        let ts = self.timestamp();
        o.neg(b, "placed_at", "timestamp", &ts);
        let h = self.hex(32);
        o.neg(b, "request_id", "hex_id", &h);
        o.raw(b, "total", &self.amount());
        o.str(b, "currency", self.pick(&["EUR", "USD", "GBP", "CHF"]));
        o.close(b);
    }

    fn employee_row(&mut self, b: &mut B, spaced: bool) {
        let mut o = Obj::open(b, spaced);
        o.str(b, "employee_id", &format!("E{}", self.digits(6)));
        self.name_fields(b, &mut o);
        let e = self.email();
        o.pii(b, "work_email", "email", &e);
        if self.chance(0.6) {
            let p = self.phone();
            o.pii(b, "mobile", "phone", &p);
        }
        if self.chance(0.6) {
            let s = self.ssn("-");
            o.pii(b, "ssn", "ssn", &s);
        }
        if self.chance(0.5) {
            let iban = self.iban(false);
            o.pii(b, "salary_account", "iban", &iban);
        }
        o.str(
            b,
            "department",
            self.pick(&["Engineering", "Sales", "Support", "Finance", "Legal"]),
        );
        if self.chance(0.5) {
            let m = self.person();
            o.pii(b, "manager", "person", &m);
        }
        let d = self.date();
        o.neg(b, "hired", "timestamp", &d);
        o.close(b);
    }

    fn integration_row(&mut self, b: &mut B, spaced: bool) {
        let mut o = Obj::open(b, spaced);
        o.raw(b, "id", &self.range(1..9999).to_string());
        match self.range(0..10) {
            0 => {
                o.str(b, "provider", "github");
                let t = self.github_token();
                o.pii(b, "token", "github_token", &t);
            }
            1 => {
                o.str(b, "provider", "stripe");
                let k = self.stripe_key();
                o.pii(b, "secret_key", "stripe_key", &k);
                let p = self.stripe_publishable();
                o.neg(b, "publishable_key", "stripe_publishable", &p);
            }
            2 => {
                o.str(b, "provider", "slack");
                let t = self.slack_token();
                o.pii(b, "bot_token", "slack_token", &t);
            }
            3 => {
                o.str(b, "provider", "aws");
                let k = self.aws_access_key();
                o.pii(b, "access_key_id", "aws_access_key", &k);
                let s = self.chars(40, B64);
                o.pii(b, "secret_access_key", "secret", &s);
            }
            4 => {
                o.str(b, "provider", "sendgrid");
                let s = self.secret_value();
                o.pii(b, "api_key", "secret", &s);
            }
            5 => {
                o.str(b, "provider", "google");
                let k = self.google_api_key();
                o.pii(b, "api_key", "google_api_key", &k);
            }
            6 => {
                o.str(b, "provider", "npm");
                let t = self.npm_token();
                o.pii(b, "token", "npm_token", &t);
            }
            7 => {
                o.str(b, "provider", "pypi");
                let t = self.pypi_token();
                o.pii(b, "token", "pypi_token", &t);
            }
            8 => {
                o.str(b, "provider", "gitlab");
                let t = self.gitlab_token();
                o.pii(b, "token", "gitlab_token", &t);
            }
            _ => {
                o.str(b, "provider", "oidc");
                let t = self.jwt();
                o.pii(b, "access_token", "jwt", &t);
                o.neg(b, "token_type", "config_param", "Bearer");
                o.raw(b, "expires_in", "3600");
            }
        }
        if self.chance(0.3) {
            let s = self.secret_value();
            o.pii(b, "webhook_secret", "secret", &s);
        }
        if self.chance(0.2) {
            let p = self.placeholder();
            o.neg(b, "client_secret", "placeholder", p);
        }
        if self.chance(0.1) {
            let k = self.private_key("\\n", "");
            o.pii(b, "private_key", "private_key", &k);
        }
        let e = self.email();
        o.pii(b, "created_by", "email", &e);
        let ts = self.timestamp();
        o.neg(b, "created_at", "timestamp", &ts);
        o.close(b);
    }

    fn log_lines(&mut self) -> Doc {
        let mut b = B::default();
        for _ in 0..self.range(8..60) {
            let ts = self.timestamp();
            b.neg("timestamp", &ts);
            b.s(" ");
            b.s(self.pick(&["INFO ", "DEBUG", "WARN ", "ERROR", "INFO ", "INFO "]));
            b.s(" ");
            self.log_line(&mut b);
            b.s("\n");
        }
        b.doc("log_lines")
    }

    fn log_line(&mut self, b: &mut B) {
        match self.range(0..24) {
            0..3 => {
                b.s("http: ");
                b.s(self.pick(&["GET", "POST", "PUT", "DELETE"]));
                b.s(&format!(
                    " /api/v1/{}/{} status={} dur=",
                    self.pick(&["users", "orders", "invoices"]),
                    self.range(1..99_999),
                    self.pick(&["200", "201", "404", "500"])
                ));
                b.s(&format!(
                    "{}.{}ms ip=",
                    self.range(0..900),
                    self.range(0..10)
                ));
                let ip = self.ipv4();
                b.pii("ipv4", &ip);
                b.s(" req_id=");
                let h = self.hex(32);
                b.neg("hex_id", &h);
                b.s(" ua=\"");
                let ua = self.pick(&[
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.91 Safari/537.36",
                    "curl/8.4.0",
                    "python-requests/2.31.0",
                    "okhttp/4.12.0",
                    "Go-http-client/2.0",
                ]);
                b.s(ua);
                b.s("\"");
            }
            3 => {
                b.s("auth: request headers: Authorization: Bearer ");
                let j = self.jwt();
                b.pii("jwt", &j);
            }
            4 => {
                b.s("oidc: callback ?code=");
                b.s(&self.chars(43, B64URL));
                b.s("&id_token=");
                let j = self.jwt();
                b.pii("jwt", &j);
                b.s("&state=");
                b.s(&self.hex(16));
            }
            5 => {
                let scheme = self.pick(&[
                    "postgres",
                    "postgresql",
                    "mysql",
                    "mongodb+srv",
                    "amqps",
                    "redis",
                    "https",
                ]);
                b.s(&format!("db: connecting to {scheme}://"));
                if scheme != "redis" || self.chance(0.5) {
                    b.s(self.pick(&["app", "svc_orders", "admin", "readonly", "etl"]));
                }
                b.s(":");
                let pw = self.url_password();
                b.pii("url_password", &pw);
                b.s("@");
                if self.chance(0.3) {
                    let ip = self.ipv4();
                    b.pii("ipv4", &ip);
                } else {
                    b.s(self.pick(&[
                        "db.internal",
                        "orders-db.prod.example.com",
                        "cache",
                        "mq.example.net",
                    ]));
                }
                b.s(&format!(
                    ":{}/{} (attempt {})",
                    self.range(1000..9999),
                    self.pick(&["app", "orders", "0"]),
                    self.range(1..4)
                ));
            }
            6 => {
                b.s("db: connecting to ");
                if self.chance(0.5) {
                    // A user without a password: `user@host` is no email here.
                    b.s("postgres://");
                    b.neg("url_user", "app@db.internal");
                    b.s(":5432/app (peer auth)");
                } else {
                    b.s("postgres://app:");
                    b.neg("placeholder", "${DB_PASSWORD}");
                    b.s("@db.internal/app (unexpanded)");
                }
            }
            7 => {
                b.s("deploy: version ");
                let v = format!("v{}", self.version4());
                b.neg("version", &v);
                b.s(" commit=");
                let sha = self.hex(40);
                b.neg("git_sha", &sha);
                b.s(" build ");
                let v = self.version4();
                b.neg("version", &v);
                b.s(&format!(
                    " took {}m{}s",
                    self.range(0..9),
                    self.range(0..60)
                ));
            }
            8 => {
                b.s("mail: delivery to ");
                let e = self.email();
                b.pii("email", &e);
                b.s(" failed: 550 5.1.1 user unknown");
            }
            9 => {
                b.s("net: client [");
                let ip = self.ipv6();
                b.pii("ipv6", &ip);
                b.s(&format!("]:{} connected via ", self.range(1024..65535)));
                b.neg("rust_path", "mcpgate::proxy::relay");
            }
            10 => {
                b.s("net: iface eth0 mac ");
                let mac: Vec<String> = (0..6).map(|_| self.hex(2)).collect();
                b.neg("mac_address", &mac.join(":"));
                b.s(" addr ");
                let ip = self.ipv6();
                b.pii("ipv6", &ip);
                b.s(" snmp oid ");
                b.neg(
                    "oid",
                    &format!(
                        "1.3.6.1.2.1.{}.{}.{}",
                        self.range(1..30),
                        self.range(1..20),
                        self.range(0..9)
                    ),
                );
            }
            11..14 => {
                let (kind, var, value) = self.token_in_log();
                b.s(&format!("secrets: {var} "));
                b.pii(kind, &value);
            }
            14 => {
                b.s("job ");
                let u = self.uuid();
                b.neg("uuid", &u);
                b.s(&format!(
                    " finished in {}.{}s exit=0 at ",
                    self.range(0..90),
                    self.range(0..10)
                ));
                let ms = self.epoch_ms();
                b.neg("epoch_ms", &ms);
            }
            15 => {
                b.s("{\"msg\":\"login\",\"user\":\"");
                let e = self.email();
                b.pii("email", &e);
                b.s("\",\"ip\":\"");
                let ip = self.ipv4();
                b.pii("ipv4", &ip);
                b.s("\",\"display_name\":\"");
                let p = self.person();
                b.pii("person", &p);
                b.s("\",\"trace_id\":\"");
                let h = self.hex(32);
                b.neg("hex_id", &h);
                b.s("\"}");
            }
            16 => {
                b.s("payment: charge ch_");
                b.s(&self.chars(24, BASE62));
                b.s(&format!(
                    " card ending {} amount={} EUR with ",
                    self.digits(4),
                    self.amount()
                ));
                let k = self.stripe_publishable();
                b.neg("stripe_publishable", &k);
            }
            17 => {
                b.s("upload: blob sha256:");
                let h = self.hex(64);
                b.neg("hex_id", &h);
                b.s(" data=");
                let blob = self.base64_blob();
                b.neg("base64", &blob);
            }
            18 => {
                b.s("ship: order ");
                let n = self.order_number();
                b.neg("order_number", &n);
                b.s(" tracking ");
                let t = self.tracking_number();
                b.neg("tracking_number", &t);
            }
            19 => {
                b.s("auth: user ");
                let p = self.person();
                b.pii("person", &p);
                b.s(&format!(" (id {}) logged in from ", self.range(1..99_999)));
                let ip = self.ipv4();
                b.pii("ipv4", &ip);
            }
            20 => {
                b.s("npm: installed ");
                b.neg(
                    "package_spec",
                    self.pick(&[
                        "lodash@4.17.21",
                        "@types/node@20.11.5",
                        "react@18.2.0",
                        "left-pad@1.3.0",
                    ]),
                );
                b.s(" assets ");
                b.neg(
                    "asset_name",
                    self.pick(&["logo@2x.png", "icon@3x.webp", "hero@2x.jpg"]),
                );
            }
            21 => {
                b.s("config: ");
                let (k, v) = self.pick(&[
                    ("password_min_length", "12"),
                    ("token_ttl", "3600"),
                    ("secret_rotation_days", "90"),
                    ("api_key_header", "X-API-Key"),
                    ("token_endpoint", "https://idp.example.com/oauth2/token"),
                ]);
                b.s(k);
                b.s("=");
                b.neg("config_param", v);
                b.s(" payload=");
                // One base64 JSON segment, not a JWT.
                let seg = URL_SAFE_NO_PAD.encode(format!("{{\"n\":{}}}", self.range(0..9999)));
                b.neg("b64_json", &seg);
            }
            22 => {
                b.s("app: ");
                let k = self.pick(&[
                    "password",
                    "db_password",
                    "secret",
                    "api_key",
                    "client_secret",
                    "token",
                ]);
                b.s(k);
                b.s("=");
                if self.chance(0.6) {
                    let s = self.secret_value();
                    b.pii("secret", &s);
                } else {
                    let p = self.placeholder();
                    b.neg("placeholder", p);
                }
            }
            _ => {
                b.s("ssl: handshake ok TLSv1.3 peer=");
                let ip = self.ipv4();
                b.pii("ipv4", &ip);
                b.s(" firmware ");
                let v = self.version4();
                b.neg("version", &v);
                b.s(" uptime 12:04:33");
            }
        }
    }

    /// A token of some format as it shows up in a log line.
    fn token_in_log(&mut self) -> (&'static str, String, String) {
        match self.range(0..10) {
            0 => (
                "aws_access_key",
                "using access key".into(),
                self.aws_access_key(),
            ),
            1 => (
                "github_token",
                "git remote token".into(),
                self.github_token(),
            ),
            2 => ("gitlab_token", "PRIVATE-TOKEN:".into(), self.gitlab_token()),
            3 => (
                "slack_token",
                "slack client with".into(),
                self.slack_token(),
            ),
            4 => ("stripe_key", "Stripe.api_key =".into(), self.stripe_key()),
            5 => (
                "npm_token",
                "//registry.npmjs.org/:_authToken=".into(),
                self.npm_token(),
            ),
            6 => (
                "pypi_token",
                "twine upload -u __token__ -p".into(),
                self.pypi_token(),
            ),
            7 => (
                "google_api_key",
                "geocode request key".into(),
                self.google_api_key(),
            ),
            8 => ("jwt", "cookie session=".into(), self.jwt()),
            _ => (
                "github_token",
                "found leaked credential".into(),
                self.github_token(),
            ),
        }
    }

    fn ticket(&mut self) -> Doc {
        let mut b = B::default();
        b.s(&format!("Ticket #{} — ", self.range(10_000..99_999)));
        b.s(self.pick(&[
            "Charged twice",
            "Cannot log in",
            "Refund request",
            "Update billing details",
            "Account locked",
            "Leaked credential",
            "Wrong delivery address",
        ]));
        b.s("\nPriority: ");
        b.s(self.pick(&["Low", "Normal", "High", "Urgent"]));
        b.s(" | Created: ");
        let ts = self.timestamp();
        b.neg("timestamp", &ts);
        b.s("\nFrom: ");
        let p = self.person();
        b.pii("person", &p);
        b.s(" <");
        let e = self.email();
        b.pii("email", &e);
        b.s(">\n\n");
        b.s(self.pick(&[
            "Hello,",
            "Hi team,",
            "Dear Support,",
            "Guten Tag,",
            "Bonjour,",
            "Hi!",
        ]));
        b.s(" ");
        for _ in 0..self.range(3..9) {
            self.ticket_sentence(&mut b);
            b.s(if self.chance(0.3) { "\n\n" } else { " " });
        }
        b.s("\n\n");
        match self.range(0..6) {
            0 => {
                b.s("Thanks,\n");
                let f = self.pick(FIRST_NAMES);
                b.pii("person", f);
            }
            1 => {
                b.s("Best regards,\n");
                let p = self.person();
                b.pii("person", &p);
                b.s("\n");
                let ph = self.phone();
                b.pii("phone", &ph);
            }
            2 => {
                b.s("Mit freundlichen Grüßen\n");
                let p = self.person();
                b.pii("person", &p);
            }
            3 => {
                b.s("— ");
                let p = self.cjk_person();
                b.pii("person", p);
                b.s(" 🙏");
            }
            _ => {
                b.s("Sent from my phone");
            }
        }
        b.doc("ticket")
    }

    fn ticket_sentence(&mut self, b: &mut B) {
        match self.range(0..26) {
            0 => {
                b.s("My name is ");
                let p = self.person();
                b.pii("person", &p);
                b.s(" and I was charged twice on card ");
                let c = self.card_evasive();
                b.pii("card", &c);
                b.s(".");
            }
            1 => {
                b.s("The card number is ");
                let c = self.card_evasive();
                b.pii("card", &c);
                b.s(&format!(
                    ", expiry {:02}/{}, CVV on the back.",
                    self.range(1..13),
                    self.range(25..32)
                ));
            }
            2 => {
                b.s("I tried to pay at https://shop.example.com/checkout?card=");
                let c = self.card("");
                b.pii("card", &c);
                b.s(&format!(
                    "&exp={:02}{}&amount={} and got an error.",
                    self.range(1..13),
                    self.range(25..32),
                    self.amount()
                ));
            }
            3 => {
                b.s("My SSN is ");
                let sep = self.pick(&["-", "-", ".", " "]);
                let s = self.ssn(sep);
                b.pii("ssn", &s);
                b.s(", please update my tax file.");
            }
            4 => {
                b.s("You can reach me at ");
                let p = self.phone();
                b.pii("phone", &p);
                b.s(" or ");
                let e = self.email();
                b.pii("email", &e);
                b.s(".");
            }
            5 => {
                b.s("Please refund to my IBAN ");
                let grouped = self.chance(0.6);
                let iban = self.iban(grouped);
                b.pii("iban", &iban);
                b.s(" (account holder ");
                let p = self.person();
                b.pii("person", &p);
                b.s(").");
            }
            6 => {
                b.s("My order number is ");
                let n = self.order_number();
                b.neg("order_number", &n);
                b.s(" and the tracking number ");
                let t = self.tracking_number();
                b.neg("tracking_number", &t);
                b.s(".");
            }
            7 => {
                b.s("The app (version ");
                let v = self.version4();
                b.neg("version", &v);
                b.s(", build ");
                let v = format!("v{}", self.version4());
                b.neg("version", &v);
                b.s(") crashes on start.");
            }
            8 => {
                b.s("I accidentally pasted my token ");
                let (kind, _, value) = self.token_in_log();
                b.pii(kind, &value);
                b.s(" in the chat, please revoke it!");
            }
            9 => {
                b.s("Reference ");
                let s = self.invalid_ssn();
                b.neg("invalid_ssn", &s);
                b.s(" on the form was rejected, and the IBAN ");
                let i = self.iban_lookalike();
                b.neg("iban_lookalike", &i);
                b.s(" too.");
            }
            10 => {
                b.s("I spoke with ");
                let p = self.person();
                b.pii("person", &p);
                b.s(" from your team yesterday.");
            }
            11 => {
                b.s("Dear ");
                b.s(self.pick(&["Mr. ", "Ms. ", "Mrs. ", "Dr. "]));
                let last = self.pick(SURNAMES);
                b.pii("person", last);
                b.s(", thank you for your patience.");
            }
            12 => {
                b.s("I bought the ");
                let p = self.brand_phrase();
                b.neg("not_a_person", p);
                b.s(" at the ");
                let p = self.brand_phrase();
                b.neg("not_a_person", p);
                b.s(" store.");
            }
            13 => {
                b.s(self.pick(&[
                    "Grüße aus München, das Problem besteht weiterhin.",
                    "Спасибо за помощь, но ничего не работает.",
                    "ありがとうございます、まだ直っていません。",
                    "谢谢，问题还没有解决。",
                    "Ça ne marche toujours pas… 😞",
                    "شكرا لكم، المشكلة ما زالت قائمة.",
                    "Dziękuję, ale nadal nie działa. 🙂",
                ]));
            }
            14 => {
                b.s("Support agent ");
                let p = self.person();
                b.pii("person", &p);
                b.s(" (");
                let e = self.email();
                b.pii("email", &e);
                b.s(") said it would be fixed.");
            }
            15 => {
                b.s("The login page sent me to ");
                b.s("https://app.example.com/callback#access_token=");
                let j = self.jwt();
                b.pii("jwt", &j);
                b.s("&token_type=Bearer");
            }
            16 => {
                b.s("Error ID ");
                let u = self.uuid();
                b.neg("uuid", &u);
                b.s(" at ");
                let ts = self.timestamp();
                b.neg("timestamp", &ts);
                b.s(".");
            }
            17 => {
                b.s("Our server ");
                let ip = self.ipv4();
                b.pii("ipv4", &ip);
                b.s(" cannot reach yours (");
                let ip = self.ipv6();
                b.pii("ipv6", &ip);
                b.s(").");
            }
            18 => {
                b.s("Please cc my colleague ");
                let p = self.person();
                b.pii("person", &p);
                b.s(".");
            }
            19 => {
                b.s("Card ");
                let c = self.card_evasive();
                b.pii("card", &c);
                b.s(" — 请尽快处理, merci 🙏.");
            }
            20 => {
                b.s("Customer ");
                let p = self.person();
                b.pii("person", &p);
                b.s(" asked us to close the account.");
            }
            21 => {
                b.s("The invoice ref ");
                let n = self.order_number();
                let grouped = group4(&n);
                b.neg("order_number", &grouped);
                b.s(" is wrong.");
            }
            22 => {
                b.s(self.pick(&[
                    "Please Update The Billing Page.",
                    "The Customer Portal Shows An Error.",
                    "Thanks for the quick reply!",
                    "It happened again this morning.",
                    "Is there any update on this?",
                ]));
            }
            23 => {
                b.s(self.pick(&[
                    "I contacted ",
                    "We partner with ",
                    "My account manager at ",
                    "We invoice ",
                ]));
                let c = self.pick(COMPANIES);
                b.neg("not_a_person", c);
                b.s(" last week.");
            }
            24 => {
                b.s("Here is my DB URL: postgres://");
                b.s(self.pick(&["app", "admin", "reporting"]));
                b.s(":");
                let pw = self.url_password();
                b.pii("url_password", &pw);
                b.s("@db.example.com:5432/prod");
            }
            _ => {
                b.s("My social is ");
                let s = self.ssn(" ");
                b.pii("ssn", &s);
                b.s(" and my card ");
                let c = self.card_evasive();
                b.pii("card", &c);
                b.s(".");
            }
        }
    }

    fn config_dump(&mut self) -> Doc {
        let mut b = B::default();
        match self.range(0..7) {
            0 => self.env_file(&mut b),
            1 => self.yaml_config(&mut b),
            2 => self.toml_config(&mut b),
            3 => self.service_account_json(&mut b),
            4 => self.pem_dump(&mut b),
            5 => self.shell_history(&mut b),
            _ => self.k8s_secret(&mut b),
        }
        b.doc("config_dump")
    }

    fn env_file(&mut self, b: &mut B) {
        b.s("# .env (production)\nNODE_ENV=production\nPORT=8080\nDATABASE_URL=postgres://app:");
        let pw = self.url_password();
        b.pii("url_password", &pw);
        b.s("@db.internal:5432/app\nREDIS_URL=redis://:");
        let pw = self.url_password();
        b.pii("url_password", &pw);
        b.s("@cache:6379/0\nSECRET_KEY=");
        let s = self.secret_value();
        b.pii("secret", &s);
        b.s("\nGITHUB_TOKEN=");
        let t = self.github_token();
        b.pii("github_token", &t);
        b.s("\nSTRIPE_SECRET_KEY=");
        let k = self.stripe_key();
        b.pii("stripe_key", &k);
        b.s("\nSTRIPE_PUBLISHABLE_KEY=");
        let k = self.stripe_publishable();
        b.neg("stripe_publishable", &k);
        b.s("\nAWS_ACCESS_KEY_ID=");
        let k = self.aws_access_key();
        b.pii("aws_access_key", &k);
        b.s("\nAWS_SECRET_ACCESS_KEY=");
        let s = self.chars(40, B64);
        b.pii("secret", &s);
        b.s("\nSLACK_BOT_TOKEN=");
        let t = self.slack_token();
        b.pii("slack_token", &t);
        b.s("\nDB_PASSWORD=");
        let p = self.placeholder();
        b.neg("placeholder", p);
        b.s("\nSESSION_TTL=3600\nRELEASE=");
        let v = format!("v{}", self.version4());
        b.neg("version", &v);
        b.s("\nADMIN_EMAIL=");
        let e = self.email();
        b.pii("email", &e);
        b.s("\n");
    }

    fn yaml_config(&mut self, b: &mut B) {
        b.s("database:\n  host: db.internal\n  port: 5432\n  user: app\n  password: ");
        if self.chance(0.5) {
            let s = self.secret_value();
            b.pii("secret", &s);
        } else {
            let p = self.placeholder();
            b.neg("placeholder", p);
        }
        b.s("\n  password_min_length: ");
        b.neg("config_param", "12");
        b.s("\noauth:\n  client_id: mcpgate-prod\n  client_secret: \"");
        let s = self.secret_value();
        b.pii("secret", &s);
        b.s("\"\n  token_endpoint: ");
        b.neg("config_param", "https://idp.example.com/oauth2/token");
        b.s("\n  token_ttl: ");
        b.neg("config_param", "3600");
        b.s("\nnotify:\n  slack_token: ");
        let t = self.slack_token();
        b.pii("slack_token", &t);
        b.s("\n  owner: ");
        let e = self.email();
        b.pii("email", &e);
        b.s("\ntls:\n  cert: |\n    ");
        let c = self.public_pem("\n", "    ");
        b.neg("public_pem", &c);
        b.s("\n  key: |\n    ");
        let k = self.private_key("\n", "    ");
        b.pii("private_key", &k);
        b.s("\nlisten: ");
        let ip = self.ipv4();
        b.pii("ipv4", &ip);
        b.s(":8443\n");
    }

    fn toml_config(&mut self, b: &mut B) {
        b.s("[server]\nlisten = \"[");
        let ip = self.ipv6();
        b.pii("ipv6", &ip);
        b.s("]:443\"\nversion = \"");
        let v = self.version4();
        b.neg("version", &v);
        b.s("\"\n\n[upstream]\napi_key = \"");
        let s = self.secret_value();
        b.pii("secret", &s);
        b.s("\"\ngoogle_maps_key = \"");
        let k = self.google_api_key();
        b.pii("google_api_key", &k);
        b.s("\"\nnpm_token = \"");
        let t = self.npm_token();
        b.pii("npm_token", &t);
        b.s("\"\ngitlab = \"");
        let t = self.gitlab_token();
        b.pii("gitlab_token", &t);
        b.s("\"\n\n[publish]\npypi_token = \"");
        let t = self.pypi_token();
        b.pii("pypi_token", &t);
        b.s("\"\nfallback_password = \"");
        let p = self.placeholder();
        b.neg("placeholder", p);
        b.s("\"\n\n[owner]\nname = \"");
        let p = self.person();
        b.pii("person", &p);
        b.s("\"\nemail = \"");
        let e = self.email();
        b.pii("email", &e);
        b.s("\"\n");
    }

    fn service_account_json(&mut self, b: &mut B) {
        b.s("{\n  \"type\": \"service_account\",\n  \"project_id\": \"acme-prod-");
        b.s(&self.digits(6));
        b.s("\",\n  \"private_key_id\": \"");
        let h = self.hex(40);
        b.neg("hex_id", &h);
        b.s("\",\n  \"private_key\": \"");
        let k = self.private_key("\\n", "");
        b.pii("private_key", &k);
        b.s("\\n\",\n  \"client_email\": \"");
        let e = format!(
            "deployer@acme-prod-{}.iam.gserviceaccount.com",
            self.digits(6)
        );
        b.pii("email", &e);
        b.s("\",\n  \"client_id\": \"");
        b.s(&format!("1{}", self.digits(20)));
        b.s("\",\n  \"token_uri\": \"https://oauth2.googleapis.com/token\"\n}\n");
    }

    fn pem_dump(&mut self, b: &mut B) {
        b.s("$ cat ~/.ssh/id_ed25519.pub\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI");
        b.neg("base64", &self.chars(43, B64));
        b.s(" deploy@build-01\n$ cat server.crt\n");
        let c = self.public_pem("\n", "");
        b.neg("public_pem", &c);
        b.s("\n$ cat server.key\n");
        let k = self.private_key("\n", "");
        b.pii("private_key", &k);
        b.s("\n$ openssl x509 -noout -fingerprint\nSHA256 Fingerprint=");
        let fp: Vec<String> = (0..32).map(|_| self.hex(2).to_uppercase()).collect();
        b.neg("fingerprint", &fp.join(":"));
        b.s("\n");
    }

    fn shell_history(&mut self, b: &mut B) {
        b.s("  501  export AWS_ACCESS_KEY_ID=");
        let k = self.aws_access_key();
        b.pii("aws_access_key", &k);
        b.s("\n  502  export AWS_SECRET_ACCESS_KEY=");
        let s = self.chars(40, B64);
        b.pii("secret", &s);
        b.s("\n  503  curl -H 'Authorization: Bearer ");
        let j = self.jwt();
        b.pii("jwt", &j);
        b.s("' https://api.example.com/v1/me\n  504  psql \"postgresql://etl:");
        let pw = self.url_password();
        b.pii("url_password", &pw);
        b.s("@");
        let ip = self.ipv4();
        b.pii("ipv4", &ip);
        b.s("/warehouse\"\n  505  git checkout ");
        let sha = self.hex(40);
        b.neg("git_sha", &sha);
        b.s("\n  506  npm publish --otp=");
        b.s(&self.digits(6));
        b.s("\n  507  docker run -e API_KEY=");
        let s = self.secret_value();
        b.pii("secret", &s);
        b.s(" acme/api:");
        let v = self.version4();
        b.neg("version", &v);
        b.s("\n  508  ping ");
        let ip = self.ipv6();
        b.pii("ipv6", &ip);
        b.s("\n");
    }

    fn k8s_secret(&mut self, b: &mut B) {
        b.s("apiVersion: v1\nkind: Secret\nmetadata:\n  name: api-credentials\n  uid: ");
        let u = self.uuid();
        b.neg("uuid", &u);
        b.s("\n  creationTimestamp: \"");
        let ts = self.timestamp();
        b.neg("timestamp", &ts);
        b.s("\"\ntype: Opaque\nstringData:\n  password: ");
        let s = self.secret_value();
        b.pii("secret", &s);
        b.s("\n  token: ");
        let t = self.github_token();
        b.pii("github_token", &t);
        b.s("\n  username: admin\n  api-key: ");
        let p = self.placeholder();
        b.neg("placeholder", p);
        b.s("\n  tls.key: |\n    ");
        let k = self.private_key("\n", "    ");
        b.pii("private_key", &k);
        b.s("\n");
    }
}

// ---- checksums and formatting ----

fn luhn_check_digit(payload: &str) -> char {
    let mut sum = 0;
    for (i, c) in payload.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

fn luhn_valid(digits: &str) -> bool {
    let (payload, check) = digits.split_at(digits.len() - 1);
    luhn_check_digit(payload).to_string() == check
}

fn card_groups(len: usize) -> Vec<usize> {
    match len {
        15 => vec![4, 6, 5],
        14 => vec![4, 6, 4],
        13 => vec![4, 4, 5],
        n => {
            let mut g = vec![4; n / 4];
            if n % 4 > 0 {
                g.push(n % 4);
            }
            g
        }
    }
}

fn group_card(digits: &str, separator: &str) -> String {
    let mut out = String::new();
    let mut at = 0;
    for (i, g) in card_groups(digits.len()).into_iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        out.push_str(&digits[at..at + g]);
        at += g;
    }
    out
}

fn group4(s: &str) -> String {
    let chunks: Vec<&str> = s
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    chunks.join(" ")
}

/// The remainder mod 97 of an alphanumeric string read as the digits of an
/// IBAN check (letters are 10..35).
fn iban_mod97(s: &str) -> u32 {
    s.chars().fold(0, |r, c| match c.to_digit(36) {
        Some(v) if v < 10 => (r * 10 + v) % 97,
        Some(v) => (r * 100 + v) % 97,
        None => r,
    })
}

/// An IBAN (spaces allowed) moved into check order: BBAN, country, digits.
fn rearrange(iban: &str) -> String {
    let compact: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    format!("{}{}", &compact[4..], &compact[..4])
}

/// CRC-32 (IEEE), as GitHub and npm tokens use for their checksum.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The 6-character base62 checksum that ends a `ghp_`/`npm_` token.
fn base62_crc32(random: &str) -> String {
    let mut n = crc32(random.as_bytes());
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

fn ascii_fold(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' => Some('a'),
            'é' | 'è' | 'ê' | 'ë' => Some('e'),
            'í' | 'ì' | 'î' | 'ï' => Some('i'),
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' | 'ø' => Some('o'),
            'ú' | 'ù' | 'û' | 'ü' => Some('u'),
            'ç' | 'ć' | 'č' => Some('c'),
            'ñ' | 'ń' => Some('n'),
            'ł' => Some('l'),
            'ś' | 'š' => Some('s'),
            'ž' | 'ź' | 'ż' => Some('z'),
            'ř' => Some('r'),
            'ě' | 'ę' => Some('e'),
            'ß' => Some('s'),
            'Á' | 'Ä' | 'Å' => Some('A'),
            'É' => Some('E'),
            'Ö' | 'Ø' => Some('O'),
            'Ü' => Some('U'),
            'Ł' => Some('L'),
            'Ś' | 'Š' => Some('S'),
            'Ž' => Some('Z'),
            '-' => Some('-'),
            c if c.is_ascii_alphanumeric() || c == ' ' || c == '\'' => Some(c),
            _ => None,
        })
        .collect()
}

/// Re-checks a document: labels and negatives sorted, not overlapping, on
/// char boundaries, and every labelled value valid for its kind (so a bug
/// in the generator cannot silently turn into a detector's "miss").
fn check(doc: &Doc) {
    let mut all: Vec<&Label> = doc.labels.iter().chain(&doc.negatives).collect();
    all.sort_by_key(|l| l.start);
    for pair in all.windows(2) {
        assert!(
            pair[0].end <= pair[1].start,
            "overlap: {:?} {:?}",
            pair[0],
            pair[1]
        );
    }
    for l in &all {
        assert!(l.start < l.end, "empty label {l:?}");
        assert!(
            doc.text.get(l.start..l.end).is_some(),
            "not on char boundaries: {l:?}"
        );
    }
    for l in &doc.labels {
        let v = &doc.text[l.start..l.end];
        let ok = match l.kind {
            "card" => {
                let digits: String = v.chars().filter(char::is_ascii_digit).collect();
                let seps_ok = v.chars().all(|c| {
                    c.is_ascii_digit()
                        || matches!(
                            c,
                            ' ' | '-' | '.' | '\u{200b}' | '\u{200d}' | '\u{2060}' | '\u{feff}'
                        )
                });
                seps_ok && (13..=19).contains(&digits.len()) && luhn_valid(&digits)
            }
            "ssn" => {
                let d: String = v.chars().filter(char::is_ascii_digit).collect();
                d.len() == 9 && {
                    let (a, g, s) = (&d[..3], &d[3..5], &d[5..]);
                    a != "000" && a != "666" && !a.starts_with('9') && g != "00" && s != "0000"
                }
            }
            "iban" => iban_mod97(&rearrange(v)) == 1,
            "email" => {
                v.split('@').count() == 2 && v.rsplit('@').next().is_some_and(|d| d.contains('.'))
            }
            "jwt" => {
                let parts: Vec<&str> = v.split('.').collect();
                parts.len() == 3
                    && URL_SAFE_NO_PAD
                        .decode(parts[0])
                        .ok()
                        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
                        .is_some_and(|h| h.get("alg").is_some())
            }
            "private_key" => {
                v.starts_with("-----BEGIN ")
                    && v.ends_with("PRIVATE KEY-----")
                    && v.contains("-----END ")
            }
            "github_token" => {
                v.starts_with("github_pat_")
                    || (v.len() == 40 && v[4..34].len() == 30 && base62_crc32(&v[4..34]) == v[34..])
            }
            "npm_token" => v.len() == 40 && base62_crc32(&v[4..34]) == v[34..],
            "aws_access_key" => v.len() == 20 && (v.starts_with("AKIA") || v.starts_with("ASIA")),
            "gitlab_token" => v.starts_with("glpat-") && v.len() == 26,
            "slack_token" => v.starts_with("xoxb-") || v.starts_with("xoxp-"),
            "stripe_key" => ["sk_live_", "rk_live_", "sk_test_"]
                .iter()
                .any(|p| v.starts_with(p)),
            "pypi_token" => v.starts_with("pypi-AgEIcHlwaS5vcmc"),
            "google_api_key" => v.starts_with("AIza") && v.len() == 39,
            "ipv4" => v.parse::<std::net::Ipv4Addr>().is_ok(),
            "ipv6" => v.parse::<std::net::Ipv6Addr>().is_ok(),
            "url_password" | "secret" | "phone" | "person" => !v.trim().is_empty(),
            other => panic!("unknown label kind {other}"),
        };
        assert!(ok, "label does not round-trip: {} {v:?}", l.kind);
    }
    for l in &doc.negatives {
        let v = &doc.text[l.start..l.end];
        let ok = match l.kind {
            "order_number" => {
                let d: String = v.chars().filter(char::is_ascii_digit).collect();
                !luhn_valid(&d)
            }
            "iban_lookalike" => iban_mod97(&rearrange(v)) != 1,
            "invalid_ssn" => {
                let d: String = v.chars().filter(char::is_ascii_digit).collect();
                let (a, g, s) = (&d[..3], &d[3..5], &d[5..]);
                a == "000" || a == "666" || a.starts_with('9') || g == "00" || s == "0000"
            }
            _ => true,
        };
        assert!(ok, "negative is actually valid: {} {v:?}", l.kind);
    }
}

// ---- word lists ----

/// First names the person detector's dictionary knows.
#[rustfmt::skip]
const FIRST_NAMES: &[&str] = &[
    "James", "John", "Robert", "Michael", "David", "Mary", "Patricia", "Jennifer", "Linda",
    "Elizabeth", "Sarah", "Jessica", "Emily", "Daniel", "Matthew", "Anthony", "Olivia", "Emma",
    "Sophia", "Charlotte", "Amelia", "Oliver", "Harry", "Noah", "Ethan", "Lucas", "Hannah",
    "Maria", "María", "José", "Lucía", "Sofía", "Carlos", "Javier", "Alejandro", "Valentina",
    "João", "Beatriz", "Thiago", "Gabriela", "Pierre", "Camille", "Chloé", "Élodie", "Julien",
    "Mathilde", "Hans", "Jürgen", "Katharina", "Lukas", "Greta", "Björn", "Søren", "Giulia",
    "Matteo", "Francesca", "Lorenzo", "Pieter", "Sanne", "Willem", "Lars", "Ingrid", "Astrid",
    "Mikko", "Aino", "Łukasz", "Agnieszka", "Małgorzata", "Piotr", "Tomáš", "Eliška", "Dmitri",
    "Olga", "Tatiana", "Ivan", "Mehmet", "Zeynep", "Ayşe", "Mohammed", "Fatima", "Omar",
    "Layla", "Reza", "Shirin", "Rahul", "Priya", "Arjun", "Ananya", "Wei", "Xiaoming",
    "Hiroshi", "Yuki", "Haruka", "Minh", "Linh", "Min-jun", "Seo-yeon", "Chinedu", "Ngozi",
    "Kwame", "Amara", "Thabo", "Wanjiru", "Yosef", "Tamar", "Noa", "Jordan", "Austin",
    "Victoria", "Madison", "Siobhan", "Niamh", "Rhys", "Anna", "Dmitry", "Elena", "Sebastian",
    "Nicole",
];

/// First names the dictionary does not know: a person detector finds these
/// only through context.
#[rustfmt::skip]
const RARE_FIRST_NAMES: &[&str] = &[
    "Bartholomew", "Xiomara", "Thandiwe", "Dagny", "Ifeoma", "Cosimo", "Eilidh", "Saoirse",
    "Tadhg", "Radek", "Zbigniew", "Wiesław", "Anneliese", "Gunnhild", "Torvald", "Priyanka",
    "Nkechi", "Chidi", "Yerlan", "Aigerim", "Amaru", "Leilani", "Makoa", "Nizhoni", "Ottoline",
];

#[rustfmt::skip]
const SURNAMES: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor",
    "Anderson", "Thomas", "Moore", "Martin", "Jackson", "Thompson", "White", "Harris", "Clark",
    "Lewis", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Hill", "Green", "Baker",
    "Garcia", "García", "Fernández", "López", "Martínez", "Rodríguez", "Pérez", "Sánchez",
    "Silva", "Santos", "Oliveira", "Souza", "Costa", "Pereira", "Dubois", "Lefèvre", "Moreau",
    "Laurent", "Girard", "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Wagner",
    "Becker", "Hoffmann", "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano",
    "de Vries", "van Dijk", "van der Berg", "de Jong", "Jansen", "Bakker", "Hansen",
    "Johansson", "Nielsen", "Virtanen", "Korhonen", "Nowak", "Kowalski", "Wiśniewski", "Wójcik",
    "Novák", "Dvořák", "Ivanov", "Petrov", "Smirnova", "Kuznetsov", "Yılmaz", "Kaya", "Demir",
    "Haddad", "Hosseini", "Karimi", "Sharma", "Patel", "Singh", "Iyer", "Chen", "Wang", "Zhang",
    "Liu", "Tanaka", "Sato", "Suzuki", "Nguyen", "Tran", "Kim", "Park", "Lee", "Okafor",
    "Okonkwo", "Mensah", "Mwangi", "Dlamini", "Cohen", "Levi", "O'Brien", "O'Connor",
    "McAllister", "MacDonald", "Smith-Jones", "da Silva", "dos Santos", "von Essen",
    "Papadopoulos", "Horváth", "Kovač", "Andersson", "Lindqvist", "Ó Súilleabháin", "Al-Rashid",
    "Ben-David",
];

/// Capitalised phrases that start with a first name but name a brand, a
/// place or a company.
const PERSON_LOOKALIKES: &[&str] = &[
    "Jordan Shoes",
    "Jordan Retro",
    "Mercedes Benz",
    "Victoria Station",
    "Victoria Falls",
    "Charlotte Airport",
    "Austin Office",
    "Georgia Tech",
    "Madison Square Garden",
    "Santiago Bernabéu",
    "Harper Collins",
    "Maya Render",
    "Ariel Bold",
    "Sofia Airport",
    "Florence Cathedral",
    "Lincoln Center",
    "Amazon Basics",
    "Apple Watch",
];

const COMPANIES: &[&str] = &[
    "Charles Schwab",
    "Philip Morris",
    "Morgan Stanley",
    "Goldman Sachs",
    "Johnson Controls",
    "Wells Fargo",
    "Acme Corp",
    "Globex Holdings",
    "Initech Solutions",
    "Dr. Pepper",
];

const PRODUCTS: &[&str] = &[
    "Nimbus Backpack",
    "Aurora Lamp",
    "Summit Tent",
    "Harbor Chair",
    "Turbo Blender",
    "Quantum Headphones",
    "Everest Jacket",
    "Pixel Stand",
    "Cedar Desk",
    "Orbit Speaker",
];
