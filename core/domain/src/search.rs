//! Search folding: one function turns any text into the form both store backends index, so that
//! a query matches regardless of case, accents or Greek final sigma, and phone numbers match
//! whatever way they were typed.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Folds text for accent- and case-insensitive matching, for Greek and Latin alike:
/// canonical decomposition, combining marks removed, lowercase, final sigma as sigma,
/// runs of whitespace as one space.
pub fn fold_for_search(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.nfkd().filter(|c| !is_combining_mark(*c)) {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        for lower in c.to_lowercase() {
            out.push(if lower == 'ς' { 'σ' } else { lower });
        }
    }
    out
}

/// Splits a user's query into folded terms; every term must match. A term that reads as a phone
/// number (digits with the usual separators, at least 6 digits) is reduced to its digits, and
/// international prefixes (`+`, `00`) are dropped, so "+30 694…" and "0030694…" search the same
/// digits that the store indexes for E.164 numbers.
pub fn search_terms(query: &str, phone_digits: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let trimmed = query.trim();
    if let Some(digits) = phone_digits(trimmed) {
        return vec![digits];
    }
    fold_for_search(trimmed).split(' ').filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn greek_accents_case_and_final_sigma_fold_together() {
        assert_eq!(fold_for_search("Στέλιος Μπιμπης"), "στελιοσ μπιμπησ");
        assert_eq!(fold_for_search("στελιος μπιμπης"), "στελιοσ μπιμπησ");
        assert_eq!(fold_for_search("ΆΓΙΟΣ   ΝΙΚΌΛΑΟΣ"), "αγιοσ νικολαοσ");
        assert_eq!(fold_for_search("Ϊ ϋ ΐ"), "ι υ ι");
    }

    #[test]
    fn latin_accents_fold() {
        assert_eq!(fold_for_search("Frédérique Citeaux"), "frederique citeaux");
        assert_eq!(fold_for_search("Martín Sommer"), "martin sommer");
    }

    #[test]
    fn terms_split_on_whitespace() {
        assert_eq!(search_terms("  Ιερός  Ναός ", |_| None), vec!["ιεροσ", "ναοσ"]);
        assert_eq!(search_terms("+30 694", |_| Some("30694".into())), vec!["30694"]);
    }

    proptest! {
        #[test]
        fn folding_is_idempotent(s in "\\PC{0,40}") {
            let once = fold_for_search(&s);
            prop_assert_eq!(fold_for_search(&once), once.clone());
        }

        #[test]
        fn folding_ignores_case(s in "[a-zA-Zα-ωΑ-Ω ]{0,30}") {
            prop_assert_eq!(fold_for_search(&s.to_uppercase()), fold_for_search(&s.to_lowercase()));
        }
    }
}
