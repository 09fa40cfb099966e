//! The stdout sink: one JSON object per row and line, with the query's name in
//! `"_query"`; a retraction is a line of the identity's columns with
//! `"_retracted":true`.

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use tokio::io::AsyncWriteExt;

use crate::json::rows_as_json_lines;
use crate::{QueryShape, Result, Sink};

/// Writes JSON lines to standard output.
pub struct StdoutSink {
    name: String,
}

impl StdoutSink {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
        }
    }
}

#[async_trait]
impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(&self, _shape: &QueryShape) -> Result<()> {
        Ok(())
    }

    async fn retract(&self, shape: &QueryShape, ids: &RecordBatch) -> Result<()> {
        let prefix = format!(
            "{{\"_query\":{},\"_retracted\":true,",
            serde_json::Value::String(shape.query.clone())
        );
        print_lines(&prefix, ids).await
    }

    async fn write(&self, shape: &QueryShape, batch: &RecordBatch) -> Result<()> {
        let prefix = format!(
            "{{\"_query\":{},",
            serde_json::Value::String(shape.query.clone())
        );
        print_lines(&prefix, batch).await
    }
}

/// Prints each row of `batch` as a JSON object whose first members are `prefix`'s.
async fn print_lines(prefix: &str, batch: &RecordBatch) -> Result<()> {
    let lines = rows_as_json_lines(batch)?;
    let mut out = Vec::with_capacity(lines.len() + batch.num_rows() * prefix.len());
    for line in lines.split(|b| *b == b'\n').filter(|l| l.len() > 1) {
        out.extend_from_slice(prefix.as_bytes());
        // `line` starts with `{`; an empty object is `{}`.
        if line == b"{}" {
            out.pop();
            out.extend_from_slice(b"}");
        } else {
            out.extend_from_slice(&line[1..]);
        }
        out.push(b'\n');
    }
    let mut stdout = tokio::io::stdout();
    stdout.write_all(&out).await?;
    stdout.flush().await?;
    Ok(())
}
