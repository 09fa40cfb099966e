use std::collections::{BTreeMap, BTreeSet};

use edgeflow_edge::config::DecodeConfig;
use edgeflow_edge::decode::{DecodeBuf, Decoder, PayloadFormat, Source};
use edgeflow_edge::topic::TopicPattern;
use proptest::prelude::*;

use super::*;

const START: i64 = 1_764_000_000_000;

fn messages(scn: &Scenario, n: usize) -> Vec<(Reading, String, Vec<u8>)> {
    let mut g = Generator::new(scn).expect("valid scenario");
    (0..n)
        .map(|_| {
            let r = g.next_reading();
            let (mut topic, mut payload) = (String::new(), Vec::new());
            g.encode(&r, &mut topic, &mut payload);
            (r, topic, payload)
        })
        .collect()
}

#[test]
fn the_same_scenario_gives_the_same_bytes_and_another_seed_does_not() {
    let scn = Scenario {
        start_ms: START,
        sensors: 500,
        malformed: 0.05,
        late: 0.05,
        dropout: 0.01,
        spikes: 0.05,
        ..Scenario::default()
    };
    let a = messages(&scn, 20_000);
    assert_eq!(a, messages(&scn, 20_000));
    let b = messages(
        &Scenario {
            seed: scn.seed + 1,
            ..scn.clone()
        },
        20_000,
    );
    let same = a.iter().zip(&b).filter(|(x, y)| x.2 == y.2).count();
    assert!(
        same < 200,
        "{same} of 20000 payloads equal under another seed"
    );
}

#[test]
fn a_sensors_traits_do_not_depend_on_how_many_sensors_there_are() {
    let small = Generator::new(&Scenario {
        sensors: 10,
        ..Scenario::default()
    })
    .expect("valid");
    let large = Generator::new(&Scenario {
        sensors: 1_000,
        ..Scenario::default()
    })
    .expect("valid");
    for (a, b) in small.sensors.iter().zip(&large.sensors) {
        assert_eq!(
            (a.format, a.base, a.phase, a.drift_per_ms),
            (b.format, b.base, b.phase, b.drift_per_ms)
        );
    }
}

#[test]
fn slots_follow_the_rate_and_readings_carry_their_slots_time() {
    let scn = Scenario {
        start_ms: START,
        sensors: 7,
        rate: 250.0,
        ..Scenario::clean()
    };
    for (k, (r, topic, _)) in messages(&scn, 2_000).into_iter().enumerate() {
        assert_eq!(r.slot, k as u64);
        assert_eq!(r.due_ms, START + (k as i64 * 1000) / 250);
        assert_eq!(r.ts_ms, Some(r.due_ms));
        let n = k % 7;
        assert_eq!(topic, format!("sensors/site-{}/s-{n:06}/telemetry", n % 4));
    }
}

#[test]
fn imperfections_come_at_the_rates_asked_for() {
    let scn = Scenario {
        start_ms: START,
        sensors: 2_000,
        rate: 10_000.0,
        malformed: 0.02,
        late: 0.03,
        spikes: 0.0,
        dropout: 0.001,
        dropout_ms: 2_000,
        ..Scenario::default()
    };
    let msgs = messages(&scn, 200_000);
    let frac = |f: &dyn Fn(&Reading) -> bool| {
        msgs.iter().filter(|(r, _, _)| f(r)).count() as f64 / msgs.len() as f64
    };
    let malformed = frac(&|r| r.defect.is_some());
    let late = frac(&|r| r.late);
    assert!((0.017..0.023).contains(&malformed), "malformed {malformed}");
    assert!((0.027..0.033).contains(&late), "late {late}");
    // Formats are per sensor, in the proportions asked for.
    let mut formats: BTreeMap<u32, BTreeSet<&'static str>> = BTreeMap::new();
    for (r, _, _) in &msgs {
        let name = match r.format {
            Format::Json => "json",
            Format::Senml => "senml",
            Format::Number => "number",
        };
        formats.entry(r.sensor).or_default().insert(name);
    }
    assert!(formats.values().all(|f| f.len() == 1));
    let json = formats.values().filter(|f| f.contains("json")).count() as f64 / 2_000.0;
    assert!((0.65..0.75).contains(&json), "json sensors {json}");
    // Dropouts: skipped slots, and the sensors come back.
    let last = msgs.last().map(|m| m.0.slot).unwrap_or(0);
    let skipped = last + 1 - msgs.len() as u64;
    assert!(skipped > 0, "no sensor dropped out");
    let mut seen_after_gap = 0;
    let mut last_slot: BTreeMap<u32, u64> = BTreeMap::new();
    for (r, _, _) in &msgs {
        if let Some(prev) = last_slot.insert(r.sensor, r.slot) {
            if r.slot - prev > 2_000 {
                seen_after_gap += 1;
            }
        }
    }
    assert!(seen_after_gap > 0, "no sensor came back after a dropout");
    // Every late reading is between a quarter of max_late and max_late before its slot.
    for (r, _, _) in msgs.iter().filter(|(r, _, _)| r.late && r.ts_ms.is_some()) {
        let behind = r.due_ms - r.ts_ms.unwrap_or(r.due_ms);
        assert!(
            (scn.max_late_ms / 4 - 1..=scn.max_late_ms).contains(&behind),
            "{behind}"
        );
    }
}

#[test]
fn signals_stay_near_their_sensors_level_and_spikes_leave_it() {
    let scn = Scenario {
        start_ms: START,
        sensors: 400,
        rate: 400.0,
        ..Scenario::clean()
    };
    // Level, daily cycle, drift over the run, 6 sigma of noise, rounding.
    let off_band = |scn: &Scenario| {
        let g = Generator::new(scn).expect("valid");
        let mut off = 0;
        for (r, _, _) in messages(scn, 40_000) {
            let s = &g.sensors[r.sensor as usize];
            let (lo, hi) = s.kind.range;
            assert!(
                (lo..=hi).contains(&r.value),
                "{} outside {lo}..{hi}",
                r.value
            );
            let t = r.ts_ms.unwrap_or(r.due_ms) - START;
            let band = s.kind.amplitude
                + s.drift_per_ms.abs() * t.abs() as f64
                + 6.0 * s.kind.noise
                + 1e-3;
            let near = (r.value - s.base).abs() <= band || r.value == lo || r.value == hi;
            off += usize::from(!near);
        }
        off
    };
    assert_eq!(off_band(&scn), 0);
    let spiky = off_band(&Scenario {
        spikes: 0.05,
        ..scn.clone()
    });
    // Spikes are 3 to 9 amplitudes off; most of 5 % of 40,000 leave the band.
    assert!(
        (1_000..2_100).contains(&spiky),
        "{spiky} readings off the band"
    );
}

#[test]
fn invalid_scenarios_name_the_option() {
    let cases: [(Scenario, &str); 6] = [
        (
            Scenario {
                sensors: 0,
                ..Scenario::default()
            },
            "sensors",
        ),
        (
            Scenario {
                rate: 0.0,
                ..Scenario::default()
            },
            "rate",
        ),
        (
            Scenario {
                malformed: 1.5,
                ..Scenario::default()
            },
            "malformed",
        ),
        (
            Scenario {
                dropout: 0.9,
                ..Scenario::default()
            },
            "dropout",
        ),
        (
            Scenario {
                jitter_ms: -1,
                ..Scenario::default()
            },
            "jitter_ms",
        ),
        (
            Scenario {
                formats: FormatMix {
                    json: 0.0,
                    senml: 0.0,
                    number: 0.0,
                },
                ..Scenario::default()
            },
            "formats",
        ),
    ];
    for (scn, name) in cases {
        let err = Generator::new(&scn).expect_err(name);
        assert!(err.starts_with(name), "{err}");
    }
}

fn arb_scenario() -> impl Strategy<Value = Scenario> {
    (
        any::<u64>(),
        1u32..300,
        0u32..1_000_000,
        1u32..6,
        1.0f64..100_000.0,
        (0.0f64..5.0, 0.0f64..5.0, 0.0f64..5.0),
        (0.0f64..0.5, 0.0f64..0.5, 0.0f64..0.2, 0.0f64..0.5),
        (0i64..600_000, 0i64..5_000, 0i64..60_000),
    )
        .prop_filter_map(
            "some format",
            |(
                seed,
                sensors,
                first_sensor,
                sites,
                rate,
                (j, s, n),
                (mal, late, drop, spk),
                (ml, jit, dms),
            )| {
                let scn = Scenario {
                    seed,
                    sensors,
                    first_sensor,
                    sites,
                    rate,
                    start_ms: START,
                    formats: FormatMix {
                        json: j,
                        senml: s,
                        number: n,
                    },
                    malformed: mal,
                    late,
                    max_late_ms: ml,
                    jitter_ms: jit,
                    dropout: drop,
                    dropout_ms: dms,
                    spikes: spk,
                };
                scn.validate().is_ok().then_some(scn)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The edge agent's decoder, an independent reader of the formats, takes every
    /// well-formed message as exactly the reading the simulator meant, and rejects
    /// every malformed one.
    #[test]
    fn the_edge_decoder_reads_what_the_simulator_meant(scn in arb_scenario()) {
        let decoder = Decoder::new(&DecodeConfig::default(), 1 << 16);
        let pattern: TopicPattern = "sensors/{site}/{sensor_id}/telemetry".parse().expect("pattern");
        let mut buf = DecodeBuf::default();
        for (r, topic, payload) in messages(&scn, 300) {
            let arrival = r.due_ms + 40;
            let decoded = decoder.decode(
                Source { format: PayloadFormat::Auto, pattern: Some(&pattern) },
                &topic,
                &payload,
                arrival,
                &mut buf,
            );
            match r.defect {
                Some(d) => prop_assert!(
                    decoded.is_err(),
                    "{d:?} accepted: {topic} {}", String::from_utf8_lossy(&payload)
                ),
                None => {
                    prop_assert!(decoded.is_ok(), "{decoded:?}: {}", String::from_utf8_lossy(&payload));
                    prop_assert_eq!(buf.items.len(), 1);
                    let item = &buf.items[0];
                    prop_assert_eq!(buf.sensor(item), scn.sensor_id(r.sensor));
                    prop_assert_eq!(buf.field(item), "value");
                    prop_assert_eq!(item.ts_ms, r.ts_ms.unwrap_or(arrival));
                    prop_assert_eq!(item.value, r.value);
                }
            }
        }
    }
}
