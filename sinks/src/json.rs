//! Rows as JSON.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::json::LineDelimitedWriter;

use crate::Result;

/// One JSON object per row, as lines.
pub fn rows_as_json_lines(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut w = LineDelimitedWriter::new(Vec::new());
    w.write(batch)?;
    w.finish()?;
    Ok(w.into_inner())
}

/// One JSON object per row.
pub fn rows_as_json(
    batch: &RecordBatch,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let bytes = rows_as_json_lines(batch)?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        out.push(v);
    }
    Ok(out)
}
