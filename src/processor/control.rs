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

use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, CreateView, Expr, Ident, ObjectName, ObjectType, SqlOption, Statement,
    Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

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

/// Whether `sql` starts with `CREATE MATERIALIZED VIEW` or `DROP MATERIALIZED VIEW`
/// (so that a statement that does not parse is reported as a control statement).
fn looks_like_control(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(3)
        .map(str::to_ascii_uppercase)
        .collect();
    matches!(
        words.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ["CREATE" | "DROP", "MATERIALIZED", "VIEW"]
    )
}

/// A view's name: one identifier, lower-cased unless quoted (as SQL names are).
fn name_of(kind: &str, name: &ObjectName) -> Result<String, String> {
    match &name.0[..] {
        [part] => match part.as_ident() {
            Some(Ident {
                value,
                quote_style: None,
                ..
            }) => Ok(value.to_ascii_lowercase()),
            Some(ident) => Ok(ident.value.clone()),
            None => Err(format!("{kind}: `{name}` is not a name")),
        },
        _ => Err(format!(
            "{kind}: `{name}` has a schema; continuous queries have plain names"
        )),
    }
}

/// `key = 'value'` (or a number, or a bare word) as strings.
fn option_of(o: &SqlOption) -> Result<(String, String), String> {
    let SqlOption::KeyValue { key, value } = o else {
        return Err(format!(
            "CREATE MATERIALIZED VIEW: option `{o}` must be key = 'value'"
        ));
    };
    let value = match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.to_string(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => {
            return Err(format!(
                "CREATE MATERIALIZED VIEW: option `{key}` = {other}: expected a quoted value"
            ))
        }
    };
    Ok((key.value.to_ascii_lowercase(), value))
}

fn create(v: CreateView) -> Result<Control, String> {
    const KIND: &str = "CREATE MATERIALIZED VIEW";
    let unsupported = [
        (v.or_replace || v.or_alter, "OR REPLACE (drop it first)"),
        (v.if_not_exists, "IF NOT EXISTS"),
        (
            !v.columns.is_empty(),
            "a column list (alias the columns in the SELECT)",
        ),
        (v.temporary, "TEMPORARY"),
        (v.to.is_some(), "TO"),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(found, _)| *found) {
        return Err(format!("{KIND}: {what} is not supported"));
    }
    let name = name_of(KIND, &v.name)?;
    let options = match &v.options {
        CreateTableOptions::None => Vec::new(),
        CreateTableOptions::With(opts) => opts.iter().map(option_of).collect::<Result<_, _>>()?,
        other => {
            return Err(format!(
                "{KIND}: write the options as WITH (key = 'value', ...), not {other}"
            ))
        }
    };
    Ok(Control::Create {
        name,
        options,
        sql: v.query.to_string(),
    })
}

/// Recognizes a control statement; `Ok(None)` for anything else (a pull query, which
/// the query engine parses and reports on).
pub fn parse(sql: &str) -> Result<Option<Control>, String> {
    let control = looks_like_control(sql.trim_start());
    let statements = match Parser::parse_sql(&GenericDialect {}, sql) {
        Ok(s) => s,
        Err(e) if control => return Err(e.to_string()),
        Err(_) => return Ok(None),
    };
    let [statement] = &statements[..] else {
        return if control {
            Err("send one statement at a time".into())
        } else {
            Ok(None)
        };
    };
    match statement {
        Statement::CreateView(v) if v.materialized => create(v.clone()).map(Some),
        Statement::Drop {
            object_type: ObjectType::MaterializedView,
            if_exists,
            names,
            cascade,
            ..
        } => {
            const KIND: &str = "DROP MATERIALIZED VIEW";
            let [name] = &names[..] else {
                return Err(format!("{KIND}: name one view at a time"));
            };
            if *cascade {
                return Err(format!(
                    "{KIND}: CASCADE is not supported (nothing depends on a view)"
                ));
            }
            Ok(Some(Control::Drop {
                name: name_of(KIND, name)?,
                if_exists: *if_exists,
            }))
        }
        _ => Ok(None),
    }
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
        // Quoted names keep their case; numbers and bare words are values too; the
        // query is kept as the parser prints it.
        assert_eq!(
            parse("CREATE MATERIALIZED VIEW \"Hot\" WITH (live_rows = 10, sinks = pg) AS select  a  from   s").unwrap(),
            Some(Control::Create {
                name: "Hot".into(),
                options: vec![
                    ("live_rows".into(), "10".into()),
                    ("sinks".into(), "pg".into())
                ],
                sql: "SELECT a FROM s".into()
            })
        );
        // A `)` inside a quoted option does not end the options.
        let Some(Control::Create { options, .. }) =
            parse("CREATE MATERIALIZED VIEW x WITH (sinks = 'a)b') AS SELECT 1").unwrap()
        else {
            panic!("a create")
        };
        assert_eq!(options, vec![("sinks".into(), "a)b".into())]);
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
            .contains("Expected: AS"));
    }

    #[test]
    fn bad_control_statements_say_what_is_wrong_and_pull_queries_pass_through() {
        let err = |sql: &str| parse(sql).expect_err(sql);
        assert!(err("CREATE MATERIALIZED VIEW s.x AS SELECT 1").contains("has a schema"));
        assert!(err("CREATE OR REPLACE MATERIALIZED VIEW x AS SELECT 1").contains("OR REPLACE"));
        assert!(err("CREATE MATERIALIZED VIEW x (a) AS SELECT 1").contains("column list"));
        assert!(err("DROP MATERIALIZED VIEW a, b").contains("one view at a time"));
        assert!(err("DROP MATERIALIZED VIEW a; SELECT 1").contains("one statement"));
        let e = err("create  materialized view x with (sinks 'pg') as select 1");
        assert!(e.contains("Line: 1, Column"), "{e}");
        // Not control statements: the query engine answers (and reports errors).
        assert_eq!(parse("SELEC 1").unwrap(), None);
        assert_eq!(parse("CREATE VIEW v AS SELECT 1").unwrap(), None);
        assert_eq!(parse("DROP TABLE t").unwrap(), None);
    }
}
