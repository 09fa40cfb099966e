//! Window state as Arrow IPC: what a checkpoint stores for a query's window stages.
//!
//! One IPC stream with one batch, a row per (key, window) group:
//!
//! | column | type | |
//! |---|---|---|
//! | `key_0` .. | the group keys' own types | the key values (not Arrow's row format, which is no storage format) |
//! | `slot` | UInt32 | the group's slot (emission order among windows ending together) |
//! | `start`, `end` | Int64 | the window (ms) |
//! | `dirty`, `handed` | Boolean | see [`GroupState`] |
//! | `origin` | Int32 | the partition the window's partials came from (final stage): NULL none yet, -1 several; read as several when absent |
//! | `shown` | List of Int64 | the window starts its rows are shown under (final stage; read as empty when absent) |
//! | `agg_<j>_...` | per aggregate | its partial state: `count` (Int64); `sum` (Float64) and `n` (UInt64); `value` (Float64, NULL when none yet) for min and max; `n`, `mean`, `m2` for variances; `ts` (Int64) and `value` for first and last; `sketch` (Binary, see `Sketch::to_bytes`) for percentiles |
//!
//! The schema's metadata `edgeflow.window_state` holds, as JSON, what is not per
//! group: the format version, which stage, the aggregates (state of another query is
//! refused), the slot count, the free slots in reuse order, each key's session order,
//! the first stage's late count and pending sessions.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int32Array, Int64Array,
    ListArray, PrimitiveArray, RecordBatch, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, Field, Float64Type, Int32Type, Int64Type, Schema, UInt32Type, UInt64Type,
};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::row::RowConverter;
use serde::{Deserialize, Serialize};

use crate::accum::{Acc, AggKind, Sketch};
use crate::operator::{FinalState, GroupState, Origin, PartitionState, StoreState};
use crate::{Error, Result};

/// The schema metadata key holding the state's JSON header.
pub const METADATA_KEY: &str = "edgeflow.window_state";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Header {
    version: u32,
    stage: String,
    aggregates: Vec<String>,
    slots: u32,
    free: Vec<u32>,
    sessions: Vec<Vec<u32>>,
    #[serde(default)]
    pending: Vec<u32>,
    #[serde(default)]
    late_rows: u64,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Checkpoint(format!("window state: {what}"))
}

fn kind_name(k: AggKind) -> String {
    format!("{k:?}")
}

/// A first stage's state as Arrow IPC bytes. `keys`: the query's row converter for
/// its group keys (`None` for a query without group keys).
pub fn encode_partition(
    s: &PartitionState,
    kinds: &[AggKind],
    keys: Option<&RowConverter>,
) -> Result<Vec<u8>> {
    encode(
        &s.store,
        "partition",
        s.pending.clone(),
        s.late_rows,
        kinds,
        keys,
    )
}

/// The final stage's state as Arrow IPC bytes.
pub fn encode_final(
    s: &FinalState,
    kinds: &[AggKind],
    keys: Option<&RowConverter>,
) -> Result<Vec<u8>> {
    encode(&s.store, "final", Vec::new(), 0, kinds, keys)
}

/// Reads [`encode_partition`]'s bytes for a query with these aggregates and keys.
pub fn decode_partition(
    bytes: &[u8],
    kinds: &[AggKind],
    keys: Option<&RowConverter>,
) -> Result<PartitionState> {
    let (store, header) = decode(bytes, "partition", kinds, keys)?;
    Ok(PartitionState {
        store,
        late_rows: header.late_rows,
        pending: header.pending,
    })
}

/// Reads [`encode_final`]'s bytes.
pub fn decode_final(
    bytes: &[u8],
    kinds: &[AggKind],
    keys: Option<&RowConverter>,
) -> Result<FinalState> {
    let (store, _) = decode(bytes, "final", kinds, keys)?;
    Ok(FinalState { store })
}

fn encode(
    st: &StoreState,
    stage: &str,
    pending: Vec<u32>,
    late_rows: u64,
    kinds: &[AggKind],
    keys: Option<&RowConverter>,
) -> Result<Vec<u8>> {
    let g = &st.groups;
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    if let Some(conv) = keys {
        let parser = conv.parser();
        let key_cols = conv.convert_rows(g.iter().map(|x| parser.parse(&x.key)))?;
        for (i, c) in key_cols.into_iter().enumerate() {
            fields.push(Field::new(format!("key_{i}"), c.data_type().clone(), true));
            cols.push(c);
        }
    }
    let mut push = |name: String, c: ArrayRef| {
        fields.push(Field::new(name, c.data_type().clone(), true));
        cols.push(c);
    };
    push(
        "slot".into(),
        Arc::new(UInt32Array::from_iter_values(g.iter().map(|x| x.slot))),
    );
    push(
        "start".into(),
        Arc::new(Int64Array::from_iter_values(g.iter().map(|x| x.start))),
    );
    push(
        "end".into(),
        Arc::new(Int64Array::from_iter_values(g.iter().map(|x| x.end))),
    );
    push(
        "dirty".into(),
        Arc::new(BooleanArray::from_iter(g.iter().map(|x| Some(x.dirty)))),
    );
    push(
        "handed".into(),
        Arc::new(BooleanArray::from_iter(g.iter().map(|x| Some(x.handed)))),
    );
    push(
        "origin".into(),
        Arc::new(Int32Array::from_iter(g.iter().map(|x| match x.origin {
            Origin::None => None,
            Origin::One(p) => Some(p),
            Origin::Many => Some(-1),
        }))),
    );
    push(
        "shown".into(),
        Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
            g.iter().map(|x| Some(x.shown.iter().map(|s| Some(*s)))),
        )),
    );
    for (j, kind) in kinds.iter().enumerate() {
        let accs: Vec<&Acc> = g
            .iter()
            .map(|x| {
                x.accs
                    .get(j)
                    .ok_or_else(|| bad("a group lacks an accumulator"))
            })
            .collect::<Result<_>>()?;
        let wrong = || bad(format!("aggregate {j} is not in the state of a {kind:?}"));
        let name = |f: &str| format!("agg_{j}_{f}");
        match Acc::new(*kind) {
            Acc::Count(_) => {
                let v = accs.iter().map(|a| match a {
                    Acc::Count(c) => Ok(*c),
                    _ => Err(wrong()),
                });
                push(
                    name("count"),
                    Arc::new(Int64Array::from(v.collect::<Result<Vec<_>>>()?)),
                );
            }
            Acc::Sum { .. } => {
                let v: Vec<(f64, u64)> = accs
                    .iter()
                    .map(|a| match a {
                        Acc::Sum { sum, n } => Ok((*sum, *n)),
                        _ => Err(wrong()),
                    })
                    .collect::<Result<_>>()?;
                push(
                    name("sum"),
                    Arc::new(Float64Array::from_iter_values(v.iter().map(|x| x.0))),
                );
                push(
                    name("n"),
                    Arc::new(UInt64Array::from_iter_values(v.iter().map(|x| x.1))),
                );
            }
            Acc::Min(_) | Acc::Max(_) => {
                let v: Vec<Option<f64>> = accs
                    .iter()
                    .map(|a| match a {
                        Acc::Min(x) | Acc::Max(x) => Ok(*x),
                        _ => Err(wrong()),
                    })
                    .collect::<Result<_>>()?;
                push(name("value"), Arc::new(Float64Array::from(v)));
            }
            Acc::Var { .. } => {
                let v: Vec<(u64, f64, f64)> = accs
                    .iter()
                    .map(|a| match a {
                        Acc::Var { n, mean, m2 } => Ok((*n, *mean, *m2)),
                        _ => Err(wrong()),
                    })
                    .collect::<Result<_>>()?;
                push(
                    name("n"),
                    Arc::new(UInt64Array::from_iter_values(v.iter().map(|x| x.0))),
                );
                push(
                    name("mean"),
                    Arc::new(Float64Array::from_iter_values(v.iter().map(|x| x.1))),
                );
                push(
                    name("m2"),
                    Arc::new(Float64Array::from_iter_values(v.iter().map(|x| x.2))),
                );
            }
            Acc::First(_) | Acc::Last(_) => {
                let v: Vec<Option<(i64, f64)>> = accs
                    .iter()
                    .map(|a| match a {
                        Acc::First(x) | Acc::Last(x) => Ok(*x),
                        _ => Err(wrong()),
                    })
                    .collect::<Result<_>>()?;
                push(
                    name("ts"),
                    Arc::new(Int64Array::from(
                        v.iter().map(|x| x.map(|p| p.0)).collect::<Vec<_>>(),
                    )),
                );
                push(
                    name("value"),
                    Arc::new(Float64Array::from(
                        v.iter().map(|x| x.map(|p| p.1)).collect::<Vec<_>>(),
                    )),
                );
            }
            Acc::Sketch(_) => {
                let v: Vec<Vec<u8>> = accs
                    .iter()
                    .map(|a| match a {
                        Acc::Sketch(s) => Ok(s.to_bytes()),
                        _ => Err(wrong()),
                    })
                    .collect::<Result<_>>()?;
                push(
                    name("sketch"),
                    Arc::new(BinaryArray::from_iter_values(v.iter())),
                );
            }
        }
    }
    let header = Header {
        version: FORMAT_VERSION,
        stage: stage.into(),
        aggregates: kinds.iter().map(|k| kind_name(*k)).collect(),
        slots: st.slots,
        free: st.free.clone(),
        sessions: st.sessions.clone(),
        pending,
        late_rows,
    };
    let json = serde_json::to_string(&header).map_err(bad)?;
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        HashMap::from([(METADATA_KEY.to_string(), json)]),
    ));
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    let mut w = StreamWriter::try_new(Vec::new(), &schema)?;
    w.write(&batch)?;
    w.finish()?;
    Ok(w.into_inner()?)
}

/// A column by name, of the type asked.
fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name)
        .ok_or_else(|| bad(format!("no column `{name}`")))
}

fn prim<'a, T: ArrowPrimitiveType>(
    b: &'a RecordBatch,
    name: &str,
) -> Result<&'a PrimitiveArray<T>> {
    column(b, name)?
        .as_primitive_opt::<T>()
        .ok_or_else(|| bad(format!("column `{name}` has the wrong type")))
}

fn opt<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>, i: usize) -> Option<T::Native> {
    a.is_valid(i).then(|| a.value(i))
}

fn decode(
    bytes: &[u8],
    stage: &str,
    kinds: &[AggKind],
    keys: Option<&RowConverter>,
) -> Result<(StoreState, Header)> {
    let reader = StreamReader::try_new(bytes, None)?;
    let schema = reader.schema();
    let header: Header = schema
        .metadata()
        .get(METADATA_KEY)
        .ok_or_else(|| bad(format!("no `{METADATA_KEY}` metadata")))
        .and_then(|j| serde_json::from_str(j).map_err(bad))?;
    if header.version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {} (this version reads {FORMAT_VERSION})",
            header.version
        )));
    }
    if header.stage != stage {
        return Err(bad(format!(
            "a {} stage's state, not a {stage} stage's",
            header.stage
        )));
    }
    let want: Vec<String> = kinds.iter().map(|k| kind_name(*k)).collect();
    if header.aggregates != want {
        return Err(bad(format!(
            "state of aggregates {:?}; the query has {want:?}",
            header.aggregates
        )));
    }
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b?);
    }
    let b = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
    let n = b.num_rows();
    let key_rows = match keys {
        Some(conv) => {
            let n_keys = schema
                .fields()
                .iter()
                .take_while(|f| f.name().starts_with("key_"))
                .count();
            let rows = conv.convert_columns(&b.columns()[..n_keys])?;
            (0..n)
                .map(|i| Box::<[u8]>::from(rows.row(i).data()))
                .collect()
        }
        None => vec![Box::<[u8]>::from(&[][..]); n],
    };
    let slot = prim::<UInt32Type>(&b, "slot")?;
    let start = prim::<Int64Type>(&b, "start")?;
    let end = prim::<Int64Type>(&b, "end")?;
    let flag = |name: &str| -> Result<&BooleanArray> {
        column(&b, name)?
            .as_boolean_opt()
            .ok_or_else(|| bad(format!("column `{name}` has the wrong type")))
    };
    let (dirty, handed) = (flag("dirty")?, flag("handed")?);
    let shown: Vec<Vec<i64>> = match b.column_by_name("shown") {
        None => vec![Vec::new(); n],
        Some(c) => {
            let list = c
                .as_list_opt::<i32>()
                .ok_or_else(|| bad("column `shown` has the wrong type"))?;
            (0..n)
                .map(|i| {
                    let v = list.value(i);
                    let v = v
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(|| bad("column `shown` has the wrong type"))?;
                    Ok(v.iter().flatten().collect())
                })
                .collect::<Result<_>>()?
        }
    };
    // Absent (state written before origins were kept): not known, so never moved.
    let origin: Vec<Origin> = match b.column_by_name("origin") {
        None => vec![Origin::Many; n],
        Some(c) => {
            let o = c
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(|| bad("column `origin` has the wrong type"))?;
            (0..n)
                .map(|i| match opt(o, i) {
                    None => Origin::None,
                    Some(p) if p >= 0 => Origin::One(p),
                    Some(_) => Origin::Many,
                })
                .collect()
        }
    };
    let mut accs: Vec<Vec<Acc>> = vec![Vec::with_capacity(kinds.len()); n];
    for (j, kind) in kinds.iter().enumerate() {
        let name = |f: &str| format!("agg_{j}_{f}");
        match Acc::new(*kind) {
            Acc::Count(_) => {
                let c = prim::<Int64Type>(&b, &name("count"))?;
                for (i, a) in accs.iter_mut().enumerate() {
                    a.push(Acc::Count(c.value(i)));
                }
            }
            Acc::Sum { .. } => {
                let (s, c) = (
                    prim::<Float64Type>(&b, &name("sum"))?,
                    prim::<UInt64Type>(&b, &name("n"))?,
                );
                for (i, a) in accs.iter_mut().enumerate() {
                    a.push(Acc::Sum {
                        sum: s.value(i),
                        n: c.value(i),
                    });
                }
            }
            empty @ (Acc::Min(_) | Acc::Max(_)) => {
                let v = prim::<Float64Type>(&b, &name("value"))?;
                for (i, a) in accs.iter_mut().enumerate() {
                    a.push(match empty {
                        Acc::Min(_) => Acc::Min(opt(v, i)),
                        _ => Acc::Max(opt(v, i)),
                    });
                }
            }
            Acc::Var { .. } => {
                let c = prim::<UInt64Type>(&b, &name("n"))?;
                let (mean, m2) = (
                    prim::<Float64Type>(&b, &name("mean"))?,
                    prim::<Float64Type>(&b, &name("m2"))?,
                );
                for (i, a) in accs.iter_mut().enumerate() {
                    a.push(Acc::Var {
                        n: c.value(i),
                        mean: mean.value(i),
                        m2: m2.value(i),
                    });
                }
            }
            empty @ (Acc::First(_) | Acc::Last(_)) => {
                let (ts, v) = (
                    prim::<Int64Type>(&b, &name("ts"))?,
                    prim::<Float64Type>(&b, &name("value"))?,
                );
                for (i, a) in accs.iter_mut().enumerate() {
                    let p = opt(ts, i).zip(opt(v, i));
                    a.push(match empty {
                        Acc::First(_) => Acc::First(p),
                        _ => Acc::Last(p),
                    });
                }
            }
            Acc::Sketch(_) => {
                let s = column(&b, &name("sketch"))?
                    .as_binary_opt::<i32>()
                    .ok_or_else(|| {
                        bad(format!("column `{}` has the wrong type", name("sketch")))
                    })?;
                for (i, a) in accs.iter_mut().enumerate() {
                    let sk = Sketch::from_bytes(s.value(i))
                        .ok_or_else(|| bad(format!("row {i}: a damaged percentile sketch")))?;
                    a.push(Acc::Sketch(Box::new(sk)));
                }
            }
        }
    }
    let groups = key_rows
        .into_iter()
        .zip(accs)
        .zip(shown)
        .zip(origin)
        .enumerate()
        .map(|(i, (((key, accs), shown), origin))| GroupState {
            slot: slot.value(i),
            key,
            start: start.value(i),
            end: end.value(i),
            dirty: dirty.value(i),
            handed: handed.value(i),
            shown,
            origin,
            accs,
        })
        .collect();
    let store = StoreState {
        groups,
        slots: header.slots,
        free: header.free.clone(),
        sessions: header.sessions.clone(),
    };
    Ok((store, header))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::arrow::row::SortField;
    use proptest::prelude::*;

    use super::*;
    use crate::operator::{FinalWindows, PartitionWindows};
    use crate::window::WindowSpec;

    const KINDS: [AggKind; 11] = [
        AggKind::CountStar,
        AggKind::Count,
        AggKind::Sum,
        AggKind::Min,
        AggKind::Max,
        AggKind::Avg,
        AggKind::VarSamp,
        AggKind::StddevPop,
        AggKind::First,
        AggKind::Last,
        AggKind::Percentile(0.9),
    ];

    /// (site or NULL, sensor number, event time, value or NULL)
    type Row = (Option<&'static str>, i64, i64, Option<f64>);

    fn converter() -> RowConverter {
        RowConverter::new(vec![
            SortField::new(DataType::Utf8),
            SortField::new(DataType::Int64),
        ])
        .expect("converter")
    }

    /// Runs batches through a first stage (watermark = the largest time so far minus
    /// 50) and drains what closed into a final stage.
    fn stages(spec: WindowSpec, batches: &[Vec<Row>]) -> (PartitionWindows, FinalWindows) {
        let kinds: Arc<[AggKind]> = Arc::from(KINDS.to_vec());
        let conv = converter();
        let mut part = PartitionWindows::new(spec, kinds.clone(), 30);
        let mut fin = FinalWindows::new(spec, kinds, 30);
        let mut wm: Option<i64> = None;
        let mut origin = 0;
        for batch in batches {
            let sites = StringArray::from(batch.iter().map(|r| r.0).collect::<Vec<_>>());
            let ids = Int64Array::from(batch.iter().map(|r| r.1).collect::<Vec<_>>());
            let rows = conv
                .convert_columns(&[Arc::new(sites) as ArrayRef, Arc::new(ids)])
                .expect("rows");
            let ts: Vec<i64> = batch.iter().map(|r| r.2).collect();
            let vals = Float64Array::from(batch.iter().map(|r| r.3).collect::<Vec<_>>());
            let args: Vec<Option<&Float64Array>> =
                KINDS.iter().map(|k| k.has_arg().then_some(&vals)).collect();
            part.process(|i| rows.row(i).data(), &ts, &args, wm);
            if let Some(m) = ts.iter().max() {
                wm = Some(wm.unwrap_or(i64::MIN).max(m - 50));
            }
            if let Some(w) = wm {
                // Two origins, so that windows fed by one and by both are stored.
                fin.merge(origin % 2, part.drain(w));
                origin += 1;
                // Some rows shown, some not: the state keeps which.
                fin.emit(w, |e| {
                    Ok::<_, ()>(e.iter().map(|x| x.values[0] != Some(2.0)).collect())
                })
                .expect("emits");
            }
        }
        (part, fin)
    }

    fn rows() -> impl Strategy<Value = Vec<Vec<Row>>> {
        let row = (
            prop_oneof![Just(Some("north")), Just(Some("south")), Just(None)],
            0i64..3,
            0i64..1_000,
            proptest::option::weighted(0.8, -50.0f64..50.0),
        );
        proptest::collection::vec(proptest::collection::vec(row, 0..12), 1..10)
    }

    fn spec() -> impl Strategy<Value = WindowSpec> {
        prop_oneof![
            (1i64..200).prop_map(|size| WindowSpec::Tumble { size }),
            (1i64..50, 0i64..100).prop_map(|(slide, extra)| WindowSpec::Hop {
                slide,
                size: slide + extra
            }),
            (1i64..100).prop_map(|gap| WindowSpec::Session { gap }),
        ]
    }

    proptest! {
        /// Both stages' state, through Arrow IPC and back, is the state it was, and a
        /// stage restored from the bytes snapshots the same again.
        #[test]
        fn window_state_round_trips_through_arrow_ipc(spec in spec(), batches in rows()) {
            let (part, fin) = stages(spec, &batches);
            let conv = converter();
            let ps = part.snapshot();
            let bytes = encode_partition(&ps, &KINDS, Some(&conv)).expect("encodes");
            let back = decode_partition(&bytes, &KINDS, Some(&conv)).expect("decodes");
            prop_assert_eq!(&back, &ps);
            let restored = PartitionWindows::restore(spec, Arc::from(KINDS.to_vec()), 30, back)
                .expect("restores");
            prop_assert_eq!(restored.snapshot(), ps);
            let fs = fin.snapshot();
            let bytes = encode_final(&fs, &KINDS, Some(&conv)).expect("encodes");
            prop_assert_eq!(decode_final(&bytes, &KINDS, Some(&conv)).expect("decodes"), fs);
        }
    }

    #[test]
    fn state_of_another_query_or_damaged_bytes_is_refused() {
        let batches = vec![vec![(Some("north"), 1, 10, Some(1.5)), (None, 2, 20, None)]];
        let (part, _) = stages(WindowSpec::Tumble { size: 100 }, &batches);
        let conv = converter();
        let bytes = encode_partition(&part.snapshot(), &KINDS, Some(&conv)).expect("encodes");
        let e = decode_partition(&bytes, &KINDS[..3], Some(&conv)).unwrap_err();
        assert!(e.to_string().contains("the query has"), "{e}");
        let e = decode_final(&bytes, &KINDS, Some(&conv)).unwrap_err();
        assert!(e.to_string().contains("not a final stage"), "{e}");
        let other_keys = RowConverter::new(vec![SortField::new(DataType::Int64)]).expect("conv");
        assert!(decode_partition(&bytes, &KINDS, Some(&other_keys)).is_err());
        for cut in [0, 8, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                decode_partition(&bytes[..cut], &KINDS, Some(&conv)).is_err(),
                "cut at {cut}"
            );
        }
        assert_eq!(Sketch::from_bytes(&[1, 2, 3]), None);
    }
}
