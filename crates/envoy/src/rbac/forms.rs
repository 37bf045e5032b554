//! Istio's value forms (`abc`, `abc*`, `*abc`, `*`) as Envoy string matchers, and as the
//! regular expressions that match one segment of a SPIFFE ID, and back. Each direction
//! is the other's exact inverse, so a policy read back from RBAC has the forms it was
//! written with; a matcher of any other shape is refused.

use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatcher, StringMatcher,
};

/// What `*` (any non-empty value) is as a string matcher.
const NON_EMPTY: &str = ".+";
/// One segment of a SPIFFE ID, as a regular expression: any, or part of one.
const SEGMENT: &str = "[^/]+";
const PART: &str = "[^/]*";

fn regex(r: String) -> MatchPattern {
    MatchPattern::SafeRegex(RegexMatcher {
        regex: r,
        ..Default::default()
    })
}

/// A value form as a string matcher; `prefix` goes before exact and prefix forms (the
/// `spiffe://` of principals).
pub fn string_matcher(form: &str, prefix: &str, ignore_case: bool) -> StringMatcher {
    let pattern = if form == "*" {
        regex(NON_EMPTY.into())
    } else if let Some(p) = form.strip_suffix('*') {
        MatchPattern::Prefix(format!("{prefix}{p}"))
    } else if let Some(s) = form.strip_prefix('*') {
        MatchPattern::Suffix(s.to_string())
    } else {
        MatchPattern::Exact(format!("{prefix}{form}"))
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    }
}

/// The value form a string matcher written by [`string_matcher`] stands for.
pub fn form(m: &StringMatcher, prefix: &str, ignore_case: bool) -> Result<String, String> {
    let strip = |v: &str| {
        v.strip_prefix(prefix)
            .map(str::to_string)
            .ok_or_else(|| format!("{v:?} does not start with {prefix:?}"))
    };
    let form = match &m.match_pattern {
        Some(MatchPattern::SafeRegex(r)) if r.regex == NON_EMPTY => return Ok("*".into()),
        Some(MatchPattern::Exact(e)) => {
            let e = strip(e)?;
            if e.starts_with('*') || e.ends_with('*') {
                return Err(format!("exact {e:?}: a value with a leading or trailing * is a wildcard in Istio's forms"));
            }
            e
        }
        Some(MatchPattern::Prefix(p)) => {
            let p = strip(p)?;
            if p.is_empty() {
                return Err(
                    "an empty prefix matches empty values, which no Istio form does".into(),
                );
            }
            format!("{p}*")
        }
        Some(MatchPattern::Suffix(s)) => {
            if s.is_empty() || s.ends_with('*') {
                return Err(format!("suffix {s:?} has no Istio form"));
            }
            format!("*{s}")
        }
        Some(MatchPattern::SafeRegex(r)) => {
            return Err(format!(
                "regex {:?}: only {NON_EMPTY:?} (any non-empty value) is supported",
                r.regex
            ))
        }
        Some(MatchPattern::Contains(_)) => return Err("contains has no Istio form".into()),
        Some(MatchPattern::Custom(c)) => {
            return Err(format!("custom matcher {} is not supported", c.name))
        }
        None => return Err("no match pattern".into()),
    };
    if m.ignore_case != ignore_case {
        return Err(format!("ignore_case must be {ignore_case} here"));
    }
    Ok(form)
}

/// A value form as a regular expression matching within one segment of a SPIFFE ID.
pub fn segment_regex(form: &str) -> String {
    if form == "*" {
        SEGMENT.into()
    } else if let Some(p) = form.strip_suffix('*') {
        format!("{}{PART}", regex::escape(p))
    } else if let Some(s) = form.strip_prefix('*') {
        format!("{PART}{}", regex::escape(s))
    } else {
        regex::escape(form)
    }
}

/// The value form a regular expression written by [`segment_regex`] stands for.
pub fn segment_form(re: &str) -> Result<String, String> {
    if re == SEGMENT {
        return Ok("*".into());
    }
    let (form, literal) = if let Some(p) = re.strip_suffix(PART) {
        let p = literal(p)?;
        (format!("{p}*"), p)
    } else if let Some(s) = re.strip_prefix(PART) {
        let s = literal(s)?;
        if s.ends_with('*') {
            return Err(format!("{re:?} has no Istio form"));
        }
        (format!("*{s}"), s)
    } else {
        let e = literal(re)?;
        if e.starts_with('*') || e.ends_with('*') {
            return Err(format!("{re:?} has no Istio form"));
        }
        (e.clone(), e)
    };
    if literal.is_empty() {
        return Err(format!("{re:?} has no Istio form"));
    }
    Ok(form)
}

/// The text an escaped regular expression literal matches; anything but a literal is
/// refused.
fn literal(re: &str) -> Result<String, String> {
    let mut out = String::with_capacity(re.len());
    let mut chars = re.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() => out.push(e),
                _ => return Err(format!("{re:?} is not a literal")),
            },
            '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                return Err(format!("{re:?} is not a literal"))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_round_trip_through_string_matchers_and_regexes() {
        for f in ["a", "a*", "*a", "*", "a.b*", "*(x)", "sp ace", "a*b"] {
            for (prefix, case) in [("", false), ("spiffe://", false), ("", true)] {
                let m = string_matcher(f, prefix, case);
                assert_eq!(form(&m, prefix, case).as_deref(), Ok(f), "{f} {prefix}");
            }
            assert_eq!(segment_form(&segment_regex(f)).as_deref(), Ok(f), "{f}");
        }
    }

    #[test]
    fn matchers_without_an_istio_form_are_refused() {
        let m = |p: MatchPattern| StringMatcher {
            match_pattern: Some(p),
            ignore_case: false,
        };
        for bad in [
            m(MatchPattern::Exact("*a".into())),
            m(MatchPattern::Prefix(String::new())),
            m(MatchPattern::Suffix("a*".into())),
            m(MatchPattern::Contains("a".into())),
            m(regex(".*".into())),
            StringMatcher::default(),
        ] {
            assert!(form(&bad, "", false).is_err(), "{bad:?}");
        }
        // Case-insensitive where case matters, and the reverse.
        assert!(form(&string_matcher("a", "", true), "", false).is_err());
        assert!(form(&string_matcher("a", "", false), "", true).is_err());
        assert!(form(&string_matcher("a", "", false), "spiffe://", false).is_err());
        for bad in [".*", "a.b", "[^/]*", "a\\", "(x)", "[^/]*a\\*"] {
            assert!(segment_form(bad).is_err(), "{bad}");
        }
    }
}
