//! Check-digit algorithms that tell a real card number or IBAN from a run
//! of digits that merely has the right shape.
//!
//! Most long digit runs in tool output are order numbers, timestamps and
//! ids; a shape-only detector would mask them all and a user would stop
//! trusting the masks. The issuers' own checks reject about nine in ten
//! (Luhn) and ninety-six in ninety-seven (mod-97) of such runs, so the
//! detectors in [`super::detect`] report only numbers that pass them.
//! Custom rules reuse the same two functions (`validate = "luhn"`).
//!
//! Both are allocation-free and total: any input gives `true` or `false`.

/// The Luhn check (ISO/IEC 7812-1 annex B) over the ASCII digits of `s`;
/// every other character is ignored, so `"4111 1111-1111.1111"` is read as
/// `4111111111111111`. Fewer than two digits never pass.
pub fn luhn(s: &str) -> bool {
    luhn_digits(s.bytes().rev().filter(u8::is_ascii_digit).map(|b| b - b'0'))
}

/// The Luhn check over digit values (0–9) given from the last (check)
/// digit to the first.
pub(crate) fn luhn_digits(rev: impl Iterator<Item = u8>) -> bool {
    let mut sum = 0u32;
    let mut count = 0usize;
    for (i, d) in rev.enumerate() {
        let d = u32::from(d);
        sum += if i % 2 == 1 {
            // Doubled digits above 9 contribute their digit sum (d*2 - 9).
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
        count += 1;
    }
    count >= 2 && sum.is_multiple_of(10)
}

/// The IBAN check (ISO 13616-1, ISO 7064 MOD 97-10): the first four
/// characters moved to the end, letters read as 10..=35, the number taken
/// mod 97 must be 1. Spaces are ignored and letters may be of either case;
/// any other character, or fewer than five characters, fails. The length
/// per country is not checked here (the detector does that).
pub fn iban_mod97(s: &str) -> bool {
    let chars = || s.bytes().filter(|&b| b != b' ');
    let n = chars().count();
    if !(5..=34).contains(&n) {
        return false;
    }
    let mut rem = 0u32;
    for b in chars().skip(4).chain(chars().take(4)) {
        rem = match b {
            b'0'..=b'9' => (rem * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(b - b'A') + 10) % 97,
            b'a'..=b'z' => (rem * 100 + u32::from(b - b'a') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_answers() {
        // The textbook example and the well-known test card numbers.
        assert!(luhn("79927398713"));
        assert!(!luhn("79927398710"));
        assert!(luhn("4111111111111111"));
        assert!(luhn("5555555555554444"));
        assert!(luhn("378282246310005"));
        assert!(luhn("6011111111111117"));
        assert!(luhn("3530111333300000"));
        assert!(luhn("30569309025904"));
        assert!(!luhn("4111111111111112"));
        assert!(!luhn("1234567812345678"));
    }

    #[test]
    fn luhn_ignores_separators_and_needs_two_digits() {
        assert!(luhn("4111 1111-1111.1111"));
        assert!(luhn("4111\u{200b}1111\u{200b}1111\u{200b}1111"));
        assert!(!luhn(""));
        assert!(!luhn("0"));
        assert!(luhn("00"));
        assert!(!luhn("no digits"));
    }

    #[test]
    fn mod97_known_answers() {
        // Examples from the ECBS/SWIFT IBAN registry.
        assert!(iban_mod97("DE89370400440532013000"));
        assert!(iban_mod97("GB82 WEST 1234 5698 7654 32"));
        assert!(iban_mod97("GB29NWBK60161331926819"));
        assert!(iban_mod97("FR1420041010050500013M02606"));
        assert!(iban_mod97("NL91ABNA0417164300"));
        assert!(iban_mod97("BE68539007547034"));
        assert!(iban_mod97("NO9386011117947"));
        assert!(iban_mod97("CH9300762011623852957"));
        assert!(iban_mod97("gb82west12345698765432"));
    }

    #[test]
    fn mod97_rejects_wrong_check_and_junk() {
        assert!(!iban_mod97("DE89370400440532013001"));
        assert!(!iban_mod97("GB83WEST12345698765432"));
        assert!(!iban_mod97("DE89-3704-0044-0532-0130-00"));
        assert!(!iban_mod97("DE89"));
        assert!(!iban_mod97(""));
        assert!(!iban_mod97("DE89370400440532013000ÄÖ"));
    }
}
