//! Vendor message ids: the keys under which a submit_sm_resp id is stored and the keys a
//! receipt's id is looked up by, so that a vendor writing hex in one place and decimal in the
//! other still correlates.
//!
//! Keys are plain ASCII strings in two namespaces:
//! - `x:<id>`: the id exactly as written (trimmed), case and leading zeros kept;
//! - `n:<hex>`: a numeric reading, as the value in lowercase hex without leading zeros (`"0"` for
//!   zero). Arbitrary precision, since some vendors' ids exceed 64 bits.
//!
//! A declared `Decimal` or `Hex` id that parses gets only its numeric key: an all-digit hex id
//! that happens to equal another message's decimal id is a different message, and an exact key
//! would pick it ahead of the right one. So `AsIs` pairs with `AsIs` or `Auto`, not with a
//! numeric format.

use num_bigint::BigUint;
use smpp_db::messaging::IdFormat;

/// Keys under which a submit_sm_resp id is stored, most specific first. Empty for an empty id.
pub fn submit_keys(id: &str, fmt: IdFormat) -> Vec<String> {
    keys(id, fmt)
}

/// Keys to look up for a receipt's id, in order: exact first, then each plausible numeric
/// reading. Same rules as [`submit_keys`], so a match is exactly a shared key; two names so
/// that callers say which side they are on.
pub fn receipt_keys(id: &str, fmt: IdFormat) -> Vec<String> {
    keys(id, fmt)
}

/// Whether a receipt id correlates with a submit id: some receipt key (tried in order) is
/// among the submit keys.
pub fn matches(
    submit_id: &str,
    submit_fmt: IdFormat,
    receipt_id: &str,
    receipt_fmt: IdFormat,
) -> bool {
    let stored = submit_keys(submit_id, submit_fmt);
    receipt_keys(receipt_id, receipt_fmt)
        .iter()
        .any(|k| stored.contains(k))
}

/// Whether a receipt that matched through its key number `matched` (of `receipt_keys(id,
/// fmt)`) may belong to another message whose mapping is not written yet. Only under `Auto`,
/// only through a numeric key, and only when the id reads as two different numbers (an
/// all-digit id of two digits or more): then a message written exactly like the receipt's id
/// would win over this match once stored (receipt `85` read as hex is message `133`'s decimal
/// reading, but message `85` is the one the vendor meant). Such a match waits for the exact
/// key (see `receipts::ReceiptHandler`).
pub fn match_is_uncertain(id: &str, fmt: IdFormat, matched: usize) -> bool {
    fmt == IdFormat::Auto && matched > 0 && keys(id, fmt).len() >= 3
}

fn keys(id: &str, fmt: IdFormat) -> Vec<String> {
    // NULs too: some vendors count the C string terminator into the id.
    let id = id.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if id.is_empty() {
        return Vec::new();
    }
    let exact = || format!("x:{id}");
    match fmt {
        IdFormat::AsIs => vec![exact()],
        IdFormat::Decimal => decimal(id).map_or_else(|| vec![exact()], |n| vec![numeric_key(&n)]),
        IdFormat::Hex => hex(id).map_or_else(|| vec![exact()], |n| vec![numeric_key(&n)]),
        IdFormat::Auto => {
            let mut out = vec![exact()];
            for n in [decimal(id), hex(id)].into_iter().flatten() {
                let k = numeric_key(&n);
                // "0".."9" read the same in both bases.
                if !out.contains(&k) {
                    out.push(k);
                }
            }
            out
        }
    }
}

fn numeric_key(n: &BigUint) -> String {
    format!("n:{n:x}")
}

/// Value of an all-decimal-digit id.
fn decimal(s: &str) -> Option<BigUint> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    BigUint::parse_bytes(s.as_bytes(), 10)
}

/// Value of an all-hex-digit id, any case, optional `0x`.
fn hex(s: &str) -> Option<BigUint> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    BigUint::parse_bytes(digits.as_bytes(), 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdFormat::*;

    #[test]
    fn as_is_is_exact_and_case_sensitive() {
        assert_eq!(submit_keys(" abc ", AsIs), vec!["x:abc"]);
        assert!(matches("abc", AsIs, "abc", AsIs));
        assert!(!matches("abc", AsIs, "ABC", AsIs));
        // No numeric reading: leading zeros matter.
        assert!(!matches("0012", AsIs, "12", AsIs));
    }

    #[test]
    fn decimal_reads_digits_and_falls_back_to_exact() {
        assert_eq!(submit_keys("00255", Decimal), vec!["n:ff"]);
        assert_eq!(submit_keys("0", Decimal), vec!["n:0"]);
        assert_eq!(submit_keys("000", Decimal), vec!["n:0"]);
        assert_eq!(submit_keys("12a", Decimal), vec!["x:12a"]);
        assert!(matches("00255", Decimal, "255", Decimal));
    }

    #[test]
    fn hex_reads_any_case_and_0x() {
        assert_eq!(submit_keys("00FF", Hex), vec!["n:ff"]);
        assert_eq!(submit_keys("0xfF", Hex), vec!["n:ff"]);
        assert_eq!(submit_keys("0x", Hex), vec!["x:0x"]);
        assert_eq!(submit_keys("zz-1", Hex), vec!["x:zz-1"]);
        assert!(matches("ABCDEF", Hex, "abcdef", Hex));
    }

    #[test]
    fn auto_is_exact_then_each_reading() {
        assert_eq!(submit_keys("00FF", Auto), vec!["x:00FF", "n:ff"]);
        assert_eq!(submit_keys("255", Auto), vec!["x:255", "n:ff", "n:255"]);
        assert_eq!(submit_keys("7", Auto), vec!["x:7", "n:7"]);
        assert_eq!(submit_keys("msg-1", Auto), vec!["x:msg-1"]);
        assert_eq!(receipt_keys("0x1F", Auto), vec!["x:0x1F", "n:1f"]);
    }

    #[test]
    fn empty_ids_have_no_keys() {
        for f in IdFormat::ALL {
            assert!(submit_keys("  \0", *f).is_empty());
            assert!(!matches("", *f, "", *f));
        }
    }

    #[test]
    fn hex_submit_matches_decimal_receipt() {
        assert!(matches("FF", Hex, "255", Decimal));
    }

    #[test]
    fn auto_with_leading_zeros_matches_decimal_reading() {
        assert!(matches("00FF", Auto, "255", Auto));
    }

    #[test]
    fn beyond_64_bits() {
        let dec = "12345678901234567890123"; // > 2^64
        assert_eq!(submit_keys(dec, Decimal), vec!["n:29d42b64e76714244cb"]);
        assert!(matches(dec, Decimal, "29D42B64E76714244CB", Hex));
        assert!(matches(dec, Auto, "0x29d42b64e76714244cb", Auto));
        assert!(!matches(dec, Decimal, "29D42B64E76714244CA", Hex));
    }

    #[test]
    fn cross_vendor_formats_match_only_on_a_shared_key() {
        // Hex in submit_sm_resp, decimal in the receipt: the same message.
        assert!(matches("1A2B", Hex, "6699", Decimal));
        // Same text, different declared bases: different messages, not an exact match.
        assert!(!matches("10", Hex, "10", Decimal));
        assert!(matches("10", Hex, "16", Decimal));
        // An unparsable id under a numeric format still matches itself exactly.
        assert!(matches("A-1", Decimal, "A-1", Hex));
        // AsIs keeps no numeric key, so it never meets a numeric format's key.
        assert!(!matches("255", AsIs, "255", Decimal));
        assert!(matches("255", AsIs, "255", Auto));
    }

    #[test]
    fn only_a_numeric_match_of_a_two_number_id_is_uncertain() {
        // "85" reads as 85 and as 0x85: matched through a reading, another message may be
        // written "85" exactly.
        assert!(match_is_uncertain("85", Auto, 1));
        assert!(match_is_uncertain("85", Auto, 2));
        // Through the exact key: certain.
        assert!(!match_is_uncertain("85", Auto, 0));
        // One reading only (hex letters, one digit, 0x): no other number to be confused with.
        assert!(!match_is_uncertain("1A2B", Auto, 1));
        assert!(!match_is_uncertain("7", Auto, 1));
        assert!(!match_is_uncertain("0x85", Auto, 1));
        // Declared formats have one reading.
        for f in [AsIs, Decimal, Hex] {
            assert!(!match_is_uncertain("85", f, 0));
            assert!(!match_is_uncertain("85", f, 1));
        }
    }

    #[test]
    fn lookup_order_prefers_exact() {
        // Two stored ids, "10" and "16", both plausible for receipt "16" under Auto: the exact
        // key comes first, so a lookup in order finds "16" before "10"-as-hex.
        let r = receipt_keys("16", Auto);
        assert_eq!(r[0], "x:16");
        assert!(submit_keys("16", Auto).contains(&r[0]));
        assert!(submit_keys("10", Auto).contains(&r[1]));
    }
}
