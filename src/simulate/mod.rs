//! Synthetic sensors for the demo, the tests and the benchmarks.
//!
//! [`Scenario`] describes a plant: how many sensors across how many sites, how fast they
//! report, and how imperfect they are (noise, drift, spikes, sensors that drop out and
//! come back, late and out-of-order readings, malformed payloads, three payload formats).
//! [`Generator`] turns it into the exact sequence of MQTT messages to publish. It is pure
//! and deterministic: the same scenario (seed included) gives the same messages, byte
//! for byte, on every machine and run. [`run`](mod@run) publishes them over MQTT on an
//! open-loop schedule and can write every reading to a file, from which tests compute
//! their expected results independently of the pipeline.
//!
//! The schedule is open loop: slot `k` is due `k / rate` seconds after the start, and a
//! reading's event time comes from its slot, not from when it was sent. A broker that
//! cannot keep up makes the publisher fall behind (the lag it reports), never slows the
//! simulated plant down.

pub mod run;

use std::fmt::Write as _;

use serde::Serialize;

/// One simulated plant. [`Scenario::default`] is a small plant with every kind of
/// imperfection turned on at a low rate; [`Scenario::clean`] turns them all off.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Seed of every random choice; the same seed gives the same messages.
    pub seed: u64,
    /// Number of sensors.
    pub sensors: u32,
    /// Number of the first sensor (`s-000000` by default); lets several simulators
    /// cover disjoint sensors.
    pub first_sensor: u32,
    /// Number of sites the sensors are spread across (sensor `i` is on site `i % sites`).
    pub sites: u32,
    /// Readings per second over all sensors; each sensor reports every `sensors / rate` s.
    pub rate: f64,
    /// Event time of slot 0, epoch milliseconds.
    pub start_ms: i64,
    /// Relative weights of the payload formats; each sensor speaks one of them.
    pub formats: FormatMix,
    /// Fraction of messages with a defect (see [`Defect`]).
    pub malformed: f64,
    /// Fraction of readings delivered late: their event time is up to `max_late_ms`
    /// before their slot.
    pub late: f64,
    /// How late a late reading is at most, milliseconds.
    pub max_late_ms: i64,
    /// Every reading's event time is up to this much before its slot (devices' clocks
    /// and buffering), so a sensor's readings arrive slightly out of order.
    pub jitter_ms: i64,
    /// Chance, per reading, that its sensor drops out after it.
    pub dropout: f64,
    /// Mean length of a dropout, milliseconds (each lasts 0.5 to 1.5 times this).
    pub dropout_ms: i64,
    /// Fraction of readings carrying a spike (a short excursion far off the signal).
    pub spikes: f64,
}

/// Relative weights of the payload formats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FormatMix {
    pub json: f64,
    pub senml: f64,
    pub number: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 7,
            sensors: 100,
            first_sensor: 0,
            sites: 4,
            rate: 1000.0,
            start_ms: 0,
            formats: FormatMix {
                json: 0.7,
                senml: 0.2,
                number: 0.1,
            },
            malformed: 0.001,
            late: 0.002,
            max_late_ms: 120_000,
            jitter_ms: 200,
            dropout: 0.000_2,
            dropout_ms: 30_000,
            spikes: 0.001,
        }
    }
}

impl Scenario {
    /// Every sensor well behaved: JSON payloads with their own timestamps, in order, no
    /// defect, dropout or spike (noise, drift and the daily cycle stay).
    pub fn clean() -> Self {
        Scenario {
            formats: FormatMix {
                json: 1.0,
                senml: 0.0,
                number: 0.0,
            },
            malformed: 0.0,
            late: 0.0,
            jitter_ms: 0,
            dropout: 0.0,
            spikes: 0.0,
            ..Scenario::default()
        }
    }

    /// Checks every field; the error names the option and what it allows.
    pub fn validate(&self) -> Result<(), String> {
        let fraction = |name: &str, v: f64, max: f64| {
            if (0.0..=max).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{name} = {v}: allowed is a fraction from 0 to {max}"
                ))
            }
        };
        if self.sensors == 0 {
            return Err("sensors = 0: at least 1 sensor is needed".into());
        }
        if self.first_sensor.checked_add(self.sensors - 1).is_none() {
            return Err("first_sensor + sensors exceeds the 32-bit sensor numbers".into());
        }
        if self.sites == 0 {
            return Err("sites = 0: at least 1 site is needed".into());
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(format!(
                "rate = {}: allowed is a number of readings per second above 0 (a rate the \
                 broker cannot take runs as fast as it can, and the lag says how far behind)",
                self.rate
            ));
        }
        let FormatMix {
            json,
            senml,
            number,
        } = self.formats;
        if [json, senml, number]
            .iter()
            .any(|w| !(w.is_finite() && *w >= 0.0))
            || json + senml + number <= 0.0
        {
            return Err(format!(
                "formats = json {json}, senml {senml}, number {number}: allowed are weights of \
                 0 or more, at least one above 0"
            ));
        }
        fraction("malformed", self.malformed, 1.0)?;
        fraction("late", self.late, 1.0)?;
        fraction("spikes", self.spikes, 1.0)?;
        // A sensor must come back sometimes, or no message would ever be due again.
        fraction("dropout", self.dropout, 0.5)?;
        for (name, v) in [
            ("max_late_ms", self.max_late_ms),
            ("jitter_ms", self.jitter_ms),
            ("dropout_ms", self.dropout_ms),
        ] {
            if v < 0 {
                return Err(format!("{name} = {v}: allowed is 0 or more"));
            }
        }
        Ok(())
    }

    /// The sensor id of sensor number `i` (0-based within this scenario).
    pub fn sensor_id(&self, i: u32) -> String {
        format!("s-{:06}", self.first_sensor + i)
    }
}

/// A payload format the simulator speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `{"ts":1764000000250,"value":21.5}`
    Json,
    /// `[{"n":"value","t":1764000000.250,"v":21.5}]` (RFC 8428; seconds)
    Senml,
    /// `21.5`: no timestamp, so the reading's event time is its arrival time.
    Number,
}

/// What is wrong with a malformed message. Each one is rejected by the edge decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Defect {
    /// The payload is cut off in the middle.
    Truncated,
    /// The value is text (`"n/a"`).
    NotANumber,
    /// The value is `NaN`.
    NonFinite,
    /// The timestamp is 30 days ahead of the slot.
    FarFuture,
    /// The payload is empty.
    Empty,
}

impl Defect {
    /// The defects a format can have.
    fn choices(format: Format) -> &'static [Defect] {
        match format {
            Format::Json => &[
                Defect::Truncated,
                Defect::NotANumber,
                Defect::FarFuture,
                Defect::Empty,
            ],
            Format::Senml => &[
                Defect::Truncated,
                Defect::NotANumber,
                Defect::FarFuture,
                Defect::Empty,
            ],
            Format::Number => &[Defect::NotANumber, Defect::NonFinite, Defect::Empty],
        }
    }
}

/// One message the simulator sends, as it means it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reading {
    /// Slot number: the reading was due `slot / rate` seconds after the start.
    pub slot: u64,
    /// When the slot was due, epoch milliseconds.
    pub due_ms: i64,
    /// Sensor number within the scenario (see [`Scenario::sensor_id`]).
    #[serde(skip)]
    pub sensor: u32,
    pub format: Format,
    /// The event time in the payload; `None` for bare numbers (the receiver uses the
    /// arrival time).
    pub ts_ms: Option<i64>,
    /// The value in the payload (already rounded to what the payload prints).
    pub value: f64,
    /// Set when the message is malformed; such a message carries no valid reading.
    pub defect: Option<Defect>,
    /// The reading is late (its event time is well before its slot).
    pub late: bool,
}

/// Day length of the signals' daily cycle.
const DAY_MS: f64 = 86_400_000.0;
/// How far ahead a `FarFuture` timestamp is.
const FAR_FUTURE_MS: i64 = 30 * 86_400_000;

/// What a sensor measures, and the shape of its signal.
#[derive(Clone, Copy, Debug)]
struct Kind {
    /// Range of the sensor's base level.
    base: (f64, f64),
    /// Amplitude of the daily cycle.
    amplitude: f64,
    /// Standard deviation of the noise.
    noise: f64,
    /// Largest drift per day, either way.
    drift: f64,
    /// Decimal places the sensor reports.
    decimals: i32,
    /// What the sensor can report at all (it saturates there).
    range: (f64, f64),
}

const KINDS: [Kind; 4] = [
    // temperature, °C
    Kind {
        base: (15.0, 30.0),
        amplitude: 3.0,
        noise: 0.2,
        drift: 0.5,
        decimals: 2,
        range: (-40.0, 125.0),
    },
    // relative humidity, %
    Kind {
        base: (35.0, 60.0),
        amplitude: 10.0,
        noise: 1.0,
        drift: 2.0,
        decimals: 1,
        range: (0.0, 100.0),
    },
    // pressure, hPa
    Kind {
        base: (1000.0, 1020.0),
        amplitude: 2.0,
        noise: 0.3,
        drift: 1.0,
        decimals: 1,
        range: (300.0, 1100.0),
    },
    // vibration, mm/s
    Kind {
        base: (1.0, 4.0),
        amplitude: 0.5,
        noise: 0.4,
        drift: 0.2,
        decimals: 3,
        range: (0.0, 100.0),
    },
];

/// One sensor's fixed traits and its random stream.
#[derive(Clone, Debug)]
struct Sensor {
    rng: SplitMix64,
    kind: Kind,
    format: Format,
    base: f64,
    phase: f64,
    drift_per_ms: f64,
    /// Silent until this event time (a dropout).
    silent_until_ms: i64,
}

/// The deterministic message sequence of a [`Scenario`].
#[derive(Clone, Debug)]
pub struct Generator {
    scenario: Scenario,
    sensors: Vec<Sensor>,
    slot: u64,
    ms_per_slot: f64,
}

impl Generator {
    /// A generator at slot 0. The scenario must be valid ([`Scenario::validate`]).
    pub fn new(scenario: &Scenario) -> Result<Self, String> {
        scenario.validate()?;
        let FormatMix {
            json,
            senml,
            number,
        } = scenario.formats;
        let total = json + senml + number;
        let format_cut = (json / total, (json + senml) / total);
        let sensors = (0..scenario.sensors)
            .map(|i| {
                // Each sensor has its own stream, derived from the seed and its number,
                // so its traits do not depend on how many sensors there are.
                let number = u64::from(scenario.first_sensor + i);
                let mut rng =
                    SplitMix64::new(scenario.seed ^ number.wrapping_mul(0xA076_1D64_78BD_642F));
                let kind = KINDS[(rng.next_u64() % KINDS.len() as u64) as usize];
                let f = rng.unit();
                let format = if f < format_cut.0 {
                    Format::Json
                } else if f < format_cut.1 {
                    Format::Senml
                } else {
                    Format::Number
                };
                Sensor {
                    kind,
                    format,
                    base: kind.base.0 + rng.unit() * (kind.base.1 - kind.base.0),
                    phase: rng.unit() * std::f64::consts::TAU,
                    drift_per_ms: (rng.unit() * 2.0 - 1.0) * kind.drift / DAY_MS,
                    silent_until_ms: i64::MIN,
                    rng,
                }
            })
            .collect();
        Ok(Generator {
            scenario: scenario.clone(),
            sensors,
            slot: 0,
            ms_per_slot: 1000.0 / scenario.rate,
        })
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The slot the next call to [`Generator::next_reading`] starts from.
    pub fn slot(&self) -> u64 {
        self.slot
    }

    /// When `slot` is due, epoch milliseconds.
    pub fn due_ms(&self, slot: u64) -> i64 {
        self.scenario.start_ms + (slot as f64 * self.ms_per_slot) as i64
    }

    /// The next message. Slots of sensors that are dropped out are skipped, so the
    /// returned slot can be more than one past the previous one.
    pub fn next_reading(&mut self) -> Reading {
        loop {
            let slot = self.slot;
            self.slot += 1;
            let due_ms = self.due_ms(slot);
            let i = (slot % u64::from(self.scenario.sensors)) as u32;
            if let Some(r) = self.reading(slot, due_ms, i) {
                return r;
            }
        }
    }

    fn reading(&mut self, slot: u64, due_ms: i64, i: u32) -> Option<Reading> {
        let scn = &self.scenario;
        let s = &mut self.sensors[i as usize];
        if due_ms < s.silent_until_ms {
            return None;
        }
        // Every draw is made whether or not it is used, so that one choice does not
        // shift the others' random numbers.
        let jitter = s.rng.unit();
        let late = s.rng.unit() < scn.late;
        let lateness = s.rng.unit();
        let noise = s.rng.normal();
        let spike = s.rng.unit() < scn.spikes;
        let spike_size = s.rng.unit();
        let malformed = s.rng.unit() < scn.malformed;
        let defect_pick = s.rng.next_u64();
        let drops_out = s.rng.unit() < scn.dropout;
        let dropout_len = s.rng.unit();

        let mut ts_ms = due_ms - (jitter * scn.jitter_ms as f64) as i64;
        if late {
            ts_ms = due_ms - (scn.max_late_ms as f64 * (0.25 + 0.75 * lateness)) as i64;
        }
        let t = ts_ms as f64;
        let mut value = s.base
            + s.kind.amplitude
                * (std::f64::consts::TAU * t.rem_euclid(DAY_MS) / DAY_MS + s.phase).sin()
            + s.drift_per_ms * (t - scn.start_ms as f64)
            + s.kind.noise * noise;
        if spike {
            let sign = if spike_size < 0.5 { -1.0 } else { 1.0 };
            value += sign * s.kind.amplitude * (3.0 + 6.0 * spike_size);
        }
        let scale = 10f64.powi(s.kind.decimals);
        value = (value.clamp(s.kind.range.0, s.kind.range.1) * scale).round() / scale;
        let defect = malformed.then(|| {
            let choices = Defect::choices(s.format);
            choices[(defect_pick % choices.len() as u64) as usize]
        });
        if drops_out {
            s.silent_until_ms = due_ms + (scn.dropout_ms as f64 * (0.5 + dropout_len)) as i64;
        }
        Some(Reading {
            slot,
            due_ms,
            sensor: i,
            format: s.format,
            ts_ms: (s.format != Format::Number).then_some(ts_ms),
            value,
            defect,
            late,
        })
    }

    /// Writes the message's MQTT topic and payload into the buffers (cleared first).
    pub fn encode(&self, r: &Reading, topic: &mut String, payload: &mut Vec<u8>) {
        use std::io::Write as _;
        topic.clear();
        payload.clear();
        let scn = &self.scenario;
        let number = scn.first_sensor + r.sensor;
        // Writing to a String or a Vec cannot fail.
        let _ = write!(
            topic,
            "sensors/site-{}/s-{:06}/telemetry",
            number % scn.sites,
            number
        );
        let ts = match r.defect {
            Some(Defect::FarFuture) => r.ts_ms.map(|t| t + FAR_FUTURE_MS),
            _ => r.ts_ms,
        }
        .unwrap_or(r.due_ms);
        let text = match r.defect {
            Some(Defect::NotANumber) => Some("n/a"),
            Some(Defect::NonFinite) => Some("NaN"),
            _ => None,
        };
        let v = r.value;
        let _ = match (r.format, text) {
            (Format::Json, None) => write!(payload, "{{\"ts\":{ts},\"value\":{v}}}"),
            (Format::Json, Some(t)) => write!(payload, "{{\"ts\":{ts},\"value\":\"{t}\"}}"),
            (Format::Senml, text) => {
                let (s, ms) = (ts.div_euclid(1000), ts.rem_euclid(1000));
                match text {
                    None => write!(payload, "[{{\"n\":\"value\",\"t\":{s}.{ms:03},\"v\":{v}}}]"),
                    Some(t) => write!(
                        payload,
                        "[{{\"n\":\"value\",\"t\":{s}.{ms:03},\"vs\":\"{t}\"}}]"
                    ),
                }
            }
            (Format::Number, None) => write!(payload, "{v}"),
            (Format::Number, Some(t)) => write!(payload, "{t}"),
        };
        match r.defect {
            Some(Defect::Empty) => payload.clear(),
            Some(Defect::Truncated) => payload.truncate(payload.len() / 2),
            _ => {}
        }
    }
}

impl Iterator for Generator {
    type Item = Reading;
    fn next(&mut self) -> Option<Reading> {
        Some(self.next_reading())
    }
}

/// SplitMix64: a small, fast generator whose output is fixed by its definition, so a
/// seed gives the same plant in every version of every dependency.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box-Muller; one of the pair is used).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit(); // (0, 1]
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

#[cfg(test)]
mod tests;
