//! Differential tests: for generated route tables and paths, every engine gives the
//! same rule as plain sequential first match with the `regex` crate.

use proptest::prelude::*;
use trellis_matcher::{Engine, Limits, PathIndex, PathPattern, PathRule};

/// Path pieces chosen to collide: shared prefixes, ASCII case pairs, and Unicode
/// with case folding (ß, É/é, the Kelvin sign K, long s ſ).
const PIECES: &[&str] = &[
    "/", "a", "A", "api", "API", "v1", "v2", "ab", "é", "É", "ß", "K", "k", "ſ", "s", "x.js", "-",
    "0", "42", "日本",
];

const REGEX_PIECES: &[&str] = &[
    "/", "a", "api", "v[0-9]+", "[a-z]+", "[^/]*", ".*", ".", "(a|ab)", "\\d", "\\w+", "é?", "k",
    "s", "(?i:api)", "[A-Z]", "x\\.js", "日本", "[éÉ]", "ß", "^/", "$", "(v1|v2)/", "\\d{1,2}",
    "\\b", "\\bk",
];

fn pieces(from: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(from), 0..max).prop_map(|v| v.concat())
}

fn rule() -> impl Strategy<Value = PathRule> {
    let pattern = prop_oneof![
        pieces(PIECES, 5).prop_map(|p| PathPattern::Exact(format!("/{p}"))),
        pieces(PIECES, 4).prop_map(|p| PathPattern::Prefix(format!("/{p}"))),
        pieces(REGEX_PIECES, 6).prop_map(|p| PathPattern::Regex(format!("/{p}"))),
        pieces(REGEX_PIECES, 6).prop_map(PathPattern::Regex),
    ];
    (pattern, any::<bool>()).prop_map(|(pattern, ignore_case)| PathRule {
        pattern,
        ignore_case,
    })
}

#[path = "common/reference.rs"]
mod reference;
use reference::Sequential;

fn check(rules: &[PathRule], paths: &[String], refused: &[usize]) -> Result<(), TestCaseError> {
    let accept = |i: usize| !refused.contains(&i);
    let reference = Sequential::new(rules);
    for &engine in Engine::available() {
        let index = PathIndex::build(rules, engine, Limits::default());
        if let (Engine::Hyperscan, Err(e)) = (engine, &index) {
            // Hyperscan lacks a few constructs the regex crate has (an anchor in the
            // middle of a pattern) and caps pattern length (several Unicode `\w`): it
            // must refuse those by name, never answer differently.
            let msg = e.to_string();
            prop_assert!(
                msg.contains("not supported")
                    || msg.contains("unsupported")
                    || msg.contains("exceeds limit"),
                "{msg}"
            );
            continue;
        }
        let (Some(reference), Ok(index)) = (&reference, &index) else {
            // Both must refuse an invalid table.
            prop_assert!(
                reference.is_none() && index.is_err(),
                "{engine:?}: reference valid={} index={:?}",
                reference.is_some(),
                index.as_ref().err()
            );
            continue;
        };
        for path in paths {
            let want = reference.first(path, accept);
            let got = index.first_match(path, accept);
            prop_assert_eq!(got, want, "{:?} on {:?}", engine, path);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn engines_agree_with_sequential_first_match(
        rules in prop::collection::vec(rule(), 1..24),
        paths in prop::collection::vec(pieces(PIECES, 6).prop_map(|p| format!("/{p}")), 1..24),
        refused in prop::collection::vec(0usize..24, 0..6),
    ) {
        check(&rules, &paths, &refused)?;
    }
}

fn regex(p: &str, ignore_case: bool) -> PathRule {
    PathRule {
        pattern: PathPattern::Regex(p.into()),
        ignore_case,
    }
}

#[test]
fn unicode_case_folding_matches_the_regex_crate() {
    let rules = [
        regex("/straße", true),
        regex("/k", true),
        regex("/é+", true),
    ];
    let paths = ["/STRASSE", "/STRAßE", "/K", "/\u{212A}", "/ÉéÉ", "/ss"];
    check(&rules, &paths.map(String::from), &[]).unwrap();
}

#[test]
fn refused_lowest_match_falls_back_to_the_next_pattern() {
    // Same path pattern for two methods, as route tables often have.
    let rules = [
        regex("/users/[0-9]+", false),
        regex("/users/.*", false),
        regex("/users/[0-9]+", false),
    ];
    for &engine in Engine::available() {
        let index = PathIndex::build(&rules, engine, Limits::default()).unwrap();
        assert_eq!(index.first_match("/users/7", |_| true), Some(0));
        assert_eq!(index.first_match("/users/7", |i| i != 0), Some(1));
        assert_eq!(index.first_match("/users/7", |i| i == 2), Some(2));
        assert_eq!(index.first_match("/users/x", |i| i == 2), None);
    }
}

#[test]
fn errors_name_the_pattern() {
    for &engine in Engine::available() {
        let err = PathIndex::build(
            &[regex("/ok", false), regex("/bad(", false)],
            engine,
            Limits::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("\"/bad(\""), "{engine:?}: {err}");

        // A pattern that escapes its wrapping is refused, not reinterpreted.
        let err = PathIndex::build(&[regex("/a)|(/b", false)], engine, Limits::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/a)|(/b"), "{engine:?}: {err}");

        let limits = Limits {
            max_program_bytes: 64 << 10,
            ..Limits::default()
        };
        let rules: Vec<_> = (0..50)
            .map(|i| regex(&format!("/r{i}/\\w{{1,20}}"), false))
            .collect();
        let err = PathIndex::build(&rules, engine, limits)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("too large") && err.contains("/r"),
            "{engine:?}: {err}"
        );
    }
}

#[cfg(not(feature = "hyperscan"))]
#[test]
fn hyperscan_is_refused_when_not_built_in() {
    let err = PathIndex::build(&[regex("/a", false)], Engine::Hyperscan, Limits::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("--features hyperscan"), "{err}");
}
