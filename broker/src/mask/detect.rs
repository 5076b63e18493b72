//! The built-in detectors: one pass over a string finds every card number,
//! national id, bank account, contact detail, address, token, key and
//! password the broker knows how to recognise.
//!
//! Why one pass: masking sits on the relay's hot path and every string a
//! server sends goes through it, so the scan must cost about as much as
//! reading the text once (the target is 300 MB/s per core with every
//! detector on). A prefilter reads the text once, 64 bytes at a time and
//! without a branch per byte, and marks where a finding can start: a digit
//! or a letter that begins a token prefix (`AKIA`, `ghp_`, `xoxb-`, `eyJ`,
//! an IBAN's `DE89`) at a word start, `@`, `:`, `=`, and `--`; with the
//! opt-in `person` detector, also where a capitalised word starts. Each
//! mark is handed to a hand-written validator that parses forward (and a
//! few bytes back) from that point, reports what it found and says where
//! the search resumes, so no byte is looked at by more than a couple of
//! validators and nothing is rescanned with a regex. The common case
//! allocates nothing beyond the findings pushed to `out`.
//!
//! Why not an Aho-Corasick automaton over those literals: the digits, `:`
//! and `=` are so frequent in tool output (timestamps, JSON) that restarting
//! the automaton after every hit cost more than the validators; it ran at
//! half the speed of this prefilter on the benchmark corpus. Most marks are
//! turned away by the prefilter itself (a digit inside `2024-07-17`, a
//! capital whose next letter starts no literal) or by a couple of byte
//! checks before any validator runs.
//!
//! Why validation: a detector that masks every long digit run or every
//! `key: value` hides order numbers, timestamps and ids, and people learn
//! to ignore masks. Each format is checked where it has a check — Luhn and
//! an issuer prefix for cards, mod-97 and the country's length for IBANs,
//! the allocation rules for SSNs, a decodable JSON header with `alg` for
//! JWTs, `Ipv6Addr` parsing for IPv6 — and bare numbers without such a
//! check (SSNs without separators, phone numbers without a national
//! format) count only after a context word (`ssn`, `phone`, ...).
//!
//! Why overlaps are resolved here: a value often matches twice (a GitHub
//! token after `token=` is also a generic secret, a `+1…@host` address is
//! also a phone number). The masker needs disjoint ranges, and the most
//! specific type is the most useful label, so findings are sorted and the
//! more specific of two overlapping findings wins (see [`Detector`]'s
//! rank), then the earliest, then the longest.
//!
//! Evasion: card numbers and SSNs split by spaces, dashes, dots, no-break
//! spaces or zero-width characters are read as one number; multibyte text
//! around a value never shifts a range off a char boundary, because every
//! range starts and ends at an ASCII byte, a char boundary or the end of
//! the string.

use std::cmp::Reverse;
use std::net::Ipv6Addr;
use std::str::FromStr;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{Engine, alphabet};

use super::validate;

/// A built-in detector. Its [`Detector::name`] is the type shown in masks
/// (`[MASKED:card]`) and used in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    Card,
    Ssn,
    Iban,
    Email,
    Phone,
    Ipv4,
    Ipv6,
    AwsAccessKey,
    GithubToken,
    GitlabToken,
    SlackToken,
    StripeKey,
    NpmToken,
    PypiToken,
    GoogleApiKey,
    Jwt,
    PrivateKey,
    UrlPassword,
    Secret,
    Person,
}

impl Detector {
    pub const ALL: [Detector; 20] = [
        Detector::Card,
        Detector::Ssn,
        Detector::Iban,
        Detector::Email,
        Detector::Phone,
        Detector::Ipv4,
        Detector::Ipv6,
        Detector::AwsAccessKey,
        Detector::GithubToken,
        Detector::GitlabToken,
        Detector::SlackToken,
        Detector::StripeKey,
        Detector::NpmToken,
        Detector::PypiToken,
        Detector::GoogleApiKey,
        Detector::Jwt,
        Detector::PrivateKey,
        Detector::UrlPassword,
        Detector::Secret,
        Detector::Person,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Detector::Card => "card",
            Detector::Ssn => "ssn",
            Detector::Iban => "iban",
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Ipv4 => "ipv4",
            Detector::Ipv6 => "ipv6",
            Detector::AwsAccessKey => "aws_access_key",
            Detector::GithubToken => "github_token",
            Detector::GitlabToken => "gitlab_token",
            Detector::SlackToken => "slack_token",
            Detector::StripeKey => "stripe_key",
            Detector::NpmToken => "npm_token",
            Detector::PypiToken => "pypi_token",
            Detector::GoogleApiKey => "google_api_key",
            Detector::Jwt => "jwt",
            Detector::PrivateKey => "private_key",
            Detector::UrlPassword => "url_password",
            Detector::Secret => "secret",
            Detector::Person => "person",
        }
    }

    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    /// IP addresses and person names are opt-in; everything else is on.
    pub fn default_on(self) -> bool {
        !matches!(self, Detector::Ipv4 | Detector::Ipv6 | Detector::Person)
    }

    /// Types with a pattern and a check (checksum, issued ranges, decodable
    /// parts, a fixed prefix): the ones held to recall ≥ 0.99 and
    /// precision ≥ 0.98 on the labelled corpus.
    pub fn is_validated(self) -> bool {
        !matches!(
            self,
            Detector::Phone
                | Detector::Ipv4
                | Detector::Ipv6
                | Detector::UrlPassword
                | Detector::Secret
                | Detector::Person
        )
    }
}

/// One detected value: a byte range of the scanned string (on char
/// boundaries) and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub start: usize,
    pub end: usize,
    pub detector: Detector,
}

impl Detector {
    /// Specificity when two findings overlap: lower wins. A fixed token
    /// format says more than a private-key block, which says more than a
    /// JWT, ... down to IP addresses and names.
    fn rank(self) -> u8 {
        match self {
            Detector::AwsAccessKey
            | Detector::GithubToken
            | Detector::GitlabToken
            | Detector::SlackToken
            | Detector::StripeKey
            | Detector::NpmToken
            | Detector::PypiToken
            | Detector::GoogleApiKey => 0,
            Detector::PrivateKey => 1,
            Detector::Jwt => 2,
            Detector::UrlPassword => 3,
            Detector::Secret => 4,
            Detector::Card => 5,
            Detector::Iban => 6,
            Detector::Ssn => 7,
            Detector::Email => 8,
            Detector::Phone => 9,
            Detector::Ipv4 | Detector::Ipv6 => 10,
            Detector::Person => 11,
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A token format with a fixed prefix, recognised at a word start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Aws,
    GithubShort,
    GithubPat,
    Gitlab,
    Slack,
    Stripe,
    Npm,
    Pypi,
    Google,
}

/// What a byte can start. [`Scanner::new`] turns these into the per-byte
/// flags of its prefilter, keeping only the classes an enabled detector
/// needs.
mod class {
    /// Starts nothing: letters no literal starts with, blanks, most
    /// punctuation, non-ASCII bytes.
    pub const NONE: u8 = 0;
    /// An ASCII digit at a word start: card, SSN, phone, IPv4.
    pub const DIGIT: u8 = 1;
    /// A letter some literal starts with, at a word start (`AKIA`, `ghp_`,
    /// `eyJ`, `hooks.slack.com/`, an IBAN's `DE89`).
    pub const LEAD: u8 = 2;
    /// `@`: email, read back from the `@`.
    pub const AT: u8 = 3;
    /// `:`: `scheme://user:password@`, `name: value`, IPv6.
    pub const COLON: u8 = 4;
    /// `=`: `name = value`.
    pub const EQUALS: u8 = 5;
    /// `-`: `-----BEGIN … PRIVATE KEY-----`.
    pub const DASH: u8 = 6;

    pub fn of(b: u8) -> u8 {
        match b {
            b'0'..=b'9' => DIGIT,
            // AWS and Google prefixes, and every IBAN country code.
            b'A'..=b'Z' => LEAD,
            b'g' | b'x' | b's' | b'r' | b'n' | b'p' | b'e' | b'h' => LEAD,
            b'@' => AT,
            b':' => COLON,
            b'=' => EQUALS,
            b'-' => DASH,
            _ => NONE,
        }
    }
}

/// Whether a `:` or `=` at `i` may matter: `://`, `::` and hex digits
/// before a colon may be a URL or an IPv6 address; otherwise only after a
/// secret's name (before blanks and a quote, as [`Scan::secret_at`] reads
/// it). Most colons are JSON keys that are none of these, and are turned
/// away here, before a validator is called.
#[inline]
fn separator_worth_a_look(b: &[u8], i: usize) -> bool {
    let next = b.get(i + 1).copied().unwrap_or(0);
    if b[i] == b':' && (next == b'/' || next == b':' || (i > 0 && b[i - 1].is_ascii_hexdigit())) {
        return true;
    }
    let mut k = i;
    while k > 0 && i - k < 8 && matches!(b[k - 1], b' ' | b'\t') {
        k -= 1;
    }
    if k > 0 && matches!(b[k - 1], b'"' | b'\'' | b'`') {
        k -= 1;
        if k > 0 && b[k - 1] == b'\\' {
            k -= 1;
        }
    }
    secret_name(b, k).is_some()
}

/// Whether the lead letter at `i` and the bytes after it may start a
/// literal (most capitals start words like `Error`, not `DE89`).
#[inline]
fn lead_worth_a_look(b: &[u8], i: usize) -> bool {
    let at = |k: usize| b.get(k).copied().unwrap_or(0);
    let groups = LEAD_FIRST[usize::from(b[i])] & LEAD_SECOND[usize::from(at(i + 1))];
    // An IBAN (the only group of most capitals) has digits third.
    groups & !LEAD_IBAN != 0 || (groups != 0 && at(i + 2).is_ascii_digit())
}

/// The first two bytes of the literals a lead letter may start, as group
/// bits: a lead is worth a look when the groups of its first byte and of
/// the byte after share one.
const LEAD_IBAN: u8 = 1 << 1;
const LEAD_FIRST: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = b'A';
    while c <= b'Z' {
        t[c as usize] = LEAD_IBAN;
        c += 1;
    }
    t[b'A' as usize] |= 1; // AKIA ASIA ABIA ACCA AIza
    t[b'g' as usize] = 1 << 2; // gh?_ github_pat_ gl*-
    t[b'x' as usize] = 1 << 3; // xox?- xapp-
    t[b's' as usize] = 1 << 4; // sk_
    t[b'r' as usize] = 1 << 4; // rk_
    t[b'n' as usize] = 1 << 5; // npm_
    t[b'p' as usize] = 1 << 6; // pypi-
    t[b'e' as usize] = 1 << 6; // eyJ
    t[b'h' as usize] = 1 << 7; // hooks.slack.com/
    t
};
const LEAD_SECOND: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = b'A';
    while c <= b'Z' {
        t[c as usize] = LEAD_IBAN;
        c += 1;
    }
    t[b'K' as usize] |= 1;
    t[b'S' as usize] |= 1;
    t[b'B' as usize] |= 1;
    t[b'C' as usize] |= 1;
    t[b'I' as usize] |= 1;
    t[b'h' as usize] = 1 << 2;
    t[b'i' as usize] = 1 << 2;
    t[b'l' as usize] = 1 << 2;
    t[b'o' as usize] = (1 << 3) | (1 << 7);
    t[b'a' as usize] = 1 << 3;
    t[b'k' as usize] = 1 << 4;
    t[b'p' as usize] = 1 << 5;
    t[b'y' as usize] = 1 << 6;
    t
};

/// Prefilter flags per byte value, one bit each (see [`Scanner::scan`]).
/// Eight bits are all there is, so a few classes are read from two: a
/// digit, when digits trigger, is the [`ALNUM`] [`TRIGGER`] that is no
/// [`LEAD`]; `:` is the [`LOWER_NEXT`] that is not [`ALNUM`].
mod flag {
    /// An ASCII letter or digit.
    pub const ALNUM: u8 = 1 << 0;
    /// An enabled detector may start here.
    pub const TRIGGER: u8 = 1 << 1;
    /// An ASCII capital: what may follow a capital lead (`AKIA`, an IBAN's
    /// `DE`).
    pub const UPPER: u8 = 1 << 2;
    /// `-` or `.`.
    pub const DASH_DOT: u8 = 1 << 3;
    /// May be the second byte of a capitalised word (a lowercase letter, a
    /// byte of a multi-byte char, `'` or `-`), when `person` is enabled.
    pub const NAME_NEXT: u8 = 1 << 4;
    /// A lead letter, when one of its detectors is enabled.
    pub const LEAD: u8 = 1 << 5;
    /// May follow a lowercase lead letter (`h` of `ghp_`, `k` of `sk_`);
    /// also `:`.
    pub const LOWER_NEXT: u8 = 1 << 6;
    /// May start a person name (a capital, a multi-byte char), when
    /// `person` is enabled.
    pub const NAME: u8 = 1 << 7;
}

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
/// Multiplying bytes of 0 or 1 by this moves byte j's bit to bit 56 + j.
const GATHER: u64 = 0x0102_0408_1020_4080;

/// The enabled built-in detectors, compiled once and shared by sessions.
#[derive(Clone)]
pub struct Scanner {
    enabled: Vec<Detector>,
    /// `enabled` as bits (`Detector::bit`), for the checks on the hot path.
    on: u32,
    /// The prefilter's [`flag`]s of each byte value.
    flags: [u8; 256],
    /// Whether any byte is a trigger or may start a name.
    triggers: bool,
    /// Whether `person` is enabled: the prefilter then also marks where a
    /// name may start.
    names: bool,
}

/// The detectors each byte class can lead to; a class whose detectors are
/// all off triggers nothing.
const DIGIT_DETECTORS: [Detector; 4] = [
    Detector::Card,
    Detector::Ssn,
    Detector::Phone,
    Detector::Ipv4,
];
const LEAD_DETECTORS: [Detector; 10] = [
    Detector::AwsAccessKey,
    Detector::GithubToken,
    Detector::GitlabToken,
    Detector::SlackToken,
    Detector::StripeKey,
    Detector::NpmToken,
    Detector::PypiToken,
    Detector::GoogleApiKey,
    Detector::Jwt,
    Detector::Iban,
];
const COLON_DETECTORS: [Detector; 3] = [Detector::UrlPassword, Detector::Secret, Detector::Ipv6];

/// Shows the enabled detectors, not the 256 prefilter flags.
impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Scanner {
    pub fn new(enabled: impl IntoIterator<Item = Detector>) -> Scanner {
        let mut enabled: Vec<Detector> = enabled.into_iter().collect();
        enabled.sort_unstable();
        enabled.dedup();
        let on = enabled.iter().fold(0, |acc, d| acc | d.bit());
        let any = |ds: &[Detector]| ds.iter().any(|d| on & d.bit() != 0);
        let mut live = [false; 7];
        live[usize::from(class::DIGIT)] = any(&DIGIT_DETECTORS);
        live[usize::from(class::LEAD)] = any(&LEAD_DETECTORS);
        live[usize::from(class::AT)] = any(&[Detector::Email]);
        live[usize::from(class::COLON)] = any(&COLON_DETECTORS);
        live[usize::from(class::EQUALS)] = any(&[Detector::Secret]);
        live[usize::from(class::DASH)] = any(&[Detector::PrivateKey]);
        let names = on & Detector::Person.bit() != 0;
        let mut flags = [0u8; 256];
        for (byte, f) in (0..=255u8).zip(flags.iter_mut()) {
            let c = class::of(byte);
            let live = c != class::NONE && live[usize::from(c)];
            let set = |yes: bool, bit: u8| if yes { bit } else { 0 };
            *f = set(byte.is_ascii_alphanumeric(), flag::ALNUM)
                | set(live, flag::TRIGGER)
                | set(byte.is_ascii_uppercase(), flag::UPPER)
                | set(matches!(byte, b'-' | b'.'), flag::DASH_DOT)
                | set(
                    (byte.is_ascii_lowercase() && LEAD_SECOND[usize::from(byte)] != 0)
                        || byte == b':',
                    flag::LOWER_NEXT,
                )
                | set(live && c == class::LEAD, flag::LEAD)
                | set(names && super::names::may_start_name(byte), flag::NAME)
                | set(
                    names && super::names::may_follow_capital(byte),
                    flag::NAME_NEXT,
                );
        }
        let triggers = flags.iter().any(|f| f & (flag::TRIGGER | flag::NAME) != 0);
        Scanner {
            enabled,
            on,
            flags,
            triggers,
            names,
        }
    }

    /// The detectors this scanner reports, in [`Detector::ALL`] order.
    pub fn enabled(&self) -> &[Detector] {
        &self.enabled
    }

    fn is_on(&self, d: Detector) -> bool {
        self.on & d.bit() != 0
    }

    /// Appends the findings in `text` to `out`, sorted by start and not
    /// overlapping.
    ///
    /// The prefilter reads the text in blocks of 64 bytes and, without a
    /// branch per byte, marks the positions where a validator may start
    /// (from the [`flag`]s of each byte and its neighbours, see
    /// [`Scanner::block_starts`]):
    /// - a trigger byte not inside a word: a digit or lead letter right
    ///   after another letter or digit starts nothing, since every format
    ///   needs a boundary on its left (`@`, `:`, `=`, `-` are never inside
    ///   a word);
    /// - not a later part of a dashed, dotted or timed token (`2024-07-17`,
    ///   `10.0.0.1`, a UUID: a digit after `-`/`.` after a letter or digit;
    ///   `13:45:00`: a digit after `:` after a digit);
    /// - not a lead letter whose next byte starts no literal (`Error`,
    ///   `The`: a capital needs a capital after it);
    /// - not a `-` without another after it.
    ///
    /// Each marked position at or after the resume point gets a few more
    /// byte checks and then its validator ([`Scan::dispatch`]), which says
    /// where to resume.
    ///
    /// With `person` on, the same pass also marks where a name may start (a
    /// capital or a multi-byte char not right after an ASCII letter or
    /// digit) and hands those marks to [`super::names::name_from`], which
    /// keeps a resume point of its own.
    pub fn scan(&self, text: &str, out: &mut Vec<Finding>) {
        if self.names {
            self.scan_blocks::<true>(text, out);
        } else {
            self.scan_blocks::<false>(text, out);
        }
    }

    fn scan_blocks<const NAMES: bool>(&self, text: &str, out: &mut Vec<Finding>) {
        let base = out.len();
        let b = text.as_bytes();
        let mut s = Scan {
            text,
            b,
            scanner: self,
            out,
        };
        let mut resume = 0;
        let mut name_resume = 0;
        let mut block = if self.triggers { 0 } else { b.len() };
        while block < b.len() {
            let end = b.len().min(block + 64);
            let (mut starts, mut names) = self.block_starts::<NAMES>(b, block);
            while starts != 0 {
                let i = block + starts.trailing_zeros() as usize;
                starts &= starts - 1;
                if i >= resume {
                    // Every validator resumes past `i`; the max() makes
                    // progress a property of this loop.
                    resume = s.dispatch(i).max(i + 1);
                }
            }
            while NAMES && names != 0 {
                let i = block + names.trailing_zeros() as usize;
                names &= names - 1;
                if let Some((start, end)) = super::names::name_from(text, i, &mut name_resume) {
                    s.push(start, end, Detector::Person);
                }
            }
            // Skip what both searches are past (a long token, a key).
            let next = if NAMES {
                resume.min(name_resume)
            } else {
                resume
            };
            block = end.max(next);
        }
        let kept = resolve(&mut out[base..]);
        out.truncate(base + kept);
    }

    /// The positions in `b[block..block + 64]` where a validator may start,
    /// one bit per byte, and (with `NAMES`) those where a person name may
    /// start. The flags of the block, with those of the two bytes before it
    /// and of the one after, are laid out in a row, so each byte's
    /// neighbours are the same row read one or two bytes off; eight bytes
    /// are combined at a time as a `u64` and the result gathered to one bit
    /// per byte by a multiply.
    #[inline(always)]
    fn block_starts<const NAMES: bool>(&self, b: &[u8], block: usize) -> (u64, u64) {
        let end = b.len().min(block + 64);
        let flag = |k: usize| b.get(k).map_or(0, |&c| self.flags[usize::from(c)]);
        let mut row = [0u8; 72];
        if block >= 2 {
            row[0] = flag(block - 2);
        }
        if block >= 1 {
            row[1] = flag(block - 1);
        }
        for (r, &c) in row[2..].iter_mut().zip(&b[block..end]) {
            *r = self.flags[usize::from(c)];
        }
        row[2 + end - block] = flag(end);
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&row[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let bit = |w: u64, f: u8| (w >> f.trailing_zeros()) & LOW_BITS;
        let mut starts = 0;
        let mut names = 0;
        for j in 0..8 {
            // Per byte: the flags of the byte two before, one before, this
            // one, and the one after.
            let before_2 = word(8 * j);
            let before = word(8 * j + 1);
            let this = word(8 * j + 2);
            let after = word(8 * j + 3);
            let alnum = |w: u64| bit(w, flag::ALNUM);
            let digit = |w: u64| bit(w, flag::TRIGGER) & alnum(w) & !bit(w, flag::LEAD);
            let in_word = alnum(before) & alnum(this);
            let colon_before = bit(before, flag::LOWER_NEXT) & !alnum(before);
            let later_part = digit(this)
                & ((bit(before, flag::DASH_DOT) & alnum(before_2))
                    | (colon_before & digit(before_2)));
            // A capital lead needs a capital after it, a lowercase one a
            // letter of its literals.
            let upper = bit(this, flag::UPPER);
            let next_ok = (upper & bit(after, flag::UPPER))
                | (!upper & bit(after, flag::LOWER_NEXT) & alnum(after));
            let no_literal = bit(this, flag::LEAD) & !next_ok;
            // `-` triggers only the `-----BEGIN` of a key: a second `-`.
            let dash = |w: u64| bit(w, flag::DASH_DOT) & bit(w, flag::TRIGGER);
            let lone_dash = dash(this) & !dash(after);
            let start = bit(this, flag::TRIGGER) & !(in_word | later_part | no_literal | lone_dash);
            starts |= (start & LOW_BITS).wrapping_mul(GATHER) >> 56 << (8 * j);
            if NAMES {
                // The names module checks `_` and multi-byte letters before.
                let name = bit(this, flag::NAME) & bit(after, flag::NAME_NEXT) & !alnum(before);
                names |= (name & LOW_BITS).wrapping_mul(GATHER) >> 56 << (8 * j);
            }
        }
        (starts, names)
    }
}

/// Sorts `found` by start and keeps a disjoint subset: of two overlapping
/// findings the lower [`Detector::rank`] wins, then the earlier, then the
/// longer. Returns how many were kept (moved to the front).
fn resolve(found: &mut [Finding]) -> usize {
    found.sort_unstable_by_key(|f| (f.start, f.detector.rank(), Reverse(f.end)));
    let mut kept = 0;
    for i in 0..found.len() {
        let f = found[i];
        if kept == 0 || f.start >= found[kept - 1].end {
            found[kept] = f;
            kept += 1;
        } else if f.detector.rank() < found[kept - 1].detector.rank() {
            // `f` starts at or after the last one, which started after the
            // one before it ended, so `f` cannot overlap anything earlier.
            found[kept - 1] = f;
        }
    }
    kept
}

/// The state of one scan: the text and where findings go.
struct Scan<'a, 's> {
    text: &'a str,
    b: &'a [u8],
    scanner: &'s Scanner,
    out: &'s mut Vec<Finding>,
}

impl Scan<'_, '_> {
    fn on(&self, d: Detector) -> bool {
        self.scanner.is_on(d)
    }

    fn push(&mut self, start: usize, end: usize, detector: Detector) {
        debug_assert!(start < end && end <= self.b.len());
        debug_assert!(self.text.is_char_boundary(start) && self.text.is_char_boundary(end));
        self.out.push(Finding {
            start,
            end,
            detector,
        });
    }

    /// Runs the validator for the trigger at `i`; returns where the search
    /// resumes.
    ///
    /// A few byte checks first turn most triggers away before a validator
    /// runs (the prefilter has already seen to digits).
    fn dispatch(&mut self, i: usize) -> usize {
        let b = self.b;
        match b[i] {
            b'0'..=b'9' => self.on_digit(i),
            b'@' => self.on_at(i),
            b'-' if b.get(i + 1) == Some(&b'-') => self.on_dash(i),
            b':' if separator_worth_a_look(b, i) => self.on_colon(i),
            b'=' if separator_worth_a_look(b, i) => self.on_equals(i),
            b'-' | b':' | b'=' => i + 1,
            _ if lead_worth_a_look(b, i) => self.on_lead(i),
            _ => i + 1,
        }
    }

    /// A word starting with a letter some format starts with: the fixed
    /// token prefixes, `eyJ` (JWT), `hooks.slack.com/`, and `CCdd` (an IBAN's
    /// country code and check digits). Returns where the search resumes.
    fn on_lead(&mut self, i: usize) -> usize {
        let rest = &self.b[i..];
        let has = |p: &[u8]| rest.starts_with(p);
        let found = match rest[0] {
            b'A' => match rest {
                [b'A', b'K' | b'S' | b'B', b'I', b'A', ..] | [b'A', b'C', b'C', b'A', ..] => {
                    Some((Token::Aws, 4))
                }
                [b'A', b'I', b'z', b'a', ..] => Some((Token::Google, 4)),
                _ => None,
            },
            b'g' => match rest {
                [b'g', b'h', b'p' | b'o' | b'u' | b's' | b'r', b'_', ..] => {
                    Some((Token::GithubShort, 4))
                }
                _ if has(b"github_pat_") => Some((Token::GithubPat, 11)),
                _ if has(b"glpat-") || has(b"glptt-") => Some((Token::Gitlab, 6)),
                _ if has(b"glrt-") || has(b"gldt-") => Some((Token::Gitlab, 5)),
                _ => None,
            },
            b'x' => match rest {
                [b'x', b'o', b'x', b'b' | b'a' | b'p' | b'r' | b's', b'-', ..] => {
                    Some((Token::Slack, 5))
                }
                _ if has(b"xapp-") => Some((Token::Slack, 5)),
                _ => None,
            },
            b's' | b'r' => match rest {
                [_, b'k', b'_', b'l', b'i', b'v', b'e', b'_', ..]
                | [_, b'k', b'_', b't', b'e', b's', b't', b'_', ..] => Some((Token::Stripe, 8)),
                _ => None,
            },
            b'n' if has(b"npm_") => Some((Token::Npm, 4)),
            b'p' if has(b"pypi-AgEIcHlwaS5vcmc") => Some((Token::Pypi, 20)),
            b'e' if has(b"eyJ") => return self.on_jwt(i),
            b'h' if has(b"hooks.slack.com/") => return self.on_slack_hook(i, i + 16),
            _ => None,
        };
        if let Some((t, len)) = found {
            return self.on_token(t, i, i + len);
        }
        if let [c0, c1, d0, d1, ..] = *rest
            && c0.is_ascii_uppercase()
            && c1.is_ascii_uppercase()
            && d0.is_ascii_digit()
            && d1.is_ascii_digit()
            && self.on(Detector::Iban)
            && let Some(end) = iban(self.b, i)
        {
            self.push(i, end, Detector::Iban);
            return end;
        }
        word_end(self.b, i)
    }

    /// `-----BEGIN `: maybe a private key.
    fn on_dash(&mut self, i: usize) -> usize {
        if self.b[i..].starts_with(b"-----BEGIN ") {
            self.on_pem(i, i + 11)
        } else {
            i + 1
        }
    }

    // ----- tokens with a fixed prefix -------------------------------------

    fn on_token(&mut self, token: Token, start: usize, end: usize) -> usize {
        let b = self.b;
        if start > 0 && is_word(b[start - 1]) {
            return end;
        }
        let (detector, body_end) = match token {
            Token::Aws => (
                Detector::AwsAccessKey,
                // Key ids are base32 (`A-Z2-7`); like gitleaks, take any
                // uppercase alphanumeric, the prefix is what is rare.
                exact_run(b, end, 16, |c| c.is_ascii_uppercase() || c.is_ascii_digit()),
            ),
            Token::GithubShort => (
                Detector::GithubToken,
                exact_run(b, end, 36, |c| c.is_ascii_alphanumeric()),
            ),
            Token::GithubPat => (Detector::GithubToken, exact_run(b, end, 82, is_word)),
            Token::Gitlab => (Detector::GitlabToken, gitlab_body(b, end)),
            Token::Slack => (
                Detector::SlackToken,
                min_run(b, end, 10, 512, |c| c.is_ascii_alphanumeric() || c == b'-'),
            ),
            Token::Stripe => (
                Detector::StripeKey,
                min_run(b, end, 10, 99, |c| c.is_ascii_alphanumeric()),
            ),
            Token::Npm => (
                Detector::NpmToken,
                exact_run(b, end, 36, |c| c.is_ascii_alphanumeric()),
            ),
            Token::Pypi => (Detector::PypiToken, min_run(b, end, 50, 1024, is_b64url)),
            Token::Google => (Detector::GoogleApiKey, exact_run(b, end, 35, is_b64url)),
        };
        match body_end {
            Some(e) if self.on(detector) && (e == b.len() || !is_word(b[e])) => {
                self.push(start, e, detector);
                e
            }
            _ => end,
        }
    }

    /// `https://hooks.slack.com/services/T…/B…/…` (also `workflows/` and
    /// `triggers/`): the whole URL, since its path is the credential.
    fn on_slack_hook(&mut self, start: usize, end: usize) -> usize {
        let b = self.b;
        let from = if b[..start].ends_with(b"https://") {
            start - 8
        } else if b[..start].ends_with(b"http://") {
            start - 7
        } else if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'.') {
            return end;
        } else {
            start
        };
        let rest = &b[end..];
        let kind = [&b"services/"[..], b"workflows/", b"triggers/"]
            .into_iter()
            .find(|k| rest.starts_with(k));
        let Some(kind) = kind else { return end };
        let path = end + kind.len();
        let path_end = run_end(b, path, 512, |c| {
            c.is_ascii_alphanumeric() || matches!(c, b'/' | b'_' | b'+' | b'-')
        });
        if path_end - path >= 20 && self.on(Detector::SlackToken) {
            self.push(from, path_end, Detector::SlackToken);
            return path_end;
        }
        end
    }

    // ----- JWT ----------------------------------------------------------

    /// `eyJ…` `.` payload `.` signature, confirmed by decoding: the header
    /// is a JSON object with `alg`, the payload a JSON object.
    fn on_jwt(&mut self, start: usize) -> usize {
        let b = self.b;
        let skip = start + 3;
        if start > 0 && (is_b64url(b[start - 1]) || b[start - 1] == b'.') {
            return skip;
        }
        let h_end = b64url_end(b, start, 4096);
        if b.get(h_end) != Some(&b'.') {
            return skip;
        }
        let p_end = b64url_end(b, h_end + 1, 1 << 16);
        if p_end - (h_end + 1) < 2 || b.get(p_end) != Some(&b'.') {
            return skip;
        }
        let s_end = b64url_end(b, p_end + 1, 4096);
        // A fourth segment makes it something else (JWE has five parts).
        if b.get(s_end) == Some(&b'.') && b.get(s_end + 1).is_some_and(|&c| is_b64url(c)) {
            return skip;
        }
        if !jwt_header_ok(&b[start..h_end]) || !jwt_payload_ok(&b[h_end + 1..p_end]) {
            return skip;
        }
        if self.on(Detector::Jwt) {
            self.push(start, s_end, Detector::Jwt);
        }
        s_end
    }

    // ----- PEM private keys -----------------------------------------------

    /// `-----BEGIN … PRIVATE KEY-----` to the matching `-----END …-----`,
    /// or to the end of the text when the END line is missing (a truncated
    /// key is still a key).
    fn on_pem(&mut self, start: usize, end: usize) -> usize {
        let b = self.b;
        let label_end = run_end(b, end, 64, |c| {
            c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
        });
        let label = &b[end..label_end];
        if !b[label_end..].starts_with(b"-----")
            || !(label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK"))
        {
            return end;
        }
        let body = label_end + 5;
        let stop = match memchr::memmem::find(&b[body..], b"-----END ") {
            Some(at) => {
                let after = body + at + 9;
                let close = b[after..b.len().min(after + 80)]
                    .windows(5)
                    .position(|w| w == b"-----");
                match close {
                    Some(c) => after + c + 5,
                    None => b.len(),
                }
            }
            None => b.len(),
        };
        if self.on(Detector::PrivateKey) {
            self.push(start, stop, Detector::PrivateKey);
        }
        stop
    }

    // ----- email ----------------------------------------------------------

    /// `local@domain.tld`, the local part read backwards from the `@`.
    fn on_at(&mut self, at: usize) -> usize {
        let b = self.b;
        let mut start = at;
        while start > 0 && at - start <= 64 && is_local(b[start - 1]) {
            start -= 1;
        }
        if at - start > 64 {
            return at + 1;
        }
        // No leading or double dot: the address starts after the last `..`
        // and after any leading dots.
        if let Some(dd) = b[start..at].windows(2).rposition(|w| w == b"..") {
            start += dd + 2;
        }
        while start < at && b[start] == b'.' {
            start += 1;
        }
        if start == at || b[at - 1] == b'.' {
            return at + 1;
        }
        // `postgres://app@db` is a URL's user, not a mailbox.
        if b[..start].ends_with(b"//") {
            return at + 1;
        }
        let Some(end) = domain_end(b, at + 1) else {
            return at + 1;
        };
        if self.on(Detector::Email) {
            self.push(start, end, Detector::Email);
        }
        end
    }

    // ----- `:` and `=` ----------------------------------------------------

    fn on_colon(&mut self, p: usize) -> usize {
        let b = self.b;
        let next = b.get(p + 1).copied().unwrap_or(0);
        if next == b'/' {
            return if b[p + 1..].starts_with(b"//") {
                self.on_url(p)
            } else {
                p + 1
            };
        }
        if self.on(Detector::Secret) {
            self.secret_at(p);
        }
        let hex_before = p > 0 && b[p - 1].is_ascii_hexdigit();
        if self.on(Detector::Ipv6)
            && (hex_before || next == b':')
            && colon_follows(b, p)
            && !clock_time(b, p)
            && let Some((s, e)) = ipv6_at(self.text, p)
        {
            self.push(s, e, Detector::Ipv6);
            return e;
        }
        p + 1
    }

    fn on_equals(&mut self, p: usize) -> usize {
        self.secret_at(p);
        p + 1
    }

    /// `scheme://user:password@host`: the password only.
    fn on_url(&mut self, p: usize) -> usize {
        let b = self.b;
        let after = p + 3;
        if p == 0 || !b[p - 1].is_ascii_alphanumeric() || !self.on(Detector::UrlPassword) {
            return after;
        }
        // The authority ends at the path, query, fragment, or anything that
        // cannot be in an unquoted URL.
        let auth_end = run_end(b, after, 512, |c| {
            !matches!(
                c,
                b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'\\' | b'`'
            ) && !c.is_ascii_whitespace()
        });
        // The last `@` ends the user info: a password may hold an
        // unescaped `@`, a host cannot.
        let Some(at) = memchr::memrchr(b'@', &b[after..auth_end]).map(|i| after + i) else {
            return after;
        };
        let Some(colon) = memchr::memchr(b':', &b[after..at]).map(|i| after + i) else {
            return after;
        };
        let value = &self.text[colon + 1..at];
        if value.is_empty() || is_placeholder(value) {
            return after;
        }
        self.push(colon + 1, at, Detector::UrlPassword);
        at + 1
    }

    /// `name: value`, `name = value`, `name => value`, `name := value` where
    /// the name ends with a secret-ish word (`password`, `client_secret`,
    /// `apiKey`, `X-API-KEY`, ...). Reports the value only.
    fn secret_at(&mut self, p: usize) -> Option<()> {
        let b = self.b;
        let len = b.len();
        // The separator, and no comparison operator (`==`, `!=`, `<=`, `>=`).
        let sep_end = if b[p] == b'=' {
            if p > 0 && matches!(b[p - 1], b'=' | b'!' | b'<' | b'>' | b':') {
                return None;
            }
            match b.get(p + 1) {
                // `a == b` compares; `secret==x1` (no blanks) sets `=x1`.
                Some(b'=')
                    if p == 0
                        || matches!(b[p - 1], b' ' | b'\t')
                        || matches!(b.get(p + 2), None | Some(b' ' | b'\t')) =>
                {
                    return None;
                }
                Some(b'>') => p + 2,
                _ => p + 1,
            }
        } else {
            match b.get(p + 1) {
                Some(b':') => return None,
                Some(b'=') => p + 2,
                _ => p + 1,
            }
        };
        // The name: back over blanks and a closing quote (maybe escaped, as
        // in JSON inside a JSON string).
        let mut k = p;
        while k > 0 && p - k < 8 && matches!(b[k - 1], b' ' | b'\t') {
            k -= 1;
        }
        let closed = k > 0 && matches!(b[k - 1], b'"' | b'\'' | b'`');
        if closed {
            k -= 1;
            if k > 0 && b[k - 1] == b'\\' {
                k -= 1;
            }
        }
        let kind = secret_name(b, k)?;
        // The identifier that ends with the name (`_pwd` of `self._pwd`).
        let ident_start = || {
            k - b[..k]
                .iter()
                .rev()
                .take(64)
                .take_while(|&&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
                .count()
        };

        let mut v = sep_end;
        while v < len && v - sep_end < 8 && matches!(b[v], b' ' | b'\t') {
            v += 1;
        }
        // `'Password: '`: the separator is inside a string that the quote
        // after it closes (a prompt), not between a name and a value.
        if !closed && matches!(b.get(v), Some(b'"' | b'\'' | b'`')) {
            let open = ident_start().checked_sub(1).map(|q| b[q]);
            if b.get(v).copied() == open {
                return None;
            }
        }
        let (mut vs, mut ve, quoted) = value_at(b, v)?;
        if kind == NameKind::Authorization {
            // `Bearer abc…`: the credential after the scheme word, inside
            // the quotes or (unquoted) after the blank that ended the value.
            let scheme = run_end(b, vs, 16, |c| c.is_ascii_alphabetic());
            if scheme > vs && b.get(scheme) == Some(&b' ') && (scheme < ve || !quoted) {
                vs = scheme + 1;
                ve = if quoted {
                    run_end(b, vs, ve - vs, |c| !c.is_ascii_whitespace())
                } else {
                    unquoted_end(b, vs)
                };
            }
        }
        let value = &self.text[vs..ve];
        if value.is_empty() || is_placeholder(value) {
            return None;
        }
        let ok = match kind {
            NameKind::Password => {
                // Prose: "password: click the link below".
                let word = value.bytes().all(|c| c.is_ascii_alphabetic());
                let more = b.get(ve) == Some(&b' ')
                    && b.get(ve + 1).is_some_and(|c| c.is_ascii_alphabetic());
                quoted || !(word && more)
            }
            NameKind::Key | NameKind::Authorization => is_key_like(value),
        };
        // Code assigns from calls, attributes and expressions; a secret
        // in code is a quoted literal.
        let code = || !quoted && is_code(b, vs, ve, &b[ident_start()..k]);
        if ok && !code() {
            self.push(vs, ve, Detector::Secret);
        }
        Some(())
    }

    // ----- digits ---------------------------------------------------------

    /// A digit: card, SSN, phone and IPv4, most specific first. The
    /// first that matches wins; otherwise the search resumes after the
    /// digit run.
    fn on_digit(&mut self, i: usize) -> usize {
        let b = self.b;
        let run = digits_end(b, i);
        let prev = if i > 0 { b[i - 1] } else { b' ' };
        // Glued to a word (`v1`, `id42`, a hash): the driver skips those,
        // this keeps the validator right on its own.
        if prev.is_ascii_alphanumeric() {
            return run;
        }
        // A later group of a dashed or dotted token (`INV-2024-0001`, a UUID,
        // `1.2.3.4.5`) is not a number of its own.
        if matches!(prev, b'-' | b'.') && i >= 2 && b[i - 2].is_ascii_alphanumeric() {
            return run;
        }
        // Nothing below fits a short run that no separator continues, and
        // the most common digits of all, an ISO date, are none of them.
        let next = b.get(run).copied().unwrap_or(b'\n');
        let sep_follows = matches!(next, b' ' | b'-' | b'.' | b')' | 0xC2 | 0xE2 | 0xEF);
        if run - i < 7 && !sep_follows {
            return run;
        }
        let phoneish = matches!(prev, b'+' | b'(') || next == b')' || b[run..].starts_with(b" (");
        if run - i < 7
            && matches!(next, b' ' | b'-' | b'.')
            && !b.get(run + 1).is_some_and(u8::is_ascii_digit)
            && !phoneish
        {
            return run;
        }
        if run - i == 4 && is_iso_date(&b[i..]) {
            return i + 10;
        }
        // How many digits the grouped number holds decides what it can be:
        // a card has 13–19, an SSN 9, a phone number 7 or more (or fewer
        // before its closing parenthesis: `+1 (415)`).
        let (grouped_end, digits) = grouped_run(b, i);
        let dotted = next == b'.';
        if digits < 7 && !phoneish && !(dotted && self.on(Detector::Ipv4)) {
            return run;
        }
        if (13..=19).contains(&digits)
            && self.on(Detector::Card)
            && let Some(end) = card(b, i)
        {
            self.push(i, end, Detector::Card);
            return end;
        }
        if digits >= 9
            && self.on(Detector::Ssn)
            && let Some(end) = ssn(b, i)
        {
            self.push(i, end, Detector::Ssn);
            return end;
        }
        // A dotted quad is never a phone number (octets have at most three
        // digits, no phone format has four dotted groups that short), so
        // it is tried first: IP addresses are common in logs.
        if dotted
            && self.on(Detector::Ipv4)
            && let Some(end) = ipv4(b, i)
        {
            self.push(i, end, Detector::Ipv4);
            return end;
        }
        if (digits >= 7 || phoneish)
            && self.on(Detector::Phone)
            && let Some((s, end)) = phone(b, i)
        {
            self.push(s, end, Detector::Phone);
            return end;
        }
        // A long grouped number that is none of the above (an IBAN's tail,
        // a reference) must not have its later groups tried as a card.
        if digits >= 13 { grouped_end } else { run }
    }
}

// ----- byte classes and runs ------------------------------------------------

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_b64url(c: u8) -> bool {
    B64URL_BYTES[usize::from(c)]
}

/// The base64url alphabet, as a table: JWT segments are long and read
/// byte by byte.
const B64URL_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        c += 1;
    }
    t
};

fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// The end of the run of `class` bytes starting at `s`, at most `max` long.
fn run_end(b: &[u8], s: usize, max: usize, class: impl Fn(u8) -> bool) -> usize {
    let limit = b.len().min(s.saturating_add(max));
    let mut e = s;
    while e < limit && class(b[e]) {
        e += 1;
    }
    e
}

/// The end of the run of ASCII letters and digits at `s`.
fn word_end(b: &[u8], s: usize) -> usize {
    run_end(b, s, usize::MAX, |c| c.is_ascii_alphanumeric())
}

/// [`run_end`] for base64url: JWTs are long and make up much of some tool
/// output.
fn b64url_end(b: &[u8], s: usize, max: usize) -> usize {
    table_end(b, s, max, &B64URL_BYTES)
}

/// [`run_end`] for a class given as a table, eight bytes at a time while
/// it can (one branch per eight bytes of a long run).
fn table_end(b: &[u8], s: usize, max: usize, class: &[bool; 256]) -> usize {
    let limit = b.len().min(s.saturating_add(max));
    let mut e = s;
    while e + 8 <= limit
        && b[e..e + 8]
            .iter()
            .fold(true, |all, &c| all & class[usize::from(c)])
    {
        e += 8;
    }
    run_end(b, e, limit - e, |c| class[usize::from(c)])
}

fn digits_end(b: &[u8], s: usize) -> usize {
    // Eight bytes at a time: digit runs are short and their lengths vary,
    // so a byte loop mispredicts its exit almost every time.
    let mut e = s;
    while let Some(eight) = b.get(e..e + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(eight);
        let k = leading_digits(u64::from_le_bytes(w));
        e += k;
        if k < 8 {
            return e;
        }
    }
    run_end(b, e, 8, |c| c.is_ascii_digit())
}

/// How many of the eight bytes of `w` (little-endian) are ASCII digits
/// before the first that is not.
fn leading_digits(w: u64) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // A digit becomes 0..=9; the high bit of a byte is then set by the add
    // when it was 10..=127 and by the or when it was 128 or more. A carry
    // can only leave a byte that is not a digit, so the bytes below the
    // first such byte are read right.
    let t = w ^ (ONES * 0x30);
    let not_digit = (t.wrapping_add(ONES * 0x76) | t) & (ONES * 0x80);
    (not_digit.trailing_zeros() / 8) as usize
}

/// Exactly `n` bytes of `class` at `s`, not followed by another.
fn exact_run(b: &[u8], s: usize, n: usize, class: impl Fn(u8) -> bool) -> Option<usize> {
    (run_end(b, s, n + 1, class) == s + n).then_some(s + n)
}

/// Between `min` and `max` bytes of `class` at `s`, not followed by another.
fn min_run(
    b: &[u8],
    s: usize,
    min: usize,
    max: usize,
    class: impl Fn(u8) -> bool,
) -> Option<usize> {
    let e = run_end(b, s, max + 1, class);
    (min..=max).contains(&(e - s)).then_some(e)
}

/// A GitLab token body: `[A-Za-z0-9_-]{20,}`; the newer routable tokens
/// also have inner dots (`glpat-…​.01.…`).
fn gitlab_body(b: &[u8], s: usize) -> Option<usize> {
    let mut e = s;
    loop {
        e = run_end(b, e, 512, is_b64url);
        if e - s < 512 && b.get(e) == Some(&b'.') && b.get(e + 1).is_some_and(|&c| is_b64url(c)) {
            e += 1;
        } else {
            break;
        }
    }
    (e - s >= 20).then_some(e)
}

/// The largest char boundary at or before `e` (`b` is a `str`'s bytes).
fn floor_boundary(b: &[u8], mut e: usize) -> usize {
    while e < b.len() && (b[e] & 0xC0) == 0x80 {
        e -= 1;
    }
    e
}

/// Whether one of `words` (lowercase ASCII) starts a word within `window`
/// bytes before `start`. Only word starts are compared, so the cost is a
/// pass over the window.
fn context_before(b: &[u8], start: usize, window: usize, words: &[&[u8]]) -> bool {
    debug_assert!(words.iter().all(|w| w[0].is_ascii_lowercase()));
    // The first letters of the words, as bits 0 ('a') to 25 ('z').
    let firsts = words.iter().fold(0u32, |m, w| m | 1 << (w[0] - b'a'));
    let from = start.saturating_sub(window);
    (from..start).any(|j| {
        let c = b[j] | 0x20;
        c.is_ascii_lowercase()
            && firsts & (1 << (c - b'a')) != 0
            && (j == 0 || !b[j - 1].is_ascii_alphabetic())
            && words.iter().any(|w| {
                w[0] == c && j + w.len() <= start && b[j..j + w.len()].eq_ignore_ascii_case(w)
            })
    })
}

// ----- digit groups ---------------------------------------------------------

/// How the groups of a number are separated. An SSN uses one kind
/// throughout; no-break and thin spaces count as spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SepKind {
    Space,
    Dash,
    Dot,
    ZeroWidth,
}

fn is_zero_width(s: &[u8]) -> bool {
    // U+200B..U+200D, U+2060, U+FEFF.
    matches!(
        s,
        [0xE2, 0x80, 0x8B..=0x8D, ..] | [0xE2, 0x81, 0xA0, ..] | [0xEF, 0xBB, 0xBF, ..]
    )
}

/// The separator at `p`, if any, and its length in bytes. A run of up to
/// four zero-width characters is one separator.
fn sep_at(b: &[u8], p: usize) -> Option<(SepKind, usize)> {
    match b.get(p..)? {
        [b' ', ..] => Some((SepKind::Space, 1)),
        [b'-', ..] => Some((SepKind::Dash, 1)),
        [b'.', ..] => Some((SepKind::Dot, 1)),
        [0xC2, 0xA0, ..] => Some((SepKind::Space, 2)),
        [0xE2, 0x80, 0x89 | 0xAF, ..] => Some((SepKind::Space, 3)),
        _ => {
            let mut q = p;
            while q - p < 12 && is_zero_width(&b[q..]) {
                q += 3;
            }
            (q > p).then_some((SepKind::ZeroWidth, q - p))
        }
    }
}

/// What may follow the last digit of a number: not a word character, and
/// not a dash or dot that continues it with more digits.
fn ends_cleanly(b: &[u8], e: usize) -> bool {
    match b.get(e) {
        None => true,
        Some(&c) if is_word(c) => false,
        Some(b'-' | b'.') => !b.get(e + 1).is_some_and(u8::is_ascii_digit),
        Some(_) => true,
    }
}

// ----- card -----------------------------------------------------------------

/// A card number at `i`: 13–19 digits, whole or in groups split by single
/// separators (spaces, dashes, dots, no-break or zero-width characters,
/// mixed too: evasion mixes them), an issuer prefix that allows its length,
/// and a valid Luhn check digit. The number is the whole grouped run, so a
/// longer reference that merely starts with a valid card number is not
/// one; only an expiry date right after (`… 1111 12/29`) is left out.
fn card(b: &[u8], i: usize) -> Option<usize> {
    // Every issuer prefix starts with 2–6.
    if !(b'2'..=b'6').contains(&b[i]) || after_code_group(b, i) {
        return None;
    }
    let mut digits = [0u8; 19];
    let mut n = 0;
    let mut before_last = None;
    let mut p = i;
    let end = loop {
        let ge = digits_end(b, p);
        if n + (ge - p) > 19 {
            return None;
        }
        for &c in &b[p..ge] {
            digits[n] = c - b'0';
            n += 1;
        }
        match sep_at(b, ge) {
            Some((_, l)) if b.get(ge + l).is_some_and(u8::is_ascii_digit) => {
                before_last = Some((n, ge));
                p = ge + l;
            }
            _ => break ge,
        }
    };
    let valid = |count: usize| {
        let d = &digits[..count];
        (13..=19).contains(&count)
            && card_brand_ok(d)
            && validate::luhn_digits(d.iter().rev().copied())
    };
    if b.get(end).is_some_and(|&c| is_word(c)) {
        return None;
    }
    if valid(n) {
        return Some(end);
    }
    match before_last {
        Some((count, e)) if b.get(end) == Some(&b'/') && valid(count) => Some(e),
        _ => None,
    }
}

/// Whether the number at `i` continues a code after a space: one of the
/// (up to three) groups of capitals and digits before it mixes the two
/// (`IT72 A748 4042 …`, `GB18 DFIT 6940 …`: an IBAN's groups).
fn after_code_group(b: &[u8], i: usize) -> bool {
    let mut k = i;
    for _ in 0..3 {
        if k < 2 || b[k - 1] != b' ' {
            return false;
        }
        let end = k - 1;
        let mut start = end;
        while start > 0
            && end - start < 8
            && (b[start - 1].is_ascii_uppercase() || b[start - 1].is_ascii_digit())
        {
            start -= 1;
        }
        let group = &b[start..end];
        if group.is_empty() || (start > 0 && b[start - 1].is_ascii_alphanumeric()) {
            return false;
        }
        if group.iter().any(u8::is_ascii_digit) && group.iter().any(u8::is_ascii_uppercase) {
            return true;
        }
        k = start;
    }
    false
}

/// `2024-07-17` at the start of `b`.
fn is_iso_date(b: &[u8]) -> bool {
    b.len() >= 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&k| b[k].is_ascii_digit())
        && !b.get(10).is_some_and(u8::is_ascii_digit)
}

/// The end of the digit groups at `i` (split by single separators of any
/// kind) and how many digits they hold, counting at most 64.
fn grouped_run(b: &[u8], i: usize) -> (usize, usize) {
    let mut n = 0;
    let mut p = i;
    loop {
        let ge = digits_end(b, p);
        n += ge - p;
        match sep_at(b, ge) {
            Some((_, l)) if n < 64 && b.get(ge + l).is_some_and(u8::is_ascii_digit) => p = ge + l,
            _ => return (ge, n),
        }
    }
}

/// Whether the issuer prefix allows this length.
fn card_brand_ok(d: &[u8]) -> bool {
    let n = d.len();
    let prefix = |k: usize| d[..k].iter().fold(0u32, |acc, &x| acc * 10 + u32::from(x));
    let (p2, p3, p4) = (prefix(2), prefix(3), prefix(4));
    match d[0] {
        // Visa.
        4 => matches!(n, 13 | 16 | 19),
        // Mastercard 2-series.
        2 => (2221..=2720).contains(&p4) && n == 16,
        // Mastercard; Maestro 50, 56–58.
        5 => ((51..=55).contains(&p2) && n == 16) || matches!(p2, 50 | 56..=58),
        // Amex; JCB; Diners.
        3 => {
            (matches!(p2, 34 | 37) && n == 15)
                || ((3528..=3589).contains(&p4) && n >= 16)
                || (((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39)) && n >= 14)
        }
        // Discover 6011, 644–649, 65; UnionPay 62; Maestro 6x (13–19 here).
        6 => true,
        _ => false,
    }
}

// ----- SSN ------------------------------------------------------------------

const SSN_WORDS: &[&[u8]] = &[b"ssn", b"social security", b"soc sec", b"soc. sec", b"ss#"];

/// `AAA-GG-SSSS` (dash, space, dot or zero-width separators, the same
/// twice), or nine bare digits after an SSN context word; the area, group
/// and serial must be ones the SSA assigns.
fn ssn(b: &[u8], i: usize) -> Option<usize> {
    let run = digits_end(b, i);
    if run - i == 9 {
        let ok = ends_cleanly(b, run)
            && ssn_valid(&b[i..i + 3], &b[i + 3..i + 5], &b[i + 5..run])
            && context_before(b, i, 24, SSN_WORDS);
        return ok.then_some(run);
    }
    if run - i != 3 {
        return None;
    }
    let (kind, l) = sep_at(b, run)?;
    let g = run + l;
    let ge = digits_end(b, g);
    if ge - g != 2 {
        return None;
    }
    let (kind2, l2) = sep_at(b, ge)?;
    let s = ge + l2;
    let se = digits_end(b, s);
    let ok = kind2 == kind
        && se - s == 4
        && ends_cleanly(b, se)
        && ssn_valid(&b[i..run], &b[g..ge], &b[s..se]);
    ok.then_some(se)
}

fn ssn_valid(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000"
}

// ----- IBAN -----------------------------------------------------------------

/// An IBAN at `s` (its country code): the country's length, uppercase
/// letters and digits optionally grouped by single spaces, and mod-97.
fn iban(b: &[u8], s: usize) -> Option<usize> {
    let len = iban_len([b[s], b[s + 1]])?;
    let mut buf = [0u8; 34];
    let mut n = 0;
    let mut p = s;
    while n < len {
        let &c = b.get(p)?;
        if c.is_ascii_digit() || (c.is_ascii_uppercase() && !(2..4).contains(&n)) {
            buf[n] = c;
            n += 1;
            p += 1;
        } else if c == b' ' && n >= 4 && b[p - 1] != b' ' {
            p += 1;
        } else {
            return None;
        }
    }
    if b.get(p).is_some_and(|&c| is_word(c)) {
        return None;
    }
    let ascii = std::str::from_utf8(&buf[..n]).ok()?;
    validate::iban_mod97(ascii).then_some(p)
}

/// IBAN lengths from the SWIFT IBAN registry.
fn iban_len(cc: [u8; 2]) -> Option<usize> {
    Some(match &cc {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" | b"SD" | b"FK" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" | b"MN" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"OM" | b"SO" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"LY" | b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"BI" | b"DJ" | b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"NI" | b"PL" | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" | b"YE" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        b"RU" => 33,
        _ => return None,
    })
}

// ----- phone ----------------------------------------------------------------

const PHONE_WORDS: &[&[u8]] = &[
    b"phone",
    b"tel",
    b"mobile",
    b"cell",
    b"fax",
    b"sms",
    b"whatsapp",
    b"call",
];

/// Words after which a phone-shaped number is a reference, not a phone.
const NOT_PHONE_WORDS: &[&[u8]] = &[
    b"order",
    b"invoice",
    b"ticket",
    b"tracking",
    b"ref",
    b"case",
    b"account",
];

/// Up to eight digit groups from `i`, separated by one to three of
/// ` -.()` (`(415) 555-0132`, `+1 (800) 555 0199`).
struct Groups {
    n: usize,
    start: [usize; 8],
    end: [usize; 8],
}

impl Groups {
    fn parse(b: &[u8], i: usize) -> Groups {
        let mut g = Groups {
            n: 0,
            start: [0; 8],
            end: [0; 8],
        };
        let mut p = i;
        while g.n < 8 {
            let e = digits_end(b, p);
            g.start[g.n] = p;
            g.end[g.n] = e;
            g.n += 1;
            let q = run_end(b, e, 3, |c| matches!(c, b' ' | b'-' | b'.' | b'(' | b')'));
            if q == e || !b.get(q).is_some_and(u8::is_ascii_digit) {
                break;
            }
            p = q;
        }
        g
    }

    fn len(&self, k: usize) -> usize {
        self.end[k] - self.start[k]
    }

    /// The separator after group `k`.
    fn sep<'b>(&self, b: &'b [u8], k: usize) -> &'b [u8] {
        &b[self.end[k]..self.start[k + 1]]
    }

    /// Digits in the first `k` groups.
    fn digits(&self, k: usize) -> usize {
        (0..k).map(|j| self.len(j)).sum()
    }

    /// `2026-11-24`, `24.11.2026`, a decimal number (`3.14159265`),
    /// dotted parts (`192.168.1.10`, `1.3.6.1.2.1`), or a range of years
    /// (`2017-2022`, `1999 - 2004`).
    fn not_a_phone(&self, b: &[u8]) -> bool {
        let lens = |a: usize, c: usize, d: usize| {
            self.n >= 3 && self.len(0) == a && self.len(1) == c && self.len(2) == d
        };
        let date = (lens(4, 2, 2) || lens(2, 2, 4))
            && self.sep(b, 0) == self.sep(b, 1)
            && matches!(self.sep(b, 0), b"-" | b".");
        let dotted = self.n >= 2 && (0..self.n - 1).all(|k| self.sep(b, k) == b".");
        let year = |k: usize| {
            let digits = &b[self.start[k]..self.end[k]];
            digits.len() == 4 && matches!(digits, [b'1', b'9', ..] | [b'2', b'0', ..])
        };
        let years = self.n >= 2
            && (0..self.n).all(year)
            && (0..self.n - 1).all(|k| {
                let (this, next) = (
                    self.start[k]..self.end[k],
                    self.start[k + 1]..self.end[k + 1],
                );
                self.sep(b, k).contains(&b'-') && b[this] <= b[next]
            });
        date || years || (dotted && (self.n == 2 || self.n >= 4))
    }
}

/// A phone number around the digit at `i`: E.164 after `+`, a NANP, UK
/// or French national format, or any 7–15 digits after a context word.
/// Returns its range (starting at `+` or `(` when present).
fn phone(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let g = Groups::parse(b, i);
    let all_end = g.end[g.n - 1];
    let total = g.digits(g.n);
    let plus = i >= 1 && b[i - 1] == b'+' && (i < 2 || !b[i - 2].is_ascii_alphanumeric());
    if plus && b[i] == b'0' {
        // No country code starts with 0 (`+000000120` is a format).
        return None;
    }
    if plus {
        let ok = (7..=15).contains(&total) && !g.not_a_phone(b) && ends_cleanly(b, all_end);
        return ok.then_some((i - 1, all_end));
    }
    if let Some((s, k)) = national(b, &g, i) {
        let end = g.end[k - 1];
        // More groups may follow only after a plain space (the next value
        // in a list), not a dash or dot that makes it one longer number.
        let continues = k < g.n && g.sep(b, k - 1) != b" ";
        if !continues && ends_cleanly(b, end) && !reference_before(b, s) {
            return Some((s, end));
        }
    }
    let context = (7..=15).contains(&total)
        && !g.not_a_phone(b)
        && ends_cleanly(b, all_end)
        && context_before(b, i, 24, PHONE_WORDS);
    context.then_some((i, all_end))
}

/// The national formats: which groups form the number, and where it
/// starts (at the `(` of `(415) 555-0132`).
fn national(b: &[u8], g: &Groups, i: usize) -> Option<(usize, usize)> {
    let lens =
        |want: &[usize]| g.n >= want.len() && want.iter().enumerate().all(|(k, &l)| g.len(k) == l);
    let first = |k: usize| b[g.start[k]];
    let paren = i > 0 && b[i - 1] == b'(';
    let plain = |s: &[u8]| matches!(s, b"-" | b"." | b" ");
    // NANP (415) 555-0132, 415-555-0132, 415.555.0132, 415 555 0132.
    if lens(&[3, 3, 4]) && first(0) >= b'2' && first(1) >= b'2' {
        let (s0, s1) = (g.sep(b, 0), g.sep(b, 1));
        if paren && matches!(s0, b")" | b") ") && plain(s1) {
            return Some((i - 1, 3));
        }
        if !paren && s0 == s1 && plain(s0) {
            return Some((i, 3));
        }
    }
    // NANP with the country code: 1-800-555-0199, 1 (800) 555-0199.
    if lens(&[1, 3, 3, 4]) && b[i] == b'1' && first(1) >= b'2' && first(2) >= b'2' {
        let (s0, s1, s2) = (g.sep(b, 0), g.sep(b, 1), g.sep(b, 2));
        if (s0 == s1 && s1 == s2 && plain(s0))
            || (matches!(s0, b" (" | b"(") && matches!(s1, b")" | b") ") && plain(s2))
        {
            return Some((i, 4));
        }
    }
    let trunk = b[i] == b'0' && b.get(i + 1).is_some_and(|&c| (b'1'..=b'9').contains(&c));
    // UK: 020 7946 0958, 0161 496 0000, 07700 900123, 07700 900 123.
    if trunk {
        for want in [&[3, 4, 4][..], &[4, 3, 4], &[5, 3, 3], &[5, 6]] {
            if lens(want) && (0..want.len() - 1).all(|k| g.sep(b, k) == b" ") {
                return Some((i, want.len()));
            }
        }
    }
    // France: 01 23 45 67 89, 06.12.34.56.78.
    if trunk && lens(&[2, 2, 2, 2, 2]) {
        let s0 = g.sep(b, 0);
        if plain(s0) && (1..4).all(|k| g.sep(b, k) == s0) {
            return Some((i, 5));
        }
    }
    None
}

/// `Order #415-555-0132`, `invoice 0161 496 0000`: a reference number.
fn reference_before(b: &[u8], s: usize) -> bool {
    let mut k = s;
    if k > 0 && b[k - 1] == b' ' {
        k -= 1;
    }
    (k > 0 && b[k - 1] == b'#')
        || (context_before(b, s, 20, NOT_PHONE_WORDS) && !context_before(b, s, 24, PHONE_WORDS))
}

// ----- IP addresses ---------------------------------------------------------

/// A dotted quad at `i`: four 0–255 parts without leading zeros, not part
/// of a longer dotted run, not after `v`/`ver`/`version` or `section`/`§`,
/// and not a numbered heading (`8.2.4.45 Markup declaration`) where
/// nothing before it speaks of a network.
fn ipv4(b: &[u8], i: usize) -> Option<usize> {
    let mut p = i;
    for k in 0..4 {
        let e = digits_end(b, p);
        let part = &b[p..e];
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        if part
            .iter()
            .fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0'))
            > 255
        {
            return None;
        }
        p = e;
        if k < 3 {
            if b.get(p) != Some(&b'.') {
                return None;
            }
            p += 1;
        }
    }
    // `2.1.3.4-beta` is a version.
    let prerelease = b.get(p) == Some(&b'-') && b.get(p + 1).is_some_and(u8::is_ascii_alphabetic);
    let heading = b.get(p) == Some(&b' ')
        && b.get(p + 1).is_some_and(u8::is_ascii_uppercase)
        && b.get(p + 2).is_some_and(u8::is_ascii_lowercase)
        && !context_before(b, i, 40, NETWORK_WORDS);
    (ends_cleanly(b, p) && !prerelease && !heading && !version_before(b, i)).then_some(p)
}

/// Words after which a dotted quad is a section number (`section
/// 8.2.4.44`, `§ 7.1.1.1`).
const SECTION_WORDS: &[&[u8]] = &[
    b"section",
    b"sections",
    b"sec.",
    b"sec",
    b"\xc2\xa7",
    b"chapter",
    b"chapters",
    b"clause",
    b"paragraph",
    b"para",
    b"appendix",
    b"annex",
    b"rfc",
    b"figure",
    b"fig.",
    b"table",
    b"step",
    b"item",
    b"article",
];

/// Words (starts of words) that put a dotted quad in a network context.
const NETWORK_WORDS: &[&[u8]] = &[
    b"ip",
    b"addr",
    b"host",
    b"client",
    b"server",
    b"peer",
    b"remote",
    b"local",
    b"src",
    b"dst",
    b"dest",
    b"gateway",
    b"dns",
    b"nameserver",
    b"from",
    b"via",
    b"connect",
    b"listen",
    b"bind",
    b"port",
    b"inet",
    b"route",
    b"subnet",
    b"netmask",
    b"ping",
    b"proxy",
    b"upstream",
    b"node",
    b"lease",
    b"dhcp",
];

/// Words after which a dotted quad is a version (`firmware 7.8.8.141`).
const VERSION_WORDS: &[&[u8]] = &[
    b"version",
    b"ver.",
    b"ver",
    b"v",
    b"firmware",
    b"fw",
    b"build",
    b"release",
    b"kernel",
    b"revision",
    b"rev",
    b"tag",
];

/// Whether a version or section word ([`VERSION_WORDS`], [`SECTION_WORDS`])
/// or an image name (`acme/api:`) comes right before `i`.
fn version_before(b: &[u8], i: usize) -> bool {
    let mut k = i;
    // Back over `":= ` and the `_` of `__version__ = "`.
    while k > 0 && i - k < 6 && matches!(b[k - 1], b' ' | b':' | b'=' | b'"' | b'\'' | b'_') {
        k -= 1;
    }
    // Compared only when the last byte matches (most IPs follow `ip=`).
    let last = if k > 0 {
        b[k - 1].to_ascii_lowercase()
    } else {
        0
    };
    let ends_with = |w: &&[u8]| {
        w[w.len() - 1] == last
            && k >= w.len()
            && b[k - w.len()..k].eq_ignore_ascii_case(w)
            && (k == w.len() || !b[k - w.len() - 1].is_ascii_alphabetic())
    };
    let word = VERSION_WORDS.iter().any(ends_with) || SECTION_WORDS.iter().any(ends_with);
    // An image tag: `acme/api:8.14.14.1`.
    let tag = i > 0 && b[i - 1] == b':' && {
        let from = i
            - 1
            - (0..(i - 1).min(64))
                .take_while(|&d| {
                    let c = b[i - 2 - d];
                    c.is_ascii_alphanumeric() || matches!(c, b'/' | b'.' | b'-' | b'_')
                })
                .count();
        b[from..i - 1].contains(&b'/')
    };
    word || tag
}

/// Whether the `:` at `p` is in a time of day (`10:02`, `10:02:52`,
/// `+06:00`): two digits on each side and at most three groups. Such a
/// run is never an IPv6 address (too few groups, no `::`), and times are
/// the most common colons after a digit, so this spares [`ipv6_at`].
fn clock_time(b: &[u8], p: usize) -> bool {
    let digit = |k: usize| b.get(k).is_some_and(u8::is_ascii_digit);
    let ends = |k: usize| {
        !b.get(k)
            .is_some_and(|&c| c.is_ascii_hexdigit() || c == b':')
    };
    p >= 2
        && digit(p - 2)
        && digit(p - 1)
        && (p == 2 || !(b[p - 3].is_ascii_hexdigit() || b[p - 3] == b':'))
        && digit(p + 1)
        && digit(p + 2)
        && (ends(p + 3) || (b[p + 3] == b':' && digit(p + 4) && digit(p + 5) && ends(p + 6)))
}

/// Whether another `:` follows the one at `p` after at most four hex
/// digits. [`ipv6_at`] only finds an address at its first colon (a colon
/// after another is turned away by its left boundary), and an address
/// has two or more colons with at most four hex digits between: without
/// this, `code: 200` and `d:` would each be read as far as they go.
#[inline]
fn colon_follows(b: &[u8], p: usize) -> bool {
    let after = &b[p + 1..b.len().min(p + 6)];
    after
        .iter()
        .position(|&c| !c.is_ascii_hexdigit())
        .is_some_and(|k| after[k] == b':')
}

/// An IPv6 address around the `:` at `p`: the hex digits and colons (and
/// dots of an embedded IPv4 address) that `Ipv6Addr` parses. At least four
/// hex digits, or a leading `::`, so `a::b` in code is not an address.
fn ipv6_at(text: &str, p: usize) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let mut s = p;
    while s > 0 && p - s < 4 && b[s - 1].is_ascii_hexdigit() {
        s -= 1;
    }
    if s > 0 && (is_word(b[s - 1]) || matches!(b[s - 1], b':' | b'.' | b'-')) {
        return None;
    }
    if s == p && b.get(p + 1) != Some(&b':') {
        return None;
    }
    // One pass over the candidate: its end, its colons, and whether it
    // has a `::`. An address has eight groups (six before an embedded IPv4
    // address), or fewer around a `::`; `12:30:45` is neither.
    let limit = b.len().min(s + 45);
    let (mut e, mut colons, mut double) = (s, 0, false);
    while e < limit && (b[e].is_ascii_hexdigit() || b[e] == b':' || b[e] == b'.') {
        if b[e] == b':' {
            colons += 1;
            double |= e > s && b[e - 1] == b':';
        }
        e += 1;
    }
    if b.get(e).is_some_and(|&c| is_word(c)) || colons < 2 || (colons < 6 && !double) {
        return None;
    }
    loop {
        let cand = &text[s..e];
        let short = colons < 7 && !double && !(colons == 6 && cand.contains('.'));
        if short {
            return None;
        }
        if Ipv6Addr::from_str(cand).is_ok() {
            let hex = cand.bytes().filter(u8::is_ascii_hexdigit).count();
            let ok = hex >= 4 || (cand.starts_with("::") && hex >= 1);
            return ok.then_some((s, e));
        }
        // A sentence may end right after the address.
        if cand.ends_with('.') {
            e -= 1;
        } else if cand.ends_with(':') && !cand.ends_with("::") {
            e -= 1;
            colons -= 1;
        } else {
            return None;
        }
    }
}

// ----- email ----------------------------------------------------------------

/// The end of a domain at `s`: dot-separated labels of letters, digits
/// and inner hyphens, at least two, the last (TLD) two or more letters.
fn domain_end(b: &[u8], s: usize) -> Option<usize> {
    let mut p = s;
    let mut labels = 0;
    let mut best = None;
    while p - s <= 253 {
        let e = run_end(b, p, 64, |c| c.is_ascii_alphanumeric() || c == b'-');
        let label = &b[p..e];
        if label.is_empty()
            || label.len() > 63
            || label[0] == b'-'
            || label[label.len() - 1] == b'-'
        {
            break;
        }
        labels += 1;
        if labels >= 2 && label.len() >= 2 && label.iter().all(u8::is_ascii_alphabetic) {
            best = Some(e);
        }
        if b.get(e) == Some(&b'.') && b.get(e + 1).is_some_and(u8::is_ascii_alphanumeric) {
            p = e + 1;
        } else {
            break;
        }
    }
    let e = best?;
    if b.get(e).is_some_and(|&c| is_word(c) || c == b'-') {
        return None;
    }
    // `logo@2x.png`: an image at a pixel density, not an address.
    let first = &b[s..run_end(b, s, 64, |c| c.is_ascii_alphanumeric())];
    let density = first.len() >= 2
        && first[first.len() - 1] == b'x'
        && first[..first.len() - 1].iter().all(u8::is_ascii_digit);
    let tld = &b[b[s..e]
        .iter()
        .rposition(|&c| c == b'.')
        .map_or(s, |d| s + d + 1)..e];
    let file = FILE_EXTENSIONS.iter().any(|x| tld.eq_ignore_ascii_case(x));
    (!density && !file).then_some(e)
}

/// File extensions that are no top-level domain: `name@host.png` is a file.
const FILE_EXTENSIONS: &[&[u8]] = &[
    b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"ico", b"bmp", b"tiff", b"pdf", b"js",
    b"mjs", b"ts", b"css", b"html", b"htm", b"json", b"yaml", b"yml", b"toml", b"txt", b"csv",
    b"log", b"lock", b"gz", b"tgz", b"whl", b"jar", b"exe", b"dll",
];

// ----- key-value secrets ----------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    /// Any non-empty value is a password.
    Password,
    /// Only a key-like value counts (`token: expired` is prose).
    Key,
    /// `Authorization: Bearer …`: the credential after the scheme.
    Authorization,
}

/// Names whose values are secrets, lowercase, without the `_`/`-` that may
/// separate their words (`api_key`, `API-KEY`, `apiKey` are all `apikey`),
/// by their last letter. A name matches if it ends with one
/// (`client_secret`, `aws_secret_access_key`, `refresh_token`, `X-Api-Key`,
/// `userPassword`).
fn secret_names_ending_in(last: u8) -> &'static [(&'static [u8], NameKind)] {
    use NameKind::{Authorization, Key, Password};
    match last | 0x20 {
        b'd' => &[
            (b"password", Password),
            (b"passwd", Password),
            (b"pwd", Password),
        ],
        b'e' => &[(b"passphrase", Password)],
        b't' => &[(b"secret", Key)],
        b'n' => &[(b"token", Key), (b"authorization", Authorization)],
        b'y' => &[
            (b"apikey", Key),
            (b"accesskey", Key),
            (b"secretkey", Key),
            (b"privatekey", Key),
        ],
        _ => &[],
    }
}

/// Which secret name ends at `end`, if any. The name must start a word:
/// after a non-alphanumeric byte or at a camelCase hump.
#[inline]
fn secret_name(b: &[u8], end: usize) -> Option<NameKind> {
    // Runs for most JSON keys: the last two letters turn nearly all of
    // them away, for every name at once, through two tables.
    if end < 2
        || NAME_LAST[usize::from(b[end - 1])] & NAME_SECOND_LAST[usize::from(b[end - 2])] == 0
    {
        return None;
    }
    secret_names_ending_in(b[end - 1])
        .iter()
        .find_map(|&(word, kind)| {
            let mut k = end;
            let mut j = word.len();
            while j > 0 {
                let c = *b.get(k.wrapping_sub(1))?;
                if c.to_ascii_lowercase() == word[j - 1] {
                    j -= 1;
                    k -= 1;
                } else if matches!(c, b'_' | b'-') && j < word.len() && k >= 2 && b[k - 2] != c {
                    k -= 1;
                } else {
                    return None;
                }
            }
            let boundary = k == 0
                || !b[k - 1].is_ascii_alphanumeric()
                || (b[k - 1].is_ascii_lowercase() && b[k].is_ascii_uppercase());
            boundary.then_some(kind)
        })
}

/// Every name of [`secret_names_ending_in`] (checked by a test).
const SECRET_NAMES: [&[u8]; 11] = [
    b"password",
    b"passwd",
    b"pwd",
    b"passphrase",
    b"secret",
    b"token",
    b"authorization",
    b"apikey",
    b"accesskey",
    b"secretkey",
    b"privatekey",
];

/// Per byte, the secret names (bit `k` for `SECRET_NAMES[k]`) that end in
/// it, in either case.
const NAME_LAST: [u16; 256] = name_letter_table(1);

/// Per byte, the secret names whose second-last letter it is, in either
/// case; every name for `_` and `-`, which may separate a name's words.
const NAME_SECOND_LAST: [u16; 256] = {
    let mut t = name_letter_table(2);
    t[b'_' as usize] = u16::MAX;
    t[b'-' as usize] = u16::MAX;
    t
};

const fn name_letter_table(from_end: usize) -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut k = 0;
    while k < SECRET_NAMES.len() {
        let name = SECRET_NAMES[k];
        let c = name[name.len() - from_end];
        t[c as usize] |= 1 << k;
        t[c.to_ascii_uppercase() as usize] |= 1 << k;
        k += 1;
    }
    t
}

/// At most this many bytes of a value are masked as one secret.
const MAX_VALUE: usize = 4096;

/// The value at `v`: a quoted string (also `\"…\"` inside JSON text) or an
/// unquoted run. Returns its range and whether it was quoted. A quote that
/// is never closed masks to the end of the line (fail safe).
fn value_at(b: &[u8], v: usize) -> Option<(usize, usize, bool)> {
    let &c = b.get(v)?;
    let escaped = c == b'\\' && b.get(v + 1) == Some(&b'"');
    if !(escaped || matches!(c, b'"' | b'\'' | b'`')) {
        let ve = unquoted_end(b, v);
        return (ve > v).then_some((v, ve, false));
    }
    let (q, vs) = if escaped { (b'"', v + 2) } else { (c, v + 1) };
    let limit = b.len().min(vs + MAX_VALUE);
    let mut e = vs;
    while e < limit {
        let Some(k) = memchr::memchr3(q, b'\\', b'\n', &b[e..limit]) else {
            break;
        };
        let at = e + k;
        match b[at] {
            b'\\' if escaped && b.get(at + 1) == Some(&q) => return Some((vs, at, true)),
            b'\\' => e = at + 2,
            b'\n' => break,
            _ if !escaped => return Some((vs, at, true)),
            _ => e = at + 1,
        }
    }
    let e = memchr::memchr(b'\n', &b[vs..limit]).map_or(limit, |n| vs + n);
    Some((vs, floor_boundary(b, e), true))
}

/// An unquoted value ends at a blank, a list or statement separator, a
/// quote or a closing bracket.
fn unquoted_end(b: &[u8], v: usize) -> usize {
    floor_boundary(b, table_end(b, v, MAX_VALUE, &UNQUOTED_VALUE_BYTES))
}

const UNQUOTED_VALUE_BYTES: [bool; 256] = {
    let mut t = [true; 256];
    let stops = b" \t\n\r\x0b\x0c,;&\"'`}])<>";
    let mut k = 0;
    while k < stops.len() {
        t[stops[k] as usize] = false;
        k += 1;
    }
    t
};

/// Values that stand for a secret without being one: `null`, `***`,
/// `<redacted>`, `[MASKED:secret]`, `${DB_PASSWORD}`, `{{ token }}`, ...
fn is_placeholder(v: &str) -> bool {
    const WORDS: &[&str] = &[
        "null",
        "none",
        "nil",
        "undefined",
        "true",
        "false",
        "empty",
        "redacted",
        "hidden",
        "masked",
        "n/a",
        "secret",
        "password",
        "string",
        "<string>",
        "%s",
        "%r",
        "%d",
    ];
    let t = v.trim();
    let wrapped = |open: &str, close: &str| t.starts_with(open) && t.ends_with(close);
    let env = t.strip_prefix('$').is_some_and(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
    });
    t.is_empty()
        || WORDS.iter().any(|w| t.eq_ignore_ascii_case(w))
        || t.chars().all(|c| matches!(c, '*' | '•' | '●' | '.' | '-' | '_' | '#'))
        || (t.len() >= 3 && t.bytes().all(|c| c == b'x' || c == b'X'))
        || wrapped("<", ">")
        || (t.starts_with('[')
            && t[1..]
                .trim_end_matches(']')
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b':' | b'_' | b'-' | b' ')))
        // Templates and references (an unquoted value stops at the blank
        // or bracket inside them, so only their start is certain).
        || ["${", "{{", "{%", "%(", "env:", "vault:", "secret:", "ref+", "arn:aws:secretsmanager"]
            .iter()
            .any(|p| t.starts_with(p))
        || (t.len() >= 8
            && t.bytes().all(|c| c.is_ascii_uppercase() || c == b'_')
            && ["YOUR", "HERE", "CHANGE", "PLACEHOLDER", "EXAMPLE"]
                .iter()
                .any(|w| t.contains(w)))
        || env
        || ["process.env", "os.environ", "os.getenv", "env(", "getenv("]
            .iter()
            .any(|p| t.starts_with(p))
}

/// Whether the unquoted value `b[vs..ve]` after a secret's name (the
/// identifier `name`) is code, not a literal: a call or an index
/// (`os.getcwd()`, `f(x, y)`, `tokens[0]`), a parenthesised expression,
/// an attribute (`self.token`, `Name.Function`), an operand (`passwd +
/// x`), a type (`password: str = …`, `token: bytes,`), a variable
/// (`$parser->`, `self._pwd = pwd`, `password = url_user_password`). A
/// secret written in code is a string literal, which is quoted; the
/// unquoted values of config files (`PASSWORD=hunter2`, `api_key:
/// 8f3a…`) have none of these shapes. Dotted words are taken for an
/// attribute only when the first is lowercase letters (`self`, `os`,
/// `config`) or all are capitalised words, so a password such as
/// `Hunter2.x` or a key such as `TuwsjBTyJr.HMfbtFdDAU` stays one.
fn is_code(b: &[u8], vs: usize, ve: usize, name: &[u8]) -> bool {
    let v = &b[vs..ve];
    // Code is short; long values (a JWT after `token=`) are not read.
    if v.len() > 128 {
        return false;
    }
    if matches!(v, [b'(' | b'[', ..] | b"{") {
        return true;
    }
    // `$password`, `$parser->get`: a shell, Perl or PHP variable.
    if let [b'$', rest @ ..] = v {
        let ident = rest
            .iter()
            .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'_')
            .count();
        let after = rest.get(ident).copied().or(b.get(ve).copied());
        return ident > 0
            && rest[0].is_ascii_lowercase()
            && (ident == rest.len() || after == Some(b'-'));
    }
    // A dotted path of identifiers, maybe called or indexed: one pass
    // that stops at the first byte that cannot be in one.
    let mut path_end = v.len();
    let mut receiver_end = v.len();
    let mut segment_start = true;
    for (n, &c) in v.iter().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => segment_start = false,
            b'0'..=b'9' | b'.' | b'(' | b'[' if segment_start => return false,
            b'0'..=b'9' => {}
            b'.' => {
                segment_start = true;
                receiver_end = receiver_end.min(n);
            }
            b'(' | b'[' => {
                path_end = n;
                break;
            }
            _ => return false,
        }
    }
    if segment_start {
        return false;
    }
    // The value stops at a closing bracket, a quote or a comma: `f()`,
    // `f(x)`, `a[0]`, `f("x")`, `f(x, y)` (not `pa55(word`).
    let called = path_end < v.len()
        && (matches!(v.last(), Some(b'(' | b'['))
            || matches!(b.get(ve), Some(b')' | b']' | b',' | b'"' | b'\'')));
    let same_as_name = v.len() >= 3
        && name.len() >= v.len()
        && name[name.len() - v.len()..].eq_ignore_ascii_case(v);
    // `Name.Builtin.Pseudo`: capitalised words (a key such as
    // `TuwsjBTyJr.HMfbtFdDAU` has capitals inside its parts).
    let capitalised = |w: &[u8]| {
        w.len() >= 2 && w[0].is_ascii_uppercase() && w[1..].iter().all(u8::is_ascii_lowercase)
    };
    let attribute = receiver_end < path_end
        && (v[..receiver_end]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c == b'_')
            || v[..path_end].split(|&c| c == b'.').all(capitalised));
    // A type (`token: bytes,`), or a snake_case variable named for a
    // secret (`password_mgr`).
    let next = b.get(ve).copied().unwrap_or(b'\n');
    let type_name = matches!(next, b',' | b')' | b'=' | b'\n' | b'\r')
        && matches!(
            v,
            b"str" | b"bytes" | b"bytearray" | b"int" | b"bool" | b"float" | b"object" | b"Any"
        );
    let snake_case = v
        .iter()
        .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    let variable = snake_case
        && v.contains(&b'_')
        && v.split(|&c| c == b'_').any(|w| SECRET_NAMES.contains(&w));
    // What follows the blank that ended the value: an operator, or the
    // `=` after a type annotation.
    let mut k = ve;
    while k < b.len() && k - ve < 4 && matches!(b[k], b' ' | b'\t') {
        k += 1;
    }
    let after = |d: usize| b.get(k + d).copied().unwrap_or(b'\n');
    let operator = k > ve
        && matches!(
            after(0),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'|' | b'&' | b'^' | b'='
        )
        && matches!(after(1), b' ' | b'\t' | b'=')
        && !(after(0) == b'=' && after(1) == b'=');
    called || attribute || operator || same_as_name || type_name || variable
}

/// Whether a value looks like a key rather than a word: eight or more
/// bytes, no blanks, and not just letters of one case (`expired`,
/// `REDACTED`, `Bearer`, `my-secret-name`) unless it is a passphrase of
/// four or more dashed words.
fn is_key_like(v: &str) -> bool {
    let b = v.as_bytes();
    // Values can be long (a JWT after `token=`): find blanks with memchr.
    let blank = memchr::memchr3(b' ', b'\t', b'\n', b).is_some()
        || memchr::memchr2(b'\r', b'\x0c', b).is_some();
    if v.len() < 8 || blank {
        return false;
    }
    let core = || {
        v.bytes()
            .filter(|c| !matches!(c, b'-' | b'_' | b'.' | b'/' | b':'))
    };
    let lower = core().all(|c| c.is_ascii_lowercase());
    let upper = core().all(|c| c.is_ascii_uppercase());
    let capitalised = {
        let mut it = core();
        it.next().is_some_and(|c| c.is_ascii_uppercase()) && it.all(|c| c.is_ascii_lowercase())
    };
    // Four or more words in a row (`correct-horse-battery-staple`) are a
    // generated passphrase; three are a name (`my-secret-name`).
    let passphrase = lower && v.len() >= 16 && v.bytes().filter(|&c| c == b'-').count() >= 3;
    core().next().is_some() && (passphrase || (!lower && !upper && !capitalised))
}

// ----- JWT ------------------------------------------------------------------

/// base64url as JWTs use it: no padding (accepted if present), and lenient
/// about the unused bits of the last character.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A JOSE header: only whether `alg` is there matters.
#[derive(serde::Deserialize)]
struct JwtHeader {
    #[serde(rename = "alg")]
    _alg: serde::de::IgnoredAny,
}

fn json_object_start(json: &[u8]) -> bool {
    json.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{')
}

/// The header segment decodes to a JSON object with `alg`.
fn jwt_header_ok(seg: &[u8]) -> bool {
    with_decoded(seg, |json| {
        json_object_start(json) && serde_json::from_slice::<JwtHeader>(json).is_ok()
    })
}

/// The payload segment decodes to a JSON object.
fn jwt_payload_ok(seg: &[u8]) -> bool {
    with_decoded(seg, |json| {
        json_object_start(json) && serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok()
    })
}

/// Decodes base64url `seg` and runs `check` on the bytes (false if it does
/// not decode). Small segments decode on the stack, in a buffer sized to
/// them (zeroing a big one for every header costs more than decoding
/// it); only a payload over 4096 characters, rare, allocates.
fn with_decoded(seg: &[u8], check: impl Fn(&[u8]) -> bool) -> bool {
    fn on_stack<const N: usize>(seg: &[u8], check: impl Fn(&[u8]) -> bool) -> bool {
        let mut buf = [0u8; N];
        B64URL
            .decode_slice(seg, &mut buf)
            .is_ok_and(|n| check(&buf[..n]))
    }
    match seg.len() {
        0..=256 => on_stack::<192>(seg, check),
        257..=1024 => on_stack::<768>(seg, check),
        1025..=4096 => on_stack::<3072>(seg, check),
        _ => B64URL.decode(seg).is_ok_and(|json| check(&json)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans with the given detectors and checks the output contract:
    /// sorted, disjoint, non-empty ranges on char boundaries.
    fn scan_with(detectors: &[Detector], text: &str) -> Vec<(Detector, String)> {
        let mut out = Vec::new();
        Scanner::new(detectors.iter().copied()).scan(text, &mut out);
        for w in out.windows(2) {
            assert!(
                w[0].end <= w[1].start,
                "overlap or disorder in {out:?} for {text:?}"
            );
        }
        for f in &out {
            assert!(f.start < f.end && f.end <= text.len(), "{f:?}");
            assert!(
                text.is_char_boundary(f.start) && text.is_char_boundary(f.end),
                "{f:?}"
            );
        }
        out.iter()
            .map(|f| (f.detector, text[f.start..f.end].to_owned()))
            .collect()
    }

    /// Every built-in detector on.
    fn scan_all(text: &str) -> Vec<(Detector, String)> {
        scan_with(&Detector::ALL, text)
    }

    /// The values one detector reports (all detectors on, so overlap
    /// resolution is part of what is tested).
    fn found(d: Detector, text: &str) -> Vec<String> {
        scan_all(text)
            .into_iter()
            .filter(|(x, _)| *x == d)
            .map(|(_, v)| v)
            .collect()
    }

    fn one(d: Detector, text: &str, want: &str) {
        assert_eq!(scan_all(text), vec![(d, want.to_owned())], "in {text:?}");
    }

    fn none(d: Detector, text: &str) {
        assert_eq!(found(d, text), Vec::<String>::new(), "in {text:?}");
    }

    // ----- API ------------------------------------------------------------

    #[test]
    fn names_round_trip_and_defaults() {
        for d in Detector::ALL {
            assert_eq!(Detector::from_name(d.name()), Some(d));
        }
        assert_eq!(Detector::from_name("nope"), None);
        assert!(!Detector::Ipv4.default_on() && !Detector::Person.default_on());
        assert!(Detector::Card.default_on() && Detector::Secret.default_on());
        // Bits are distinct: the enabled mask relies on it.
        let bits = Detector::ALL.iter().fold(0, |acc, d| acc | d.bit());
        assert_eq!(bits.count_ones() as usize, Detector::ALL.len());
    }

    #[test]
    fn only_enabled_detectors_report() {
        let text = "card 4111 1111 1111 1111, mail a@example.com, ip 10.0.0.1";
        assert_eq!(
            scan_with(&[Detector::Email], text),
            vec![(Detector::Email, "a@example.com".to_owned())]
        );
        let defaults: Vec<Detector> = Detector::ALL
            .into_iter()
            .filter(|d| d.default_on())
            .collect();
        let got = scan_with(&defaults, text);
        assert!(got.iter().all(|(d, _)| *d != Detector::Ipv4), "{got:?}");
        assert_eq!(got.len(), 2);
        assert!(scan_with(&[], text).is_empty());
        // With cards off, a card number is not reported as something else.
        assert!(scan_with(&[Detector::Phone, Detector::Ssn], "4111 1111 1111 1111").is_empty());
    }

    #[test]
    fn appends_after_existing_findings() {
        let mut out = vec![Finding {
            start: 0,
            end: 1,
            detector: Detector::Person,
        }];
        Scanner::new(Detector::ALL).scan("x a@example.com", &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].detector, Detector::Person);
        assert_eq!((out[1].start, out[1].end), (2, 15));
    }

    #[test]
    fn empty_and_plain_text_find_nothing() {
        assert!(scan_all("").is_empty());
        assert!(scan_all("The quick brown fox: jumps = over; the lazy dog @ 12:30.").is_empty());
    }

    // ----- card -----------------------------------------------------------

    #[test]
    fn card_brands_and_lengths() {
        for n in [
            "4111111111111111",
            "4012888888881881",
            "4222222222222",
            "5555555555554444",
            "5105105105105100",
            "2221000000000009",
            "378282246310005",
            "371449635398431",
            "6011111111111117",
            "6011000990139424",
            "3530111333300000",
            "3566002020360505",
            "30569309025904",
            "38520000023237",
            "6200000000000005",
            "6759649826438453",
        ] {
            one(Detector::Card, &format!("paid with {n}."), n);
        }
    }

    #[test]
    fn card_rejects_luhn_failures_and_unknown_prefixes() {
        // Luhn fails.
        none(Detector::Card, "4111111111111112");
        none(Detector::Card, "order 5555555555554443 shipped");
        // Luhn passes, but no issuer uses the prefix or length.
        assert!(validate::luhn("1234567812345670"));
        none(Detector::Card, "ref 1234567812345670");
        assert!(validate::luhn("411111111111116"));
        none(Detector::Card, "411111111111116");
        assert!(validate::luhn("3782822463100052"));
        none(Detector::Card, "3782822463100052");
        // Too long: a 20-digit id.
        none(Detector::Card, "41111111111111111113");
        // A millisecond timestamp.
        none(Detector::Card, "ts=1700000000000");
    }

    #[test]
    fn card_split_by_separators() {
        for n in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111.1111.1111.1111",
            "3782 822463 10005",
            "4111\u{a0}1111\u{a0}1111\u{a0}1111",
            "4111\u{200b}1111\u{200b}1111\u{200b}1111",
            "4\u{200c}1\u{200d}1\u{2060}1\u{feff}111111111111",
            "4111\u{200b}\u{200b}1111\u{200b}1111\u{200b}1111",
            "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        ] {
            one(Detector::Card, &format!("card: {n} (exp 12/29)"), n);
        }
        // Evasion mixes separators; one number all the same.
        one(
            Detector::Card,
            "card 4111 1111-1111.1111.",
            "4111 1111-1111.1111",
        );
        one(
            Detector::Card,
            "card 3782.822463-10005",
            "3782.822463-10005",
        );
        // Two separators in a row end the number.
        none(Detector::Card, "4111--1111--1111--1111");
    }

    #[test]
    fn card_boundaries() {
        one(
            Detector::Card,
            "https://shop.example/pay?card=4111111111111111&x=1",
            "4111111111111111",
        );
        none(Detector::Card, "x4111111111111111");
        none(Detector::Card, "4111111111111111x");
        none(Detector::Card, "94111111111111111");
        // A dashed serial that goes on is not a card.
        none(Detector::Card, "SN 4111-1111-1111-1111-2222");
        none(Detector::Card, "id-4111-1111-1111-1111");
        // The number is the whole grouped run: a reference that starts
        // with a valid card number is not a card ...
        none(
            Detector::Card,
            "The invoice ref 4180 7891 8449 3452 876 is wrong",
        );
        none(Detector::Card, "4111 1111 1111 1111 2029");
        // ... nor are its later groups ...
        none(Detector::Card, "ref 1490 7899 4111 1111 1111 1111");
        // ... nor the groups of an IBAN look-alike after a mixed group.
        none(Detector::Card, "ref IT72 A748 4111 1111 1111 1111");
        none(Detector::Card, "the IBAN GB18 DFIT 4111 1111 1111 1111 too");
        one(
            Detector::Card,
            "VISA 4111 1111 1111 1111",
            "4111 1111 1111 1111",
        );
        // An expiry date right after is not part of the number.
        assert_eq!(
            found(Detector::Card, "4111 1111 1111 1111 12/29"),
            ["4111 1111 1111 1111"]
        );
        // As a JSON number.
        one(
            Detector::Card,
            r#"{"pan":4111111111111111}"#,
            "4111111111111111",
        );
    }

    // ----- SSN ------------------------------------------------------------

    #[test]
    fn ssn_with_separators() {
        for s in [
            "123-45-6789",
            "123 45 6789",
            "123.45.6789",
            "123\u{200b}45\u{200b}6789",
            "078-05-1120",
        ] {
            one(Detector::Ssn, &format!("SSN {s}, ok"), s);
        }
    }

    #[test]
    fn ssn_rejects_invalid_ranges_and_shapes() {
        for s in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123-45-67890",
            "1123-45-6789",
            "123-45-6789-1",
            "123-45 6789",
            "123-456-789",
        ] {
            none(Detector::Ssn, s);
        }
    }

    #[test]
    fn bare_ssn_needs_context() {
        one(Detector::Ssn, "SSN: 123456789", "123456789");
        one(
            Detector::Ssn,
            "Social Security number 123456789",
            "123456789",
        );
        one(Detector::Ssn, "soc sec #123456789", "123456789");
        none(Detector::Ssn, "customer id 123456789");
        none(Detector::Ssn, "ssn: 666456789");
        none(Detector::Ssn, "ssn: 1234567890");
    }

    // ----- IBAN -----------------------------------------------------------

    #[test]
    fn iban_valid() {
        for i in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB82 WEST 1234 5698 7654 32",
            "GB29NWBK60161331926819",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "BE68539007547034",
            "NO9386011117947",
            "CH9300762011623852957",
        ] {
            one(Detector::Iban, &format!("IBAN: {i}."), i);
        }
    }

    #[test]
    fn iban_rejects_wrong_check_length_and_country() {
        none(Detector::Iban, "DE89370400440532013001");
        none(Detector::Iban, "DE8937040044053201300");
        none(Detector::Iban, "DE893704004405320130001");
        none(Detector::Iban, "QQ89370400440532013000");
        none(Detector::Iban, "XDE89370400440532013000");
        none(Detector::Iban, "de89370400440532013000");
    }

    // ----- email ----------------------------------------------------------

    #[test]
    fn email_valid() {
        one(
            Detector::Email,
            "mail john.smith+tag@mail.example.co.uk today",
            "john.smith+tag@mail.example.co.uk",
        );
        one(
            Detector::Email,
            "<a_b%c-d@ex-ample.io>",
            "a_b%c-d@ex-ample.io",
        );
        one(
            Detector::Email,
            "mailto:ops@example.com.",
            "ops@example.com",
        );
        one(Detector::Email, ".john@example.com", "john@example.com");
        one(
            Detector::Email,
            "john..smith@example.com",
            "smith@example.com",
        );
    }

    #[test]
    fn email_rejects_bad_syntax() {
        for t in [
            "john.@example.com",
            "@example.com",
            "user@localhost",
            "user@example.c",
            "user@-example.com",
            "user@example-.com",
            "user@example.123",
            "a @ b.com",
            "assets logo@2x.png hero@3x.webp",
            "installed lodash@4.17.21",
            "report@host.pdf",
            "postgres://app@db.internal:5432/app",
        ] {
            none(Detector::Email, t);
        }
    }

    // ----- phone ----------------------------------------------------------

    #[test]
    fn phone_formats() {
        for p in [
            "+1 415-555-0132",
            "+1 (415) 555-0132",
            "+44 20 7946 0958",
            "+14155550132",
            "+49 30 901820",
            "(415) 555-0132",
            "(415)555-0132",
            "415-555-0132",
            "415.555.0132",
            "415 555 0132",
            "1-800-555-0199",
            "1 (800) 555-0199",
            "020 7946 0958",
            "07700 900123",
            "0161 496 0000",
            "01 23 45 67 89",
        ] {
            one(Detector::Phone, &format!("reach me at {p}, thanks"), p);
        }
    }

    #[test]
    fn bare_phone_needs_context() {
        one(Detector::Phone, "Phone: 4155550132", "4155550132");
        one(Detector::Phone, "tel 555-0132", "555-0132");
        one(Detector::Phone, "mobile:07700900123", "07700900123");
        none(Detector::Phone, "id 4155550132");
        none(Detector::Phone, "hotel 4155550132");
    }

    #[test]
    fn phone_rejects_dates_times_versions_and_references() {
        for t in [
            "2026-11-24",
            "on 2026-11-24T10:30:45Z",
            "at 10:30:45",
            "v1.2.3",
            "version 10.15.7",
            "Order #415-555-0132",
            "invoice 415-555-0132",
            "INV-415-555-0132",
            "550e8400-e29b-41d4-a716-446655440000",
            "123-456-7890",
            "415-155-0132",
            "415-555-0132-7",
            "+2026-11-24",
            "+3.14159265",
            "phone 2026-11-24",
            "4111 1111 1111 1111",
            "+4111111111111111",
        ] {
            none(Detector::Phone, t);
        }
    }

    #[test]
    fn phone_rejects_year_ranges() {
        for t in [
            "Copyright 2017-2022 Example Ltd",
            "Copyright (c) 1999-2004, 2007-2012 The Authors",
            "call us 2017 - 2022",
            "phone 1999-2004-2010",
            "tel. +2017-2022",
            "in the form '+000000120'",
        ] {
            none(Detector::Phone, t);
        }
        // Not a range: a number with a context word.
        one(Detector::Phone, "phone 2022-2017", "2022-2017");
        one(Detector::Phone, "tel 5550-1324", "5550-1324");
        one(Detector::Phone, "phone 2017 2022", "2017 2022");
    }

    // ----- IP addresses ---------------------------------------------------

    #[test]
    fn ipv4() {
        one(Detector::Ipv4, "host 192.168.1.10 up", "192.168.1.10");
        one(Detector::Ipv4, "10.0.0.1:8080", "10.0.0.1");
        one(Detector::Ipv4, "0.0.0.0/0", "0.0.0.0");
        one(Detector::Ipv4, "255.255.255.255.", "255.255.255.255");
        for t in [
            "1.2.3.4.5",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "v1.2.3.4",
            "version 1.2.3.4",
            "ver. 1.2.3.4",
            "1.2.3.4a",
            "2.1.3.4-beta",
            "firmware 7.8.8.141",
            "build 6.6.4.233 took 7m",
            "docker run acme/api:8.14.14.1",
            "version=1.2.3.4",
            "__version__ = \"0.5.1.2\"",
            "VERSION_ = 1.2.3.4",
        ] {
            none(Detector::Ipv4, t);
        }
        one(Detector::Ipv4, "inet addr:10.0.0.7", "10.0.0.7");
    }

    #[test]
    fn ipv4_skips_section_numbers_and_headings() {
        for t in [
            r#"the HTML5 specs sections "8.2.4.44 Bogus comment state""#,
            "the HTML 5 spec, section 8.1.2.2, doesn't allow spaces",
            "see § 7.1.1.1 and §7.1.1.2",
            "per RFC 1.2.3.4",
            "Chapter 10.2.3.4",
            r#"and "8.2.4.45 Markup declaration open state""#,
            "8.2.4.45 Markup declaration open state",
        ] {
            none(Detector::Ipv4, t);
        }
        // Real addresses in logs, prose and data stay found.
        for (t, ip) in [
            ("client 10.0.0.7 connected", "10.0.0.7"),
            (
                "Accepted password for root from 10.0.0.7 port 22 ssh2",
                "10.0.0.7",
            ),
            ("Connection from 10.0.0.7 Port 22", "10.0.0.7"),
            (
                r#"10.0.0.7 - - [17/Jul/2024:10:00:00] "GET / HTTP/1.1""#,
                "10.0.0.7",
            ),
            ("host 10.0.0.7 Is down", "10.0.0.7"),
            ("10.0.0.7 is unreachable", "10.0.0.7"),
            ("the server at 192.168.1.10 Returned 500", "192.168.1.10"),
            (r#"{"ip": "10.0.0.7", "section": 4}"#, "10.0.0.7"),
        ] {
            one(Detector::Ipv4, t, ip);
        }
    }

    #[test]
    fn ipv6() {
        for a in [
            "2001:db8::1",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "fe80::1",
            "::1",
            "::ffff:192.0.2.1",
            "0:0:0:0:0:ffff:192.0.2.1",
            "FE80::0202:B3FF:FE1E:8329",
        ] {
            one(Detector::Ipv6, &format!("addr {a} ok"), a);
        }
        one(Detector::Ipv6, "[2001:db8::1]:443", "2001:db8::1");
        one(Detector::Ipv6, "via fe80::1%eth0", "fe80::1");
        one(Detector::Ipv6, "ends with 2001:db8::1.", "2001:db8::1");
        for t in [
            "12:30:45",
            "at 12:30",
            "2026-11-24T10:02:52+06:00",
            "2026-11-24T12:30:45.123Z",
            "use std::net::Ipv6Addr;",
            "a::b",
            "00:1a:2b:3c:4d:5e",
            "::",
            "Foo::bar",
            "1:2:3",
        ] {
            none(Detector::Ipv6, t);
        }
    }

    // ----- tokens ---------------------------------------------------------

    /// Test tokens are assembled at run time, so this file holds no string
    /// that a secret scanner would flag.
    fn rep(s: &str, n: usize) -> String {
        s.repeat(n)
    }

    #[test]
    fn token_formats() {
        let cases = [
            (
                Detector::AwsAccessKey,
                format!("AKIA{}", rep("IOSFODNN7EXAMPLE", 1)),
            ),
            (
                Detector::AwsAccessKey,
                format!("ASIA{}", rep("ABCD2345", 2)),
            ),
            (Detector::GithubToken, format!("ghp_{}", rep("a1B2", 9))),
            (Detector::GithubToken, format!("ghs_{}", rep("Zz09", 9))),
            (
                Detector::GithubToken,
                format!("github_pat_{}", rep("a1_B2", 16) + "xy"),
            ),
            (Detector::GitlabToken, format!("glpat-{}", rep("a1-B_", 4))),
            (Detector::GitlabToken, format!("glrt-{}", rep("x9", 12))),
            (
                Detector::SlackToken,
                format!("xoxb-{}", "1234567890-abcdefghij"),
            ),
            (Detector::SlackToken, format!("xapp-1-{}", rep("A1b2", 5))),
            (
                Detector::SlackToken,
                format!(
                    "https://hooks.slack.com/services/T{}/B{}/{}",
                    rep("0", 8),
                    rep("1", 8),
                    rep("Xy", 12)
                ),
            ),
            (Detector::StripeKey, format!("sk_live_{}", rep("4eC3", 6))),
            (Detector::StripeKey, format!("rk_test_{}", rep("Ab9", 4))),
            (Detector::NpmToken, format!("npm_{}", rep("aB3d", 9))),
            (
                Detector::PypiToken,
                format!("pypi-AgEIcHlwaS5vcmc{}", rep("Ab_-9", 12)),
            ),
            (Detector::GoogleApiKey, format!("AIza{}", rep("Sy_-9", 7))),
        ];
        for (d, token) in cases {
            one(d, &format!("key {token} here"), &token);
            one(d, &format!("\"{token}\""), &token);
        }
    }

    #[test]
    fn token_near_misses() {
        for t in [
            format!("AKIA{}", rep("IOSFODNN7EXAMPL", 1)),
            format!("AKIA{}", rep("iosfodnn7example", 1)),
            format!("AKIA{}", rep("IOSFODNN7EXAMPL_", 1)),
            format!("XAKIA{}", rep("IOSFODNN7EXAMPLE", 1)),
            format!("AKIA{}", rep("IOSFODNN7EXAMPLE", 1) + "Q"),
            format!("ghp_{}", rep("a1B2", 8)),
            format!("ghp_{}", rep("a1B2", 9) + "c"),
            format!("ghx_{}", rep("a1B2", 9)),
            format!("glpat-{}", rep("a", 19)),
            format!("xoxb-{}", rep("1", 9)),
            format!("pk_live_{}", rep("4eC3", 6)),
            format!("task_live_{}", rep("4eC3", 6)),
            format!("npm_{}", rep("aB3d", 8)),
            format!("AIza{}", rep("Sy_-9", 6)),
            "https://hooks.slack.com/services/".to_owned(),
            // A git SHA and base64 blobs are not tokens.
            "commit 3f786850e387550fdab836ed7e6dc881de23001b".to_owned(),
            "data: aGVsbG8gd29ybGQgdGhpcyBpcyBhIGxvbmcgYmFzZTY0IGJsb2I=".to_owned(),
        ] {
            assert_eq!(scan_all(&t), vec![], "in {t:?}");
        }
    }

    // ----- JWT ------------------------------------------------------------

    fn b64(json: &str) -> String {
        B64URL.encode(json)
    }

    fn jwt(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), rep("Sfl_-Kxw", 5))
    }

    #[test]
    fn jwt_valid() {
        let t = jwt(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"sub":"1234567890","iat":1516239022}"#,
        );
        one(Detector::Jwt, &format!("Authorization: Bearer {t}"), &t);
        one(Detector::Jwt, &format!("id_token={t}&state=x"), &t);
        // An unsigned token (empty signature) still carries the claims.
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"x"}"#));
        one(Detector::Jwt, &format!("{unsigned} "), &unsigned);
        // A payload too big for the stack buffer.
        let big = jwt(
            r#"{"alg":"RS256"}"#,
            &format!(r#"{{"x":"{}"}}"#, rep("y", 5000)),
        );
        one(Detector::Jwt, &big, &big);
    }

    #[test]
    fn jwt_rejects_undecodable_or_non_jose() {
        for t in [
            jwt(r#"{"typ":"JWT"}"#, r#"{"sub":"x"}"#),
            jwt(r#"["alg"]"#, r#"{"sub":"x"}"#),
            jwt(r#"{"alg":"HS256"}"#, r#"["not","an","object"]"#),
            jwt(r#"{"alg":"HS256"}"#, "plain text"),
            format!("eyJhbGciOiJIUzI1NiJ9.{}", rep("notbase64json", 3)),
            format!("eyJ{}.{}.{}", rep("zz", 10), rep("e30", 1), "sig"),
            format!("{}.more", jwt(r#"{"alg":"HS256"}"#, r#"{"sub":"x"}"#)),
        ] {
            none(Detector::Jwt, &t);
        }
    }

    // ----- private keys ---------------------------------------------------

    #[test]
    fn private_key_blocks() {
        let body = rep("MIIEowIBAAKCAQEA", 4);
        for label in [
            "RSA PRIVATE KEY",
            "PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
            "PGP PRIVATE KEY BLOCK",
        ] {
            let pem = format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----");
            one(Detector::PrivateKey, &format!("key:\n{pem}\nbye"), &pem);
            let escaped = format!("-----BEGIN {label}-----\\n{body}\\n-----END {label}-----");
            one(
                Detector::PrivateKey,
                &format!("{{\"k\":\"{escaped}\"}}"),
                &escaped,
            );
        }
    }

    #[test]
    fn private_key_without_end_masks_to_the_end() {
        let text = format!(
            "x -----BEGIN EC PRIVATE KEY-----\n{}\nunrelated ü",
            rep("MHcCAQEE", 3)
        );
        one(Detector::PrivateKey, &text, &text[2..]);
    }

    #[test]
    fn public_material_is_not_a_private_key() {
        for label in ["PUBLIC KEY", "CERTIFICATE", "RSA PUBLIC KEY"] {
            none(
                Detector::PrivateKey,
                &format!("-----BEGIN {label}-----\nMIIB\n-----END {label}-----"),
            );
        }
    }

    // ----- URL passwords --------------------------------------------------

    #[test]
    fn url_password() {
        one(
            Detector::UrlPassword,
            "postgres://admin:s3cr3t@db.example.com:5432/app",
            "s3cr3t",
        );
        one(Detector::UrlPassword, "redis://:p4ss@cache:6379", "p4ss");
        one(
            Detector::UrlPassword,
            "https://u:p@ss:w0rd@example.com/x",
            "p@ss:w0rd",
        );
        one(
            Detector::UrlPassword,
            "\"amqp://guest:gu3st!@mq/\"",
            "gu3st!",
        );
        for t in [
            "https://user@example.com/",
            "https://example.com/?q=a:b@c",
            "postgres://admin:@db/app",
            "postgres://admin:${DB_PASSWORD}@db/app",
            "postgres://admin:***@db/app",
        ] {
            none(Detector::UrlPassword, t);
        }
    }

    // ----- key-value secrets ----------------------------------------------

    #[test]
    fn secret_values() {
        let cases = [
            ("password=hunter2", "hunter2"),
            ("DB_PASSWORD=changeme", "changeme"),
            ("export MYSQL_ROOT_PASSWORD='p@ss word'", "p@ss word"),
            (r#""client_secret": "abcDEF123456""#, "abcDEF123456"),
            ("api-key: 0123456789abcdef", "0123456789abcdef"),
            ("X-Api-Key: Zx81mQ0pLr", "Zx81mQ0pLr"),
            ("apiKey = \"Q2x1c3Rlcg9\"", "Q2x1c3Rlcg9"),
            ("userPassword: x1", "x1"),
            ("pwd => \"s\"", "s"),
            ("passphrase := `correct horse`", "correct horse"),
            (
                "?token=a8f5f167f44f4964e6c998dee827110c&x=1",
                "a8f5f167f44f4964e6c998dee827110c",
            ),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
            ),
            (r#"{\"password\":\"hunter2\"}"#, "hunter2"),
            ("Authorization: Bearer abc123DEF456ghi", "abc123DEF456ghi"),
            ("\"authorization\": \"Basic dXNlcjpwYXNz\"", "dXNlcjpwYXNz"),
            ("refresh_token: 1//0gAbCdEf123", "1//0gAbCdEf123"),
            ("password: \"never closed\nnext", "never closed"),
            (
                "api_key=correct-horse-battery-staple",
                "correct-horse-battery-staple",
            ),
            ("secret==M-Yfbs8hIK3Ar*P0cjBo", "=M-Yfbs8hIK3Ar*P0cjBo"),
        ];
        for (text, want) in cases {
            one(Detector::Secret, text, want);
        }
    }

    #[test]
    fn secret_skips_placeholders_words_and_other_names() {
        for t in [
            "password: null",
            "password=",
            "password: \"\"",
            "password: ***",
            "password: ********",
            "password: <redacted>",
            "password: [MASKED:secret]",
            "token=${TOKEN}",
            "token: {{ token }}",
            "password = $DB_PASSWORD",
            "password = os.environ[\"PW\"]",
            "secret: false",
            "api_key: xxxxxxxx",
            "token: expired",
            "token: Expiredx",
            "token: REDACTEDTOKEN",
            "secret: my-secret-name",
            "\"token\": \"The token has expired\"",
            "token_type: Bearer",
            "max_tokens: 1000",
            "passwordless: true",
            "password_hash: 5f4dcc3b5aa765d61d8327deb882cf99",
            "if password == other",
            "password != x",
            "Please reset your password: click the link below",
            "mysecret=abc123XYZ789",
            "Authorization: Bearer",
            "password: {{ .Values.db.password }}",
            "db_password=${SECRET_KEY}",
            "client_secret=%(DB_PASSWORD)s",
            "api-key: env:STRIPE_KEY",
            "DB_PASSWORD=vault:secret/data/db#password",
            "password: YOUR_API_KEY_HERE",
        ] {
            none(Detector::Secret, t);
        }
    }

    #[test]
    fn secret_name_tables_match_the_names() {
        let mut listed: Vec<&[u8]> = (0..=255u8)
            .flat_map(|c| secret_names_ending_in(c).iter().map(|&(w, _)| w))
            .collect();
        listed.sort_unstable();
        listed.dedup();
        let mut all = SECRET_NAMES.to_vec();
        all.sort_unstable();
        assert_eq!(listed, all);
        // The tables pass a pair of bytes when a name ending in that pair
        // (or in a separator and a last letter) may end there.
        for last in 0..=255u8 {
            for second in 0..=255u8 {
                let want = secret_names_ending_in(last).iter().any(|(w, _)| {
                    w[w.len() - 1] == last.to_ascii_lowercase()
                        && (matches!(second, b'_' | b'-')
                            || w[w.len() - 2] == second.to_ascii_lowercase())
                });
                let got = NAME_LAST[usize::from(last)] & NAME_SECOND_LAST[usize::from(second)] != 0;
                assert_eq!(got, want, "{last:#x} {second:#x}");
            }
        }
    }

    #[test]
    fn secret_skips_code_but_not_literals() {
        for t in [
            "pwd = os.getcwd()",
            "passwd = passwd + x",
            "password = getpass.getpass()",
            "token = self._next()",
            "    token = tokens[0]",
            "api_key = settings.api_key",
            "secret = self.secretValue",
            "password: str = \"x\"",
            "password: Optional[str] = None",
            "token = token_bytes(32)",
            "authorization = request.headers.get(\"Authorization\")",
            "apiKey = config.apiKeyV2;",
            "passwd = passwd * 2",
            "token = Name.Function",
            "def f(self, token: bytes, ttl: int):",
            "password: str)",
            "while (my $token = $parser->get_token) {",
            "PASSWORD=$db_password",
            "username, password = url_user_password",
            "self.passwd = password_mgr",
            "passwd = fallback_getpass(prompt, stream)",
            "self._pwd = pwd",
            "pwd = (self.password.encode('utf-8'))",
            "self.passwd = {}",
            "passwd = getpass.getpass('Password: ')",
            "def unix_getpass(prompt='Password: ', stream=None):",
            "\"Authorization: \" + token",
            "[pypi]\nusername:%s\npassword:%s\n",
        ] {
            none(Detector::Secret, t);
        }
        for (t, want) in [
            ("password = \"hunter2\"", "hunter2"),
            ("PASSWORD=hunter2", "hunter2"),
            ("password = hunter2", "hunter2"),
            ("api_key: 8f3a9c2e71d04b5a", "8f3a9c2e71d04b5a"),
            ("token = 'a8F5f167f44F'  # from the vault", "a8F5f167f44F"),
            ("password=Hunter2.x", "Hunter2.x"),
            ("password = \"os.getcwd()\"", "os.getcwd()"),
            ("passwd: pa55(word", "pa55(word"),
            ("password: hunter2 -- rotated monthly", "hunter2"),
            ("{'password': 'pwd'}", "pwd"),
            ("password=Summer2024.x", "Summer2024.x"),
            ("api_key=TuwsjBTyJr.HMfbtFdDAU", "TuwsjBTyJr.HMfbtFdDAU"),
            ("password: $Ecret_42", "$Ecret_42"),
            ("password: my_pass_42", "my_pass_42"),
            ("password: string_cheese", "string_cheese"),
            (
                "password=whsec_EryLfErrioPWDln4j6xs8q3",
                "whsec_EryLfErrioPWDln4j6xs8q3",
            ),
            ("'password: hunter2'", "hunter2"),
        ] {
            one(Detector::Secret, t, want);
        }
    }

    // ----- overlaps -------------------------------------------------------

    #[test]
    fn specific_token_wins_over_generic_secret() {
        let t = format!("ghp_{}", rep("a1B2", 9));
        one(Detector::GithubToken, &format!("token={t}"), &t);
        one(
            Detector::GithubToken,
            &format!("\"GITHUB_TOKEN\": \"{t}\""),
            &t,
        );
        let k = format!("AKIA{}", rep("IOSFODNN7EXAMPLE", 1));
        one(Detector::AwsAccessKey, &format!("access_key = {k}"), &k);
    }

    #[test]
    fn overlap_resolution_by_rank() {
        // A JWT after `token=` is a JWT.
        let t = jwt(r#"{"alg":"HS256"}"#, r#"{"sub":"x"}"#);
        one(Detector::Jwt, &format!("access_token={t}"), &t);
        // A password in a URL is not an email address.
        one(
            Detector::UrlPassword,
            "smtp://bob:pw@mail.example.com",
            "pw",
        );
        // An email address whose local part is a phone number.
        one(
            Detector::Email,
            "+14155550132@sms.example.com",
            "+14155550132@sms.example.com",
        );
        // A card number given as a password is a secret.
        one(
            Detector::Secret,
            "password=4111111111111111",
            "4111111111111111",
        );
        // A private key given as a secret is a private key.
        let pem = "-----BEGIN PRIVATE KEY-----\\nMIIB\\n-----END PRIVATE KEY-----";
        one(
            Detector::PrivateKey,
            &format!("private_key: \"{pem}\""),
            pem,
        );
    }

    #[test]
    fn resolve_keeps_the_most_specific_then_earliest_then_longest() {
        let f = |start, end, detector| Finding {
            start,
            end,
            detector,
        };
        let mut v = vec![
            f(10, 20, Detector::Phone),
            f(0, 30, Detector::Secret),
            f(5, 15, Detector::GithubToken),
            f(15, 25, Detector::Card),
            f(40, 45, Detector::Email),
            f(40, 50, Detector::Email),
            f(48, 60, Detector::Phone),
        ];
        let n = resolve(&mut v);
        v.truncate(n);
        assert_eq!(
            v,
            vec![
                f(5, 15, Detector::GithubToken),
                f(15, 25, Detector::Card),
                f(40, 50, Detector::Email),
            ]
        );
    }

    #[test]
    fn several_findings_in_one_text() {
        let text = "Name: Ana, mail ana@example.org, tel +1 415-555-0132, \
                    card 5555 5555 5555 4444, SSN 123-45-6789, IBAN DE89 3704 0044 0532 0130 00, \
                    from 203.0.113.9, password: tr0ub4dor";
        let got: Vec<Detector> = scan_all(text).into_iter().map(|(d, _)| d).collect();
        assert_eq!(
            got,
            [
                Detector::Email,
                Detector::Phone,
                Detector::Card,
                Detector::Ssn,
                Detector::Iban,
                Detector::Ipv4,
                Detector::Secret
            ]
        );
    }

    // ----- unicode --------------------------------------------------------

    #[test]
    fn ranges_stay_on_char_boundaries_in_multibyte_text() {
        one(
            Detector::Card,
            "Kartennummer:4111 1111 1111 1111–danke",
            "4111 1111 1111 1111",
        );
        one(
            Detector::Card,
            "カード番号4111111111111111です",
            "4111111111111111",
        );
        one(
            Detector::Email,
            "メール：taro@example.jp です",
            "taro@example.jp",
        );
        one(
            Detector::Phone,
            "电话：+86 138 0013 8000。",
            "+86 138 0013 8000",
        );
        one(Detector::Ssn, "№ 123-45-6789 ✓", "123-45-6789");
        one(
            Detector::Secret,
            "пароль password=пароль123 ok",
            "пароль123",
        );
        one(
            Detector::Secret,
            "token: \"ключ-ABC123def\"",
            "ключ-ABC123def",
        );
        // A value cut at the size cap still ends on a char boundary.
        let long = format!("password={}", "é".repeat(MAX_VALUE));
        let got = found(Detector::Secret, &long);
        assert_eq!(got.len(), 1);
        assert!(got[0].len() <= MAX_VALUE);
    }

    #[test]
    fn findings_do_not_depend_on_where_the_prefilter_blocks_fall() {
        // The prefilter works on blocks of 64 bytes and looks up to two
        // bytes back and one ahead across a block's edge.
        let token = format!("ghp_{}", rep("a1B2", 9));
        let jwt = jwt(r#"{"alg":"HS256"}"#, r#"{"sub":"x"}"#);
        let text = format!(
            "card 4111 1111 1111 1111, ssn 123-45-6789, DE89370400440532013000, \
             a@example.com, +1 415-555-0132, 10.0.0.1, fe80::1, {token}, {jwt}, \
             password=hunter2, 2024-07-17T13:45:00Z"
        );
        let want: Vec<(Detector, String)> = scan_all(&text);
        assert_eq!(want.len(), 10, "{want:?}");
        for pad in 0..140 {
            let padded = format!("{}{text}", " ".repeat(pad));
            assert_eq!(scan_all(&padded), want, "with {pad} bytes before");
        }
        // Glued across a block edge: nothing starts inside a word.
        for pad in 60..68 {
            let glued = format!("{}4111111111111111", "x".repeat(pad));
            assert_eq!(scan_all(&glued), vec![], "with {pad} letters before");
            let split = format!("{} 4111111111111111", "x".repeat(pad));
            assert_eq!(found(Detector::Card, &split), ["4111111111111111"]);
            let later = format!("{}2024-07-17 4111111111111111", "x".repeat(pad));
            assert_eq!(found(Detector::Card, &later), ["4111111111111111"]);
        }
    }

    #[test]
    fn person_names_come_from_the_same_pass() {
        // The scanner marks name starts in its prefilter; what it finds
        // must be what `find_names` finds on its own, wherever the blocks
        // fall and whatever the byte before a block is.
        let text = "Dear Anna, Maria Garcia (maria@example.com) and Dr. Okafor \
                    met Sergei Petrov—merci, Zoë Ærøskøbing; O'Brien-McAllister \
                    wrote to Jean-Luc Picard. GitHub, ASCII, The End. \
                    customer: Bartholomew Quist _Xavier Yang x_Ana Lopez";
        for pad in 0..70 {
            for fill in [" ", "x", "é", "_"] {
                let padded = format!("{}{text}", fill.repeat(pad));
                let mut names = Vec::new();
                super::super::names::find_names(&padded, &mut names);
                let want: Vec<(Detector, String)> = names
                    .iter()
                    .map(|&(s, e)| (Detector::Person, padded[s..e].to_owned()))
                    .collect();
                assert!(want.len() >= 6, "{want:?}");
                assert_eq!(
                    scan_with(&[Detector::Person], &padded),
                    want,
                    "{pad} {fill:?}"
                );
            }
        }
    }

    #[test]
    fn digit_runs_are_measured_right() {
        for text in [
            "",
            "x",
            "1",
            "12a",
            "1234567",
            "12345678",
            "123456789x",
            "0123456789012345678",
            "9/",
            "5\u{e9}",
        ] {
            let want = text.bytes().take_while(u8::is_ascii_digit).count();
            assert_eq!(digits_end(text.as_bytes(), 0), want, "{text:?}");
        }
        // Bytes around the digit range and above 127.
        for c in [b'/', b':', b'0', b'9', 0x7F, 0x80, 0xB9, 0xBA, 0xFF] {
            let mut w = [b'1'; 8];
            w[3] = c;
            let want = if c.is_ascii_digit() { 8 } else { 3 };
            assert_eq!(leading_digits(u64::from_le_bytes(w)), want, "{c:#x}");
        }
    }

    #[test]
    fn short_names_at_the_start_of_the_text_do_not_panic() {
        // Names read backwards from a separator must stop at the start.
        for t in [
            "_d: x", "-d=1", "_pwd:", "-_token=", "d:", "=x", ":", "ApiKey", "_y=2", "x-d:1",
        ] {
            scan_all(t);
        }
        one(Detector::Secret, "_pwd=x", "x");
    }

    #[test]
    fn arbitrary_text_keeps_the_output_contract() {
        // A deterministic generator mixes fragments of every format with
        // multibyte characters and separators; scan_with checks the contract.
        let pieces = [
            "4111",
            " ",
            "-",
            ".",
            "\u{200b}",
            "\u{a0}",
            "é",
            "ü",
            "日本",
            "@",
            ":",
            "=",
            "//",
            "+1",
            "(415)",
            "555",
            "0132",
            "DE89",
            "eyJ",
            "-----BEGIN ",
            "PRIVATE KEY-----",
            "\\n",
            "\"",
            "password",
            "token",
            "a1B2c3D4",
            "::",
            "fe80",
            "192.168.",
            "ssn ",
            "phone ",
            "AKIA",
            "ghp_",
            "x",
            "\n",
            "123-45-",
            "6789",
            "_",
            "-d",
            "y:",
            "key",
            "\\\"",
            "{{",
            "${",
            "+",
            "(",
            ")",
            "0",
            "@x.io",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..(next() % 40) {
                text.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            }
            scan_all(&text);
        }
    }
}
