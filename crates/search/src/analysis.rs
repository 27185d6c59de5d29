//! Text analysis, shared by indexing and querying so that both see the same terms, and the parse
//! of what a fan types into words and quoted phrases.

use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer, TokenStream,
};

/// Name of the stemming analyzer in the index's tokenizer registry.
pub const STEMMED: &str = "marquee_en";
/// Lowercased and folded but not stemmed: what prefixes are matched against.
pub const FOLDED: &str = "marquee_folded";

/// Words longer than this are not indexed (nobody types them; they are usually garbage).
const MAX_TOKEN_BYTES: usize = 40;

pub fn stemmed() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

pub fn folded() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The tokens `analyzer` makes of `text`.
pub fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// How many edits a word of this many characters may be off by: none under 5 characters (short
/// words have too many neighbours), 1 up to 8, 2 beyond.
pub fn fuzzy_distance(chars: usize) -> u8 {
    match chars {
        0..=4 => 0,
        5..=8 => 1,
        _ => 2,
    }
}

/// One part of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    /// A single word as typed (matched exactly after stemming, fuzzily, and as a prefix if last).
    Word { text: String, last: bool },
    /// Words in quotes: matched as a phrase, no fuzziness.
    Phrase(String),
}

/// Splits a query into words and quoted phrases. An unclosed quote runs to the end. A query that
/// ends in a space does not treat its last word as a prefix (the fan finished typing it).
pub fn parse_query(text: &str) -> Vec<Clause> {
    let mut clauses = Vec::new();
    for (index, part) in text.split('"').enumerate() {
        if index % 2 == 1 {
            if !part.trim().is_empty() {
                clauses.push(Clause::Phrase(part.trim().to_string()));
            }
        } else {
            for word in part.split_whitespace() {
                clauses.push(Clause::Word {
                    text: word.to_string(),
                    last: false,
                });
            }
        }
    }
    let ends_open = !text.ends_with(char::is_whitespace) && !text.ends_with('"');
    if ends_open {
        if let Some(Clause::Word { last, .. }) = clauses.last_mut() {
            *last = true;
        }
    }
    clauses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_folds_and_lowercases() {
        let mut analyzer = stemmed();
        assert_eq!(
            tokens(&mut analyzer, "Concerts in Zürich"),
            ["concert", "in", "zurich"]
        );
        assert_eq!(tokens(&mut analyzer, "Beyoncé!!"), ["beyonc"]);
        let mut plain = folded();
        assert_eq!(tokens(&mut plain, "Beyoncé"), ["beyonce"]);
    }

    #[test]
    fn words_phrases_and_the_open_last_word() {
        assert_eq!(
            parse_query(r#"rock "swan lake" metal"#),
            vec![
                Clause::Word {
                    text: "rock".into(),
                    last: false
                },
                Clause::Phrase("swan lake".into()),
                Clause::Word {
                    text: "metal".into(),
                    last: true
                },
            ]
        );
        assert_eq!(
            parse_query("metal "),
            vec![Clause::Word {
                text: "metal".into(),
                last: false
            }]
        );
        assert_eq!(
            parse_query(r#""unclosed phrase"#),
            vec![Clause::Phrase("unclosed phrase".into())]
        );
        assert!(parse_query(r#"  "" "#).is_empty());
    }

    #[test]
    fn typo_budget_grows_with_length() {
        assert_eq!(fuzzy_distance(4), 0);
        assert_eq!(fuzzy_distance(5), 1);
        assert_eq!(fuzzy_distance(8), 1);
        assert_eq!(fuzzy_distance(9), 2);
    }
}
