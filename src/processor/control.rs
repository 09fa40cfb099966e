//! Statements that change what runs: continuous queries are created and dropped as
//! materialized views, over HTTP and the PostgreSQL wire alike.
//!
//! ```sql
//! CREATE MATERIALIZED VIEW temp_1m [WITH (sinks = 'pg,stdout', allowed_lateness = '10s', live_rows = '100000')]
//!   AS SELECT sensor, tumble(ts, INTERVAL '1 minute') AS w, avg(value) AS mean FROM readings GROUP BY 1, 2;
//! DROP MATERIALIZED VIEW [IF EXISTS] temp_1m;
//! ```
//!
//! `SELECT * FROM edgeflow_queries` lists the running queries. Anything else is a pull
//! query.

/// A control statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    Create {
        name: String,
        options: Vec<(String, String)>,
        sql: String,
    },
    Drop {
        name: String,
        if_exists: bool,
    },
}

/// Splits leading words off `s` (case-insensitive match of `words`); returns the rest.
fn strip_words<'a>(s: &'a str, words: &[&str]) -> Option<&'a str> {
    let mut rest = s.trim_start();
    for w in words {
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '(')
            .unwrap_or(rest.len());
        if !rest[..end].eq_ignore_ascii_case(w) {
            return None;
        }
        rest = rest[end..].trim_start();
    }
    Some(rest)
}

fn ident(s: &str) -> Result<(String, &str), String> {
    let s = s.trim_start();
    if let Some(inner) = s.strip_prefix('"') {
        let end = inner.find('"').ok_or("unterminated quoted name")?;
        return Ok((inner[..end].to_string(), &inner[end + 1..]));
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    if end == 0 {
        return Err("expected a name".into());
    }
    Ok((s[..end].to_ascii_lowercase(), &s[end..]))
}

/// The index of the `)` closing the options (quotes respected).
fn close_paren(s: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            ')' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// `a = 'x, y', b = 2` → [`a = 'x, y'`, `b = 2`] (commas inside quotes kept).
fn split_options(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut start) = (false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|kv| !kv.trim().is_empty()).collect()
}

/// Recognizes a control statement; `Ok(None)` for anything else.
pub fn parse(sql: &str) -> Result<Option<Control>, String> {
    let sql = sql.trim().trim_end_matches(';').trim();
    if let Some(rest) = strip_words(sql, &["CREATE", "MATERIALIZED", "VIEW"]) {
        let (name, mut rest) = ident(rest).map_err(|e| format!("CREATE MATERIALIZED VIEW: {e}"))?;
        let mut options = Vec::new();
        if let Some(r) = strip_words(rest, &["WITH"]) {
            let r = r
                .strip_prefix('(')
                .ok_or("CREATE MATERIALIZED VIEW: expected ( after WITH")?;
            let end =
                close_paren(r).ok_or("CREATE MATERIALIZED VIEW: expected ) after the options")?;
            for kv in split_options(&r[..end]) {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    format!(
                        "CREATE MATERIALIZED VIEW: option `{}` must be key = 'value'",
                        kv.trim()
                    )
                })?;
                let v = v.trim().trim_matches('\'').to_string();
                options.push((k.trim().to_ascii_lowercase(), v));
            }
            rest = &r[end + 1..];
        }
        let select = strip_words(rest, &["AS"])
            .ok_or("CREATE MATERIALIZED VIEW name [WITH (...)] AS SELECT ...: expected AS")?;
        return Ok(Some(Control::Create {
            name,
            options,
            sql: select.trim().to_string(),
        }));
    }
    if let Some(rest) = strip_words(sql, &["DROP", "MATERIALIZED", "VIEW"]) {
        let (if_exists, rest) = match strip_words(rest, &["IF", "EXISTS"]) {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (name, tail) = ident(rest).map_err(|e| format!("DROP MATERIALIZED VIEW: {e}"))?;
        if !tail.trim().is_empty() {
            return Err(format!(
                "DROP MATERIALIZED VIEW {name}: unexpected `{}`",
                tail.trim()
            ));
        }
        return Ok(Some(Control::Drop { name, if_exists }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_with_options_and_drop_parse() {
        let c = parse("create materialized view Hot WITH (sinks = 'pg,stdout', allowed_lateness='5s') AS SELECT 1;").unwrap();
        assert_eq!(
            c,
            Some(Control::Create {
                name: "hot".into(),
                options: vec![
                    ("sinks".into(), "pg,stdout".into()),
                    ("allowed_lateness".into(), "5s".into())
                ],
                sql: "SELECT 1".into()
            })
        );
        assert_eq!(
            parse("DROP MATERIALIZED VIEW IF EXISTS hot").unwrap(),
            Some(Control::Drop {
                name: "hot".into(),
                if_exists: true
            })
        );
        assert_eq!(parse("SELECT * FROM hot").unwrap(), None);
        assert!(parse("CREATE MATERIALIZED VIEW x SELECT 1")
            .unwrap_err()
            .contains("expected AS"));
    }
}
