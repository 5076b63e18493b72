//! Person names, the opt-in `person` detector.
//!
//! Without a language model a name is only guessed, from two kinds of
//! evidence:
//! - a dictionary: a common first name (a few hundred, international)
//!   followed by a capitalised surname (optionally a middle initial,
//!   particles such as `van`/`de la`, and a second surname);
//! - a context cue right before capitalised words: a title (`Mr.`, `Dr.`),
//!   a salutation (`Dear`), a person-valued field (`customer`, `contact`,
//!   `manager`, `"full_name": "`, `first_name`), a phrase (`my name is`,
//!   `I'm`) or a sign-off (`Best regards,`).
//!
//! Words that are usually not names (days, months, org and place words such
//! as `Support`, `Street`, `Inc`) end a candidate. A bare `name` field is
//! not a cue: it names products and servers as often as people. What this
//! misses: names from outside the dictionary without a cue, names in
//! scripts without letter case (CJK), all-caps names, and single first
//! names without a cue; what it wrongly takes: a first name followed by a
//! brand or place word not in the stop list ("Jordan Shoes", "Philip
//! Morris"). The accuracy bench measures both (`cargo bench -p
//! mcpgate-broker --bench mask_accuracy`), which is why it is off by
//! default.

/// Appends the byte ranges of likely person names in `text` to `out`,
/// sorted by start and not overlapping (each on char boundaries).
pub fn find_names(text: &str, out: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    // Candidates before `resume` are inside a word or name already seen.
    let mut resume = 0;
    let mut base = 0;
    while base < bytes.len() {
        let mut mask = candidates(bytes, base);
        while mask != 0 {
            let at = base + (mask.trailing_zeros() / 8) as usize;
            mask &= mask - 1;
            if let Some(name) = name_from(text, at, &mut resume) {
                out.push(name);
            }
        }
        base += 8;
    }
}

/// Whether byte `b` may start a capitalised word: an ASCII capital or the
/// lead byte of a multi-byte char. The scanner marks these (when not right
/// after an ASCII letter or digit) in its own prefilter pass and hands each
/// mark to [`name_from`], so a scan with `person` on still reads the text
/// once.
pub(super) fn may_start_name(b: u8) -> bool {
    b.is_ascii_uppercase() || b >= 0xC0
}

/// Whether byte `b` may follow the first byte of a capitalised word: a
/// capital followed by anything else (another capital, a digit, a blank)
/// starts no word [`cap_word`] takes, unless it is a multi-byte char.
pub(super) fn may_follow_capital(b: u8) -> bool {
    b.is_ascii_lowercase() || b >= 0x80 || matches!(b, b'\'' | b'-')
}

/// The name starting at the candidate `at`, if any; the candidates must
/// come in increasing order, with `resume` (0 at first) carried from one
/// to the next: a candidate before it is inside a word or name already
/// seen.
pub(super) fn name_from(text: &str, at: usize, resume: &mut usize) -> Option<(usize, usize)> {
    if at < *resume || !starts_word(text, at) {
        return None;
    }
    let word = cap_word(text, at)?;
    match name_at(text, word) {
        Some(end) => {
            *resume = end;
            Some((word.start, end))
        }
        None => {
            *resume = word.end;
            None
        }
    }
}

/// For the 8 bytes from `base`: the high bit of byte `k` is set when
/// `bytes[base + k]` may start a capitalised word — an ASCII capital or
/// the lead byte of a multi-byte char, not right after an ASCII letter,
/// digit or `_`. Computed on a whole `u64` at once (SWAR), because capitals
/// are common in tokens and base64 but word starts are rare, and this
/// filter is what keeps the detector fast.
fn candidates(bytes: &[u8], base: usize) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// High bit of each byte set when that byte's low 7 bits are >= `c`.
    fn ge(low7: u64, c: u8) -> u64 {
        (low7 + ONES * u64::from(0x80 - c)) & HIGH
    }
    let load = |at: isize| {
        let mut word = [b' '; 8];
        for (k, slot) in word.iter_mut().enumerate() {
            let i = at + k as isize;
            if i >= 0 && (i as usize) < bytes.len() {
                *slot = bytes[i as usize];
            }
        }
        u64::from_le_bytes(word)
    };
    let (cur, prev) = if base >= 1 && base + 8 <= bytes.len() {
        let mut cur = [0; 8];
        let mut prev = [0; 8];
        cur.copy_from_slice(&bytes[base..base + 8]);
        prev.copy_from_slice(&bytes[base - 1..base + 7]);
        (u64::from_le_bytes(cur), u64::from_le_bytes(prev))
    } else {
        // The first and the last (partial) block; padding is a space.
        (load(base as isize), load(base as isize - 1))
    };
    let c7 = cur & !HIGH;
    let upper = ge(c7, b'A') & !ge(c7, b'Z' + 1) & !cur;
    let lead = cur & ge(c7, 0x40);
    let p7 = prev & !HIGH;
    // Setting bit 5 folds capitals onto lowercase letters (and nothing
    // else onto them).
    let folded = p7 | (ONES * 0x20);
    let glued = ((ge(folded, b'a') & !ge(folded, b'z' + 1))
        | (ge(p7, b'0') & !ge(p7, b'9' + 1))
        | (ge(p7, b'_') & !ge(p7, b'_' + 1)))
        & !prev;
    (upper | lead) & !glued
}

/// A capitalised word: `text[start..end]`.
#[derive(Debug, Clone, Copy)]
struct Word {
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cue {
    None,
    /// Enough for a single capitalised word (`Dr. Okafor`, `Dear Anna`).
    Strong,
    /// Needs at least two capitalised words (`customer Ana Lopez`).
    Weak,
}

fn name_at(text: &str, first: Word) -> Option<usize> {
    let bytes = text.as_bytes();
    let first_str = &text[first.start..first.end];
    if is_first_name(first_str) {
        if let Some(end) = surname_after(text, first.end) {
            return Some(end);
        }
        // A known first name alone only after a cue (`Thanks,⏎Daniel`).
        return (cue_before(bytes, first.start) != Cue::None).then_some(first.end);
    }
    let cue = cue_before(bytes, first.start);
    if cue == Cue::None || is_stop(first_str) {
        return None;
    }
    match cue {
        Cue::Strong => Some(surname_after(text, first.end).unwrap_or(first.end)),
        _ => surname_after(text, first.end),
    }
}

fn is_first_name(word: &str) -> bool {
    if contains(FIRST_NAMES, &FIRST_SLOTS, word) {
        return true;
    }
    // A compound first name (`Jean-Luc`, `Anna-Lena`) counts by its first part.
    match word.split_once('-') {
        Some((head, _)) => contains(FIRST_NAMES, &FIRST_SLOTS, head),
        None => false,
    }
}

fn is_stop(word: &str) -> bool {
    contains(STOP_WORDS, &STOP_SLOTS, word)
}

/// Slots of the hash tables of the dictionaries: a power of two, at least
/// twice the words, so most lookups compare one word or none (this runs
/// per capitalised word; a binary search mispredicted its way down).
const SLOTS: usize = 2048;

/// Whether `words` holds `word`, looked up in `slots`, its hash table
/// ([`word_slots`]).
fn contains(words: &[&str], slots: &[u16; SLOTS], word: &str) -> bool {
    let mut at = slot_of(word.as_bytes());
    loop {
        match slots[at] {
            0 => return false,
            k if words[usize::from(k) - 1] == word => return true,
            _ => at = (at + 1) % SLOTS,
        }
    }
}

/// The home slot of a word: a multiplicative hash of its first 8 bytes
/// and its length.
const fn slot_of(word: &[u8]) -> usize {
    let mut key = (word.len() as u64) << 59;
    let mut i = 0;
    while i < 8 && i < word.len() {
        key ^= (word[i] as u64) << (8 * i);
        i += 1;
    }
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// An open-addressing hash table of `words` (linear probing): each slot
/// holds a word's index plus one, or 0 when empty.
const fn word_slots(words: &[&str]) -> [u16; SLOTS] {
    assert!(2 * words.len() <= SLOTS && words.len() < u16::MAX as usize);
    let mut slots = [0u16; SLOTS];
    let mut i = 0;
    while i < words.len() {
        let mut at = slot_of(words[i].as_bytes());
        while slots[at] != 0 {
            at = (at + 1) % SLOTS;
        }
        slots[at] = i as u16 + 1;
        i += 1;
    }
    slots
}

const FIRST_SLOTS: [u16; SLOTS] = word_slots(FIRST_NAMES);
const STOP_SLOTS: [u16; SLOTS] = word_slots(STOP_WORDS);

/// After a first word ending at `pos`: an optional middle initial (`F.`),
/// up to three particles (`van`, `de la`), a surname, and optionally one
/// more capitalised word (a second surname or the surname after a middle
/// name). Returns the end of the name, or `None` without a surname.
fn surname_after(text: &str, mut pos: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.len() > pos + 3
        && bytes[pos] == b' '
        && bytes[pos + 1].is_ascii_uppercase()
        && bytes[pos + 2] == b'.'
        && bytes[pos + 3] == b' '
    {
        pos += 3;
    }
    for _ in 0..3 {
        match particle_after(bytes, pos) {
            Some(end) => pos = end,
            None => break,
        }
    }
    let surname = next_word(text, pos).filter(|w| !is_stop(&text[w.start..w.end]))?;
    let mut end = surname.end;
    if let Some(second) = next_word(text, end).filter(|w| !is_stop(&text[w.start..w.end])) {
        end = second.end;
    }
    Some(end)
}

/// ` van` at `pos` followed by a space: returns the end of the particle.
fn particle_after(bytes: &[u8], pos: usize) -> Option<usize> {
    if bytes.get(pos) != Some(&b' ') {
        return None;
    }
    let start = pos + 1;
    let len = bytes[start..]
        .iter()
        .take_while(|b| b.is_ascii_lowercase())
        .count();
    let end = start + len;
    if len == 0 || bytes.get(end) != Some(&b' ') {
        return None;
    }
    let word = &bytes[start..end];
    PARTICLES.contains(&word).then_some(end)
}

const PARTICLES: &[&[u8]] = &[
    b"al", b"bin", b"da", b"das", b"de", b"del", b"della", b"den", b"der", b"di", b"do", b"dos",
    b"du", b"ibn", b"la", b"le", b"ten", b"ter", b"van", b"von",
];

/// A capitalised word after exactly one space at `pos`.
fn next_word(text: &str, pos: usize) -> Option<Word> {
    if text.as_bytes().get(pos) != Some(&b' ') {
        return None;
    }
    cap_word(text, pos + 1)
}

/// Whether a word can start at `at`: not glued to a letter, digit or `_`.
fn starts_word(text: &str, at: usize) -> bool {
    let bytes = text.as_bytes();
    match at.checked_sub(1).map(|p| bytes[p]) {
        None => true,
        Some(p) if p < 0x80 => !(p.is_ascii_alphanumeric() || p == b'_'),
        Some(_) => !text[..at]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric),
    }
}

/// The capitalised word starting at `start`: an uppercase letter, then
/// lowercase letters; an inner capital only after `Mc`/`Mac`/`De`-style
/// prefixes or after an apostrophe or hyphen (`McDonald`, `O'Brien`,
/// `Smith-Jones`). Words glued to a digit or `_`, all-caps words and
/// camel-case words (`GitHub`) are not names.
fn cap_word(text: &str, start: usize) -> Option<Word> {
    let bytes = text.as_bytes();
    // Fast path: `[A-Z][a-z]*` followed by ASCII decides most words
    // (capitals are common in all-caps words, tokens and base64).
    if bytes[start].is_ascii_uppercase() {
        let len = bytes[start + 1..]
            .iter()
            .take_while(|b| b.is_ascii_lowercase())
            .count();
        let end = start + 1 + len;
        match bytes.get(end) {
            Some(&n) if n.is_ascii_digit() || n == b'_' => return None,
            Some(&n) if n.is_ascii_uppercase() && !is_cap_prefix(&bytes[start..end]) => {
                return None;
            }
            Some(&n) if n >= 0x80 || n.is_ascii_uppercase() || matches!(n, b'\'' | b'-') => {}
            _ => return (len > 0).then_some(Word { start, end }),
        }
    }
    let rest = &text[start..];
    let mut chars = rest.char_indices().peekable();
    let (_, first) = chars.next()?;
    if !first.is_uppercase() {
        return None;
    }
    let mut segment_start = 0;
    let mut has_lower = false;
    let mut letters = 1;
    let mut end = first.len_utf8();
    while let Some(&(at, c)) = chars.peek() {
        if c.is_lowercase() {
            has_lower = true;
        } else if c.is_uppercase() {
            if !is_cap_prefix(&rest.as_bytes()[segment_start..at]) {
                return None;
            }
            segment_start = at;
        } else if matches!(c, '\'' | '\u{2019}' | '-') {
            let after = at + c.len_utf8();
            match rest[after..].chars().next() {
                Some(next) if next.is_uppercase() => {
                    // Take the separator and the capital after it.
                    chars.next();
                    chars.next();
                    segment_start = after;
                    letters += 1;
                    end = after + next.len_utf8();
                    continue;
                }
                // Romanised Korean names: `Seo-yeon`, `Min-jun`.
                Some(next) if c == '-' && next.is_lowercase() => {
                    chars.next();
                    segment_start = after;
                    end = after;
                    continue;
                }
                _ => break,
            }
        } else if c.is_alphanumeric() || c == '_' {
            return None;
        } else {
            break;
        }
        letters += 1;
        end = at + c.len_utf8();
        chars.next();
    }
    (has_lower && letters >= 2).then_some(Word {
        start,
        end: start + end,
    })
}

/// A name prefix after which a capital may follow (`McDonald`, `DeVito`).
fn is_cap_prefix(segment: &[u8]) -> bool {
    matches!(
        segment,
        b"Mc" | b"Mac" | b"De" | b"Di" | b"Da" | b"La" | b"Le" | b"Du"
    )
}

/// The cue right before a word at `start`, looking back past a few
/// separators (`"full_name": "`, `Dear `, `Mr. `, `regards,⏎`) to the
/// word before them.
fn cue_before(bytes: &[u8], start: usize) -> Cue {
    let mut j = start;
    let mut colon = false;
    while j > 0
        && start - j < 6
        && matches!(
            bytes[j - 1],
            b' ' | b'"' | b'\'' | b':' | b'=' | b'\t' | b'\n' | b'\r'
        )
    {
        colon |= bytes[j - 1] == b':';
        j -= 1;
    }
    if j == start {
        return Cue::None;
    }
    let punct = match j.checked_sub(1).map(|p| bytes[p]) {
        Some(p @ (b'.' | b',')) => {
            j -= 1;
            Some(p)
        }
        _ => None,
    };
    let Some((word, word_start)) = word_before(bytes, j) else {
        return Cue::None;
    };
    let word = word.as_slice();
    match punct {
        Some(b'.') if matches!(word, b"mr" | b"mrs" | b"ms" | b"dr" | b"prof") => Cue::Strong,
        Some(b',') if matches!(word, b"regards" | b"thanks" | b"sincerely" | b"cheers") => {
            Cue::Weak
        }
        Some(_) => Cue::None,
        None => match word {
            b"mr" | b"mrs" | b"miss" | b"dear" | b"first_name" | b"firstname" | b"given_name"
            | b"givenname" | b"last_name" | b"lastname" | b"family_name" | b"familyname"
            | b"surname" => Cue::Strong,
            b"full_name" | b"fullname" | b"customer_name" | b"customername" | b"contact_name"
            | b"contactname" | b"display_name" | b"displayname" | b"customer" | b"contact"
            | b"author" | b"assignee" | b"reporter" | b"requester" | b"owner" | b"manager"
            | b"colleague" | b"agent" | b"user" | b"patient" | b"employee" | b"cardholder"
            | b"card_holder" | b"holder" | b"i'm" => Cue::Weak,
            // Mail headers: `From: Ana Lopez <ana@example.com>`.
            b"from" | b"to" | b"cc" | b"bcc" | b"attn" if colon => Cue::Weak,
            b"is" | b"am" | b"by" => {
                let before = word_before(bytes, word_start.saturating_sub(1))
                    .filter(|_| word_start > 0 && bytes[word_start - 1] == b' ');
                match (word, before.as_ref().map(|(w, _)| w.as_slice())) {
                    (b"is", Some(b"name")) | (b"am", Some(b"i")) => Cue::Weak,
                    (b"by", Some(b"requested" | b"signed")) => Cue::Weak,
                    _ => Cue::None,
                }
            }
            _ => Cue::None,
        },
    }
}

/// The ASCII word (letters, digits, `_`, `'`) ending at `end`, lowercased
/// into a small buffer, if it is short enough to be a cue and starts at a
/// word boundary; and where it starts.
fn word_before(bytes: &[u8], end: usize) -> Option<(CueWord, usize)> {
    let mut start = end;
    while start > 0
        && end - start <= CueWord::MAX
        && (bytes[start - 1].is_ascii_alphanumeric() || matches!(bytes[start - 1], b'_' | b'\''))
    {
        start -= 1;
    }
    let len = end - start;
    if len == 0 || len > CueWord::MAX {
        return None;
    }
    let mut word = CueWord {
        buf: [0; CueWord::MAX],
        len,
    };
    word.buf[..len].copy_from_slice(&bytes[start..end]);
    word.buf[..len].make_ascii_lowercase();
    Some((word, start))
}

/// A lowercased cue candidate, kept on the stack.
struct CueWord {
    buf: [u8; CueWord::MAX],
    len: usize,
}

impl CueWord {
    const MAX: usize = 16;

    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Common first names, sorted by bytes (checked by a test, which keeps
/// the list easy to edit; lookups go through [`FIRST_SLOTS`]).
#[rustfmt::skip]
const FIRST_NAMES: &[&str] = &[
    "Aarav", "Aaron", "Abebe", "Abena", "Abigail", "Adam", "Adebayo", "Aditya", "Agnieszka",
    "Ahmed", "Ahmet", "Aiko", "Aino", "Aisha", "Akira", "Aksel", "Alan", "Albert", "Alejandro",
    "Alessandro", "Alessia", "Alexander", "Alexei", "Alexey", "Alfie", "Ali", "Alice", "Alvaro",
    "Ama", "Amanda", "Amani", "Amara", "Amelia", "Amira", "Amit", "Amy", "Amélie", "Ananya",
    "Anastasia", "Anders", "Andrea", "Andrei", "Andres", "Andrew", "Andrés", "Angela", "Angus",
    "Anil", "Anja", "Anjali", "Ann", "Anna", "Anouk", "Anthony", "Antoine", "Antonio", "Aoife",
    "Arash", "Archie", "Ariel", "Arjun", "Arthur", "Ashley", "Astrid", "Aurélie", "Austin",
    "Ava", "Avi", "Ayşe", "Baraka", "Barbara", "Beatriz", "Benjamin", "Benoît", "Betty",
    "Birgit", "Björn", "Bobby", "Bohdan", "Bradley", "Bram", "Brandon", "Brenda", "Brian",
    "Brittany", "Bronwen", "Bruce", "Bruno", "Bryan", "Burak", "Callum", "Camila", "Camille",
    "Carl", "Carlos", "Carmen", "Carol", "Carolyn", "Catherine", "Cerys", "Charles",
    "Charlotte", "Cheryl", "Chiara", "Chinedu", "Chioma", "Chloe", "Chloé", "Christian",
    "Christina", "Christine", "Christopher", "Ciaran", "Conceição", "Cynthia", "Céline", "Daan",
    "Dafydd", "Daiki", "Dana", "Daniel", "Daniela", "Danielle", "Dariush", "David", "Davide",
    "Deborah", "Debra", "Declan", "Deepak", "Dennis", "Diana", "Diane", "Diego", "Dieter",
    "Dirk", "Divya", "Dmitri", "Dmitry", "Donald", "Donna", "Dorothy", "Douglas", "Dylan",
    "Eduardo", "Edward", "Eero", "Eitan", "Ekaterina", "Elena", "Elif", "Elijah", "Elin",
    "Elisa", "Elizabeth", "Eliška", "Ella", "Emeka", "Emil", "Emily", "Emma", "Emre", "Eoin",
    "Eric", "Erik", "Ethan", "Eugene", "Evelyn", "Evie", "Ewan", "Farhad", "Fatima", "Fatma",
    "Federica", "Federico", "Felipe", "Felix", "Femke", "Fernanda", "Fernando", "Finley",
    "Fiona", "Florian", "Folake", "Francesca", "Francesco", "Francisco", "François", "Freddie",
    "Freya", "Gabriel", "Gabriela", "Gareth", "Gary", "George", "Georgia", "Gerald", "Giorgia",
    "Giovanni", "Giulia", "Giuseppe", "Gloria", "Gregory", "Greta", "Guadalupe", "Guillaume",
    "Gustavo", "Günter", "Hamish", "Hannah", "Hans", "Hao", "Harold", "Harper", "Harry",
    "Haruka", "Haruto", "Hassan", "Heather", "Heike", "Helen", "Henk", "Henrik", "Henry",
    "Hiroshi", "Hui", "Huong", "Hussein", "Hyun", "Hélène", "Ibrahim", "Imogen", "Ingeborg",
    "Ingrid", "Inés", "Irina", "Isabel", "Isabella", "Isabelle", "Ishaan", "Isla", "Ivan",
    "Jacob", "Jacqueline", "Jacques", "Jakub", "James", "Jan", "Jana", "Janet", "Janice",
    "Jason", "Javier", "Jean", "Jeffrey", "Jennifer", "Jeremy", "Jerry", "Jesse", "Jessica",
    "Ji-hoon", "Ji-woo", "Jin", "Jing", "Jiří", "Joan", "Joanna", "Joaquín", "Johan", "Johanna",
    "John", "Johnny", "Jonas", "Jonathan", "Joost", "Jordan", "Jorge", "Jose", "Joseph",
    "Joshua", "José", "Joyce", "João", "Juan", "Judith", "Judy", "Juha", "Julia", "Juliana",
    "Julie", "Julien", "Juliette", "Jun", "Justin", "Jörg", "Jürgen", "Kamau", "Kamil", "Karen",
    "Kari", "Karim", "Katarzyna", "Katharina", "Katherine", "Kathleen", "Kathryn", "Kavya",
    "Kayla", "Keith", "Kelly", "Kenji", "Kenneth", "Kenta", "Kevin", "Khalid", "Kimberly",
    "Klaus", "Kofi", "Krzysztof", "Kwabena", "Kwame", "Kyle", "Lakshmi", "Larissa", "Larry",
    "Lars", "Laura", "Lauren", "Lawrence", "Layla", "Lei", "Leila", "Lena", "Leo", "Leonardo",
    "Leonie", "Letícia", "Linda", "Linh", "Lisa", "Liv", "Logan", "Lorenzo", "Lotte", "Louis",
    "Luca", "Lucas", "Lucia", "Lucie", "Lucy", "Lucía", "Luis", "Lukas", "Léa", "Maarten", "Madison",
    "Magdalena", "Magnus", "Mahmoud", "Maja", "Manon", "Manuel", "Marcin", "Marco", "Margaret",
    "Margaux", "Maria", "Mariam", "Mariana", "Marie", "Martha", "Martina", "Mary", "María",
    "Mateo", "Mateusz", "Mathieu", "Mathilde", "Matteo", "Matthew", "Matthias", "Maximilian",
    "Maya", "Małgorzata", "Meera", "Megan", "Mehdi", "Mehmet", "Melissa", "Mercedes", "Merve",
    "Mia", "Michael", "Michał", "Michelle", "Miguel", "Mikael", "Mikhail", "Mikko", "Min-jun",
    "Ming", "Minh", "Mohammed", "Moira", "Monika", "Moritz", "Moshe", "Muhammad", "Mustafa",
    "Nancy", "Nasrin", "Natalia", "Natalie", "Nathalie", "Nathan", "Neha", "Ngozi", "Niamh",
    "Nicholas", "Nicolas", "Nicole", "Niklas", "Nikolai", "Nils", "Njeri", "Noa", "Noah",
    "Nomvula", "Noor", "Océane", "Oksana", "Ole", "Olena", "Olga", "Oliver", "Olivia",
    "Oluwaseun", "Omar", "Ondřej", "Oren", "Oscar", "Otieno", "Pablo", "Padraig", "Pamela",
    "Paola", "Parisa", "Patricia", "Patrick", "Paul", "Paula", "Paweł", "Pedro", "Pekka",
    "Peter", "Petr", "Petra", "Philip", "Philippe", "Pierre", "Pieter", "Piotr", "Pooja",
    "Poppy", "Priya", "Rachel", "Rafael", "Rahul", "Rajesh", "Randy", "Rashid", "Raymond",
    "Rebecca", "Reza", "Rhys", "Ricardo", "Riccardo", "Richard", "Robert", "Roberta", "Rodrigo",
    "Roger", "Rohan", "Ronald", "Russell", "Ruth", "Ryan", "Sabine", "Sakura", "Salma",
    "Samantha", "Samuel", "Sander", "Sandra", "Sanjay", "Sanne", "Santiago", "Sara", "Sarah",
    "Satoshi", "Scott", "Seamus", "Sean", "Sebastian", "Seo-yeon", "Sergei", "Sergey", "Sergio",
    "Sharon", "Shira", "Shirin", "Shirley", "Shreya", "Siddharth", "Sigrid", "Simone",
    "Siobhan", "Sipho", "Sneha", "Sofia", "Sofía", "Soo-jin", "Sophia", "Stefan", "Stephanie",
    "Stephen", "Steven", "Sunil", "Sunita", "Susan", "Sven", "Svetlana", "Sylvie", "Sébastien",
    "Sören", "Søren", "Takeshi", "Tamar", "Taras", "Tariq", "Tatiana", "Tendai", "Teresa",
    "Tereza", "Terry", "Thabo", "Thanh", "Theo", "Thiago", "Thijs", "Thomas", "Tigist",
    "Timothy", "Tobias", "Tomasz", "Tomás", "Tomáš", "Tuan", "Tyler", "Ursula", "Uwe",
    "Valentina", "Valeria", "Victoria", "Vihaan", "Vikram", "Vincent", "Virginia", "Vitória",
    "Vladimir", "Vojtěch", "Walter", "Wanjiru", "Wayne", "Wei", "Willem", "Willie", "Wojciech",
    "Wolfgang", "Xiaoming", "Ximena", "Xin", "Yael", "Yan", "Yasmin", "Ying", "Yohannes",
    "Yosef", "Youssef", "Yu", "Yui", "Yuki", "Yulia", "Zachary", "Zainab", "Zanele", "Zeynep",
    "Zoe", "Zofia", "Zoë", "Álvaro", "Élodie", "Étienne", "Ömer", "Özlem", "Łukasz", "Алексей",
    "Анна", "Дмитрий", "Елена", "Иван", "Мария", "Михаил", "Наталья", "Ольга", "Сергей",
    "Татьяна",
];

/// Capitalised words that end a name candidate: function words, days and
/// months, and org, place and product words. Sorted by bytes.
#[rustfmt::skip]
const STOP_WORDS: &[&str] = &[
    "A", "AG", "Academy", "Account", "Accounts", "Address", "Admin", "Administrator", "Agency",
    "Agent", "Air", "Airlines", "Airport", "Airways", "All", "Amount", "An", "Analytics", "And",
    "Apparel", "Applicant", "Apr", "April", "Are", "Arena", "As", "Assigned", "Association",
    "At", "Aug", "August", "Authority", "Ave", "Avenue", "BV", "Bank", "Bar", "Basic", "Be",
    "Beach", "Beauty", "Been", "Best", "Billing", "Blvd", "Board", "Boulevard", "Branch",
    "Building", "Business", "But", "By", "Cafe", "Campus", "Capital", "Card", "Care",
    "Cathedral", "Center", "Central", "Centre", "Cheers", "Church", "City", "Client", "Clients",
    "Clinic", "Closed", "Cloud", "Club", "Cluster", "Co", "Colleagues", "College", "Comment",
    "Comments", "Committee", "Communications", "Company", "Console", "Construction",
    "Consulting", "Contact", "Contacts", "Corp", "Corporation", "Council", "County", "Court",
    "Created", "Critical", "Customer", "Customers", "Dashboard", "Data", "Database", "Date",
    "Dear", "Debug", "Dec", "December", "Delivery", "Department", "Depot", "Dept",
    "Description", "Desk", "Digital", "Director", "District", "Doctor", "Dr", "Drive", "East",
    "Eastern", "Edition", "Email", "Energy", "Engineer", "Engineering", "Enterprise",
    "Entertainment", "Error", "Errors", "Evening", "Experience", "Express", "Factory", "False",
    "Fashion", "Fatal", "Feb", "February", "Federal", "Finance", "Financial", "Food", "Foods",
    "For", "Foundation", "Fri", "Friday", "Friends", "From", "Games", "Garden", "Gardens",
    "Global", "GmbH", "Gold", "Great", "Group", "Guest", "HR", "Hall", "Harbor", "Harbour",
    "Hardware", "He", "Health", "Healthcare", "Heights", "Hello", "Help", "Helpdesk", "Her",
    "Hey", "Hi", "Hiring", "His", "Holdings", "Home", "Hospital", "Hotel", "Id", "If", "In",
    "Inc", "Industries", "Info", "Institute", "Insurance", "International", "Invoice",
    "Invoices", "Is", "Island", "Issue", "Issues", "It", "Item", "Items", "Its", "January",
    "Journal", "Jul", "July", "June", "Kind", "LLC", "LLP", "Lab", "Labs", "Lake", "Legal",
    "Library", "Lite", "Little", "Logistics", "Lower", "Ltd", "Madam", "Magazine", "Mall",
    "Management", "Manager", "Mar", "March", "Market", "Marketing", "Max", "May", "Media",
    "Member", "Members", "Mini", "Ministry", "Miss", "Mister", "Mobile", "Model", "Mon",
    "Monday", "Morning", "Motor", "Motors", "Mountain", "Mountains", "Mr", "Mrs", "Ms",
    "Museum", "My", "NaN", "Name", "Names", "National", "Network", "Networks", "New", "News",
    "Night", "Nil", "No", "None", "North", "Northern", "Not", "Note", "Notes", "Nov",
    "November", "Null", "Number", "Oct", "October", "Of", "Office", "Offices", "Old", "On",
    "Open", "Operations", "Ops", "Or", "Order", "Orders", "Our", "Owner", "Partner", "Partners",
    "Payment", "Payments", "Pending", "People", "Person", "Personal", "Pharma", "Pharmacy",
    "Phone", "Plan", "Plans", "Plant", "Platform", "Platinum", "Plaza", "Please", "Plus",
    "Port", "Portal", "Post", "Power", "Premium", "Press", "Price", "Prime", "Priority", "Pro",
    "Product", "Products", "Prof", "Professional", "Project", "Projects", "Properties",
    "Province", "Pub", "Radio", "Rail", "Railway", "Rd", "Realty", "Records", "Ref",
    "Reference", "Refund", "Regards", "Region", "Relations", "Release", "Report", "Reported",
    "Reports", "Representative", "Request", "Requests", "Resolved", "Response", "Restaurant",
    "Review", "River", "Road", "Royal", "SA", "Saint", "Sales", "San", "Santa", "Sat",
    "Saturday", "School", "Security", "Sep", "Sept", "September", "Series", "Server", "Servers",
    "Service", "Services", "She", "Shipping", "Shoes", "Shop", "Silver", "Sincerely", "Sir",
    "Society", "Software", "Solutions", "South", "Southern", "Sports", "Square", "St",
    "Stadium", "Staff", "Standard", "State", "Station", "Status", "Store", "Street", "Studio",
    "Studios", "Subject", "Subscription", "Success", "Summary", "Sun", "Sunday", "Support",
    "System", "Systems", "Team", "Teams", "Tech", "Technologies", "Technology", "Telecom",
    "Television", "Terminal", "Thank", "Thanks", "That", "The", "Theater", "Theatre", "Their",
    "Then", "There", "These", "They", "This", "Those", "Thu", "Thursday", "Ticket", "Tickets",
    "Time", "Times", "To", "Today", "Tomorrow", "Total", "Tower", "Trace", "Tracking", "True",
    "Tue", "Tuesday", "Ultra", "Undefined", "United", "University", "Update", "Updated",
    "Updates", "Upper", "User", "Users", "Valley", "Valued", "Ventures", "Version", "Warehouse",
    "Warn", "Warning", "Was", "Way", "We", "Wed", "Wednesday", "Were", "West", "Western",
    "With", "Without", "Yes", "Yesterday", "You", "Your",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find_names(text, &mut out);
        assert!(
            out.windows(2).all(|w| w[0].1 <= w[1].0),
            "sorted, not overlapping: {out:?}"
        );
        out.iter().map(|&(s, e)| &text[s..e]).collect()
    }

    #[test]
    fn dictionaries_are_sorted_and_unique() {
        assert!(FIRST_NAMES.windows(2).all(|w| w[0] < w[1]));
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(PARTICLES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn dictionary_lookups_find_every_word_and_nothing_else() {
        for (words, slots) in [(FIRST_NAMES, &FIRST_SLOTS), (STOP_WORDS, &STOP_SLOTS)] {
            for w in words {
                assert!(contains(words, slots, w), "{w}");
                // A longer word with the same 8-byte prefix, a prefix, a
                // lowercase copy.
                assert!(!contains(words, slots, &format!("{w}zz")), "{w}zz");
                let shorter = &w[..w.char_indices().last().map_or(0, |(i, _)| i)];
                assert_eq!(contains(words, slots, shorter), words.contains(&shorter));
                let lower = w.to_lowercase();
                assert_eq!(
                    contains(words, slots, &lower),
                    words.contains(&lower.as_str())
                );
            }
            assert!(!contains(words, slots, ""));
        }
    }

    #[test]
    fn word_start_filter_matches_its_scalar_definition() {
        for prev in 0..=255u8 {
            for cur in 0..=255u8 {
                let expected = (cur.is_ascii_uppercase() || cur >= 0xC0)
                    && !(prev.is_ascii_alphanumeric() || prev == b'_');
                // A full block (`base` 8) and the padded last block.
                let mut bytes = [b'a'; 20];
                bytes[7] = prev;
                bytes[8] = cur;
                assert_eq!(
                    candidates(&bytes, 8) & 0x80 != 0,
                    expected,
                    "{prev:#x} {cur:#x}"
                );
                assert_eq!(
                    candidates(&bytes[..9], 8) & 0x80 != 0,
                    expected,
                    "{prev:#x} {cur:#x}"
                );
            }
        }
    }

    #[test]
    fn known_first_name_with_surname() {
        assert_eq!(
            names("Please ask Maria Garcia about the refund."),
            ["Maria Garcia"]
        );
        assert_eq!(
            names("cc: John F. Kennedy, Willem van der Berg"),
            ["John F. Kennedy", "Willem van der Berg"]
        );
        assert_eq!(
            names("Gabriel García Márquez wrote it"),
            ["Gabriel García Márquez"]
        );
        assert_eq!(
            names("Siobhan O'Brien-McAllister's order"),
            ["Siobhan O'Brien-McAllister"]
        );
        assert_eq!(
            names("Łukasz Wójcik i Дмитрий Иванов"),
            ["Łukasz Wójcik", "Дмитрий Иванов"]
        );
        assert_eq!(names("Jean-Luc Picard"), ["Jean-Luc Picard"]);
    }

    #[test]
    fn context_cues_find_names_outside_the_dictionary() {
        assert_eq!(
            names(r#"{"id": 7, "full_name": "Xiomara Okonkwo", "plan": "pro"}"#),
            ["Xiomara Okonkwo"]
        );
        assert_eq!(names("Dear Ms. Okonkwo, thank you"), ["Okonkwo"]);
        assert_eq!(names("customer: Bartholomew Quist"), ["Bartholomew Quist"]);
        assert_eq!(names(r#""last_name": "Quist""#), ["Quist"]);
        assert_eq!(
            names("Hi, my name is Tarquin Fenwick-Holt and"),
            ["Tarquin Fenwick-Holt"]
        );
    }

    #[test]
    fn ordinary_capitalised_words_are_not_names() {
        assert!(names("Maria said the Customer Support Team would call on Monday.").is_empty());
        assert!(names("Dear Customer, your Order Number is ready").is_empty());
        assert!(names("contact: Sales Department; name: Widget Pro").is_empty());
        assert!(names("GitHub Actions, JavaScript and ASCII ART").is_empty());
        assert!(names("Thomas2 Smith and maria garcia and MARIA GARCIA").is_empty());
        assert!(names(r#""hostname": "Web Node""#).is_empty());
        // A bare `name` field names products as often as people.
        assert!(names(r#"{"sku": "SKU-1", "name": "Pixel Stand"}"#).is_empty());
    }

    #[test]
    fn phrases_and_sign_offs_are_cues() {
        assert_eq!(names("Hello, I'm Xiomara Okonkwo."), ["Xiomara Okonkwo"]);
        assert_eq!(names("requested by Tadhg Quist"), ["Tadhg Quist"]);
        assert_eq!(names("Best regards,\nXiomara Okonkwo"), ["Xiomara Okonkwo"]);
        assert_eq!(names("Thanks,\nDaniel"), ["Daniel"]);
        assert_eq!(
            names(r#""customer_name": "Makoa I. Garcia""#),
            ["Makoa I. Garcia"]
        );
        assert!(names("Thanks,\nSupport Team").is_empty());
        assert_eq!(
            names("From: Eilidh Quist <eq@example.com>"),
            ["Eilidh Quist"]
        );
        assert!(names("a gift from Eilidh Quist").is_empty());
        assert_eq!(names("user Seo-yeon Jones (id 7)"), ["Seo-yeon Jones"]);
    }

    #[test]
    fn a_strong_cue_takes_a_single_word() {
        assert_eq!(names("Dear Anna,"), ["Anna"]);
        assert_eq!(names("Dr. Lindqvist will call"), ["Lindqvist"]);
        assert!(names("Anna, please call").is_empty());
    }

    #[test]
    fn ranges_are_char_boundaries_in_mixed_scripts() {
        let text = "请联系 Maria Garcia 🙂, или Sergei Petrov—merci, Zoë Ærøskøbing.";
        let mut out = Vec::new();
        find_names(text, &mut out);
        for &(s, e) in &out {
            assert!(text.get(s..e).is_some());
        }
        assert_eq!(
            names(text),
            ["Maria Garcia", "Sergei Petrov", "Zoë Ærøskøbing"]
        );
    }
}
