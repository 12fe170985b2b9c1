//! Recognising a wrongly pasted token before Meta does (reference section 9, mistake 6).
//!
//! The wrong string in `WHATSAPP_ACCESS_TOKEN` is one of the commonest outages: the webhook
//! verify token, the app secret, an app token `digits|secret`, a value in quotes or with
//! whitespace, a `Bearer ` prefix, a whole `KEY=value` line, or an empty value. Pure: the
//! findings name what the value looks like, never the value.

/// Something wrong with how a token value looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// The value is empty (an env file that was never loaded).
    Empty,
    /// Leading or trailing whitespace or a newline.
    Whitespace,
    /// Wrapped in quotes.
    Quoted,
    /// Starts with `Bearer `.
    BearerPrefix,
    /// A whole `KEY=value` line.
    EnvLine,
    /// An app access token `APP_ID|APP_SECRET`.
    AppToken,
    /// 32 hexadecimal characters: an app secret.
    AppSecret,
    /// Too short for a Graph access token: probably a webhook verify token or a password.
    TooShort,
    /// Contains characters that never appear in Graph tokens.
    OddCharacters,
}

impl Finding {
    /// What the value looks like and what to do, in plain words.
    pub fn explain(self) -> &'static str {
        match self {
            Finding::Empty => {
                "the value is empty: the variable or file was never filled or never loaded; paste the token from Business Manager"
            }
            Finding::Whitespace => {
                "the value has spaces or a line break around it; remove them (Meta rejects the token with them)"
            }
            Finding::Quoted => "the value is wrapped in quotes; store the token without quotes",
            Finding::BearerPrefix => {
                "the value starts with `Bearer `; store only the token, the `Bearer ` prefix belongs in the HTTP header"
            }
            Finding::EnvLine => {
                "the value is a whole `KEY=value` line; store only the part after `=`"
            }
            Finding::AppToken => {
                "the value is an app access token (`APP_ID|APP_SECRET`), not a system-user token; generate a system-user token in Business Manager"
            }
            Finding::AppSecret => {
                "the value looks like an app secret (32 hexadecimal characters), not an access token; generate a system-user token in Business Manager"
            }
            Finding::TooShort => {
                "the value is too short to be a Graph access token; it may be the webhook verify token or a password"
            }
            Finding::OddCharacters => {
                "the value contains characters that never appear in Graph access tokens; check what was pasted"
            }
        }
    }
}

/// Inspects a token value and lists everything that looks wrong, most telling first.
pub fn check_value(value: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    if value.is_empty() {
        return vec![Finding::Empty];
    }
    if value.trim() != value {
        out.push(Finding::Whitespace);
    }
    let v = value.trim();
    if v.is_empty() {
        return vec![Finding::Empty];
    }
    let quoted = |q: char| v.len() >= 2 && v.starts_with(q) && v.ends_with(q);
    if quoted('"') || quoted('\'') {
        out.push(Finding::Quoted);
    }
    let v = v.trim_matches(|c| c == '"' || c == '\'');
    // `get`, not `[..7]`: a pasted value may have a multi-byte character there.
    if v.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
    {
        out.push(Finding::BearerPrefix);
    } else if let Some((key, _)) = v.split_once('=')
        && !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        out.push(Finding::EnvLine);
    }
    if let Some((id, secret)) = v.split_once('|')
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && !secret.is_empty()
    {
        out.push(Finding::AppToken);
    }
    if v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        out.push(Finding::AppSecret);
    } else if v.len() < 40 && !out.contains(&Finding::AppToken) {
        out.push(Finding::TooShort);
    }
    if out.is_empty()
        && !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.|".contains(&b))
    {
        out.push(Finding::OddCharacters);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Finding::*;

    #[test]
    fn each_common_mistake_is_recognised() {
        let good = format!("EAAG{}", "a1B2".repeat(45));
        let cases: Vec<(String, Vec<Finding>)> = vec![
            (good.clone(), vec![]),
            (String::new(), vec![Empty]),
            ("   \n".into(), vec![Empty]),
            (format!(" {good}\n"), vec![Whitespace]),
            (format!("\"{good}\""), vec![Quoted]),
            (format!("'{good}'"), vec![Quoted]),
            (format!("Bearer {good}"), vec![BearerPrefix]),
            (format!("WHATSAPP_ACCESS_TOKEN={good}"), vec![EnvLine]),
            (
                "634974688087057|a3f1c0de5b7e4d2c9f8a6b4c2d0e1f37".into(),
                vec![AppToken],
            ),
            ("a3f1c0de5b7e4d2c9f8a6b4c2d0e1f37".into(), vec![AppSecret]),
            ("my-verify-token".into(), vec![TooShort]),
            (format!("EAAG{}é", "x".repeat(60)), vec![OddCharacters]),
            // Regression: a multi-byte character across byte 7 used to panic the Bearer check.
            (format!("EAAGxxé{}", "x".repeat(60)), vec![OddCharacters]),
        ];
        for (value, want) in cases {
            assert_eq!(check_value(&value), want, "{value:?}");
        }
        for f in [
            Empty,
            Whitespace,
            Quoted,
            BearerPrefix,
            EnvLine,
            AppToken,
            AppSecret,
            TooShort,
            OddCharacters,
        ] {
            assert!(!f.explain().is_empty());
        }
    }
}
