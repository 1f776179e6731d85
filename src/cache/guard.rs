//! The cache's safety guards: what may be stored, and when a similar question
//! may share an answer. A wrong cached answer is worse than a slow right one, so
//! every guard refuses when in doubt.
//!
//! Embeddings cannot see these differences: "order 48213" and "order 48231"
//! score about 0.99 cosine, and "cancel my order" sits close to "cancel my
//! subscription". These rules catch what similarity alone cannot.

use std::collections::BTreeSet;

/// Words that flip a question's meaning.
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "without", "dont", "doesnt", "didnt", "cant", "cannot", "wont", "isnt",
    "arent", "wasnt", "havent", "hasnt", "shouldnt", "wouldnt", "couldnt", "nothing", "none",
];

/// Groups of terms that name different things of the same kind: two questions
/// naming different members of a group are about different things, however
/// similar the rest of the wording.
const CONTRAST_GROUPS: &[&[&str]] = &[
    // what the customer's question is about
    &[
        "order",
        "subscription",
        "membership",
        "account",
        "password",
        "email",
        "address",
        "card",
        "payment",
        "invoice",
        "refund",
        "return",
        "exchange",
        "package",
        "delivery",
        "shipping",
        "giftcard",
        "warranty",
        "coupon",
        "discount",
        "review",
        "newsletter",
        "item",
        "plan",
    ],
    // polarity of an action
    &["enable", "disable"],
    &["activate", "deactivate"],
    &["add", "remove", "delete"],
    &["start", "stop", "pause", "resume"],
    &["increase", "decrease", "upgrade", "downgrade"],
    &["open", "close", "closed"],
    &["lock", "unlock"],
    &["subscribe", "unsubscribe"],
    &["buy", "sell", "cancel", "return"],
    &["before", "after"],
    &["first", "last"],
    // time words
    &["today", "tomorrow", "yesterday", "tonight", "weekend"],
    &[
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ],
    &[
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ],
];

/// Lower-case words with apostrophes removed ("don't" → "dont").
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['\'', '’'], "")
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            // Plurals name the same thing: "orders" is "order".
            match w.strip_suffix('s') {
                Some(stem) if stem.len() > 3 && !w.ends_with("ss") => stem.to_string(),
                _ => w.to_string(),
            }
        })
        .collect()
}

/// The form two questions are compared in for an exact repeat: lower case,
/// punctuation and repeated spaces gone.
pub fn normalize(text: &str) -> String {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Words after which a number identifies a customer's own thing.
const ID_WORDS: &[&str] = &[
    "order",
    "account",
    "card",
    "invoice",
    "ticket",
    "customer",
    "membership",
    "tracking",
    "#",
];

/// Whether a text carries personal data that must never be cached: an email
/// address, a phone number, or an order/account-like number. Prices, years and
/// small quantities are not personal.
pub fn has_personal_data(text: &str) -> bool {
    let lower = text.to_lowercase();
    if lower
        .split_whitespace()
        .any(|w| w.contains('@') && w.contains('.'))
    {
        return true;
    }
    // Phone numbers: seven or more digits, separated at most by spaces, dashes,
    // parentheses or a plus.
    let mut phone_digits = 0;
    // Ids: five or more digits in one run.
    let mut run = 0;
    for c in lower.chars() {
        if c.is_ascii_digit() {
            phone_digits += 1;
            run += 1;
            if phone_digits >= 7 || run >= 5 {
                return true;
            }
        } else {
            run = 0;
            if !matches!(c, ' ' | '-' | '(' | ')' | '+') {
                phone_digits = 0;
            }
        }
    }
    // A number of three or more digits right after a word that names an id.
    let tokens: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ':' | '?' | '!'))
        .filter(|t| !t.is_empty())
        .collect();
    tokens.windows(2).any(|pair| {
        let word = pair[0].trim_start_matches('#');
        let names_id =
            ID_WORDS.contains(&pair[0]) || ID_WORDS.contains(&word) || pair[1].starts_with('#');
        let digits = pair[1].chars().filter(char::is_ascii_digit).count();
        names_id && digits >= 3
    }) || tokens
        .iter()
        .any(|t| t.starts_with('#') && t.chars().filter(char::is_ascii_digit).count() >= 3)
}

/// Why two questions must not share an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// They carry different numbers (quantities, ids, dates).
    Numbers,
    /// One is negated and the other not.
    Negation,
    /// They name different members of a contrast group ("order" vs "subscription").
    Term(String, String),
}

fn numbers(words: &[String]) -> BTreeSet<String> {
    words
        .iter()
        .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
        .cloned()
        .collect()
}

fn negated(words: &[String]) -> bool {
    words
        .iter()
        .filter(|w| NEGATIONS.contains(&w.as_str()))
        .count()
        % 2
        == 1
}

/// Checks whether a cached answer to `cached` may answer `asked`.
pub fn compatible(asked: &str, cached: &str) -> Result<(), Mismatch> {
    let (a, c) = (words(asked), words(cached));
    if numbers(&a) != numbers(&c) {
        return Err(Mismatch::Numbers);
    }
    if negated(&a) != negated(&c) {
        return Err(Mismatch::Negation);
    }
    for group in CONTRAST_GROUPS {
        let pick = |ws: &[String]| -> BTreeSet<String> {
            ws.iter()
                .filter(|w| group.contains(&w.as_str()))
                .cloned()
                .collect()
        };
        let (ga, gc) = (pick(&a), pick(&c));
        if !ga.is_empty() && !gc.is_empty() && ga != gc {
            let left = ga.difference(&gc).next().cloned().unwrap_or_default();
            let right = gc.difference(&ga).next().cloned().unwrap_or_default();
            return Err(Mismatch::Term(left, right));
        }
        // A term present on one side only, when the other side names none of its
        // group, changes the question too ("cancel" vs nothing is a different ask).
        if ga.is_empty() != gc.is_empty() && group.len() <= 4 {
            let term = ga
                .iter()
                .chain(gc.iter())
                .next()
                .cloned()
                .unwrap_or_default();
            return Err(Mismatch::Term(term, String::new()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_ignores_case_punctuation_and_spacing() {
        assert_eq!(
            normalize("  Where is MY order?? "),
            normalize("where is my order")
        );
        assert_ne!(
            normalize("where is my order"),
            normalize("where is my parcel")
        );
    }

    #[test]
    fn personal_data_is_detected() {
        assert!(has_personal_data("my email is jane.doe@example.com"));
        assert!(has_personal_data("call me at +1 (555) 010-9999"));
        assert!(has_personal_data("where is order 48213?"));
        assert!(has_personal_data("account #00771234"));
        assert!(!has_personal_data("How do I reset my password?"));
        assert!(has_personal_data("order 123 never came"));
        assert!(!has_personal_data("Is shipping free over $50?"));
        assert!(!has_personal_data(
            "Express shipping costs $12.95, standard $4.95."
        ));
        assert!(!has_personal_data(
            "Can I return it within 30 days of my 2025 order?"
        ));
    }

    #[test]
    fn different_numbers_never_share_an_answer() {
        assert_eq!(
            compatible("status of order 48213", "status of order 48231"),
            Err(Mismatch::Numbers)
        );
        assert_eq!(
            compatible(
                "can I return it after 30 days",
                "can I return it after 60 days"
            ),
            Err(Mismatch::Numbers)
        );
        assert_eq!(compatible("where is my order", "where is my order"), Ok(()));
    }

    #[test]
    fn negation_changes_the_question() {
        assert_eq!(
            compatible("my package arrived", "my package has not arrived"),
            Err(Mismatch::Negation)
        );
        assert_eq!(
            compatible("I can't log in", "I can log in"),
            Err(Mismatch::Negation)
        );
        assert_eq!(compatible("I can't log in", "I cannot log in"), Ok(()));
    }

    #[test]
    fn key_terms_that_change_the_meaning_refuse_a_hit() {
        assert!(matches!(
            compatible("cancel my order", "cancel my subscription"),
            Err(Mismatch::Term(..))
        ));
        assert!(matches!(
            compatible(
                "how do I enable notifications",
                "how do I disable notifications"
            ),
            Err(Mismatch::Term(..))
        ));
        assert!(matches!(
            compatible("deliver on monday", "deliver on friday"),
            Err(Mismatch::Term(..))
        ));
        assert!(matches!(
            compatible("pause my membership", "cancel my membership"),
            Err(Mismatch::Term(..))
        ));
    }

    #[test]
    fn paraphrases_pass() {
        assert_eq!(
            compatible(
                "How do I reset my password?",
                "I forgot my password, how can I change it?"
            ),
            Ok(())
        );
        assert_eq!(
            compatible("Where is my order?", "Where are my orders?"),
            Ok(())
        );
        assert_eq!(
            compatible("How long does a refund take?", "When will I get my refund?"),
            Ok(())
        );
    }
}
