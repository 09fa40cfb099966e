//! Topic filters and topic patterns.
//!
//! A topic pattern says where the sensor id (and optionally the site) sits in a topic:
//! `sensors/{site}/{sensor_id}/telemetry`. Segments are literals, `{sensor_id}`, `{site}`,
//! `+` (any one segment) or a trailing `#` (any rest).

use std::str::FromStr;

use serde::{Deserialize, Deserializer};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    SensorId,
    Site,
    Any,
    Rest,
}

/// A parsed topic pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPattern {
    source: String,
    segments: Vec<Segment>,
}

/// What a topic pattern extracted from one topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicMatch<'a> {
    pub sensor_id: Option<&'a str>,
    pub site: Option<&'a str>,
}

impl TopicPattern {
    /// Extracts the sensor id and site from `topic`, or `None` if the topic does not fit.
    pub fn extract<'a>(&self, topic: &'a str) -> Option<TopicMatch<'a>> {
        let mut out = TopicMatch {
            sensor_id: None,
            site: None,
        };
        let mut parts = topic.split('/');
        for seg in &self.segments {
            if *seg == Segment::Rest {
                return Some(out);
            }
            let part = parts.next()?;
            match seg {
                Segment::Literal(l) if l != part => return None,
                Segment::SensorId if part.is_empty() => return None,
                Segment::SensorId => out.sensor_id = Some(part),
                Segment::Site => out.site = Some(part),
                _ => {}
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(out)
    }

    /// Whether the pattern names the sensor id.
    pub fn has_sensor_id(&self) -> bool {
        self.segments.contains(&Segment::SensorId)
    }

    /// Checks that topics matching `filter` can fit this pattern (same depth).
    pub fn check_against_filter(&self, filter: &str) -> Result<(), String> {
        let f: Vec<&str> = filter.split('/').collect();
        let open_ended = f.last() == Some(&"#") || self.segments.last() == Some(&Segment::Rest);
        if !open_ended && f.len() != self.segments.len() {
            return Err(format!(
                "`{}` has {} levels but the filter `{filter}` has {}",
                self.source,
                self.segments.len(),
                f.len()
            ));
        }
        Ok(())
    }
}

impl FromStr for TopicPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("a topic pattern must not be empty".into());
        }
        let raw: Vec<&str> = s.split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        for (i, part) in raw.iter().enumerate() {
            let seg = match *part {
                "{sensor_id}" => Segment::SensorId,
                "{site}" => Segment::Site,
                "+" => Segment::Any,
                "#" if i + 1 == raw.len() => Segment::Rest,
                "#" => return Err(format!("`{s}`: `#` is allowed only as the last level")),
                p if p.contains(['{', '}', '+', '#']) => {
                    return Err(format!(
                        "`{s}`: level `{p}` is not allowed; use a literal, {{sensor_id}}, {{site}}, + or a final #"
                    ))
                }
                p => Segment::Literal(p.to_string()),
            };
            if matches!(seg, Segment::SensorId | Segment::Site) && segments.contains(&seg) {
                return Err(format!("`{s}`: {part} appears twice"));
            }
            segments.push(seg);
        }
        Ok(TopicPattern {
            source: s.to_string(),
            segments,
        })
    }
}

impl<'de> Deserialize<'de> for TopicPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Validates an MQTT subscription filter (MQTT 3.1.1 §4.7).
pub fn validate_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("a topic filter must not be empty".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "`{filter}`: `#` must be a whole level and the last one"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("`{filter}`: `+` must be a whole level"));
        }
    }
    Ok(())
}

/// Whether `topic` matches the MQTT `filter`.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if t.next().is_none() {
                    return false;
                }
            }
            lit => {
                if t.next() != Some(lit) {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_extracts_site_and_sensor() {
        let p: TopicPattern = "sensors/{site}/{sensor_id}/telemetry".parse().unwrap();
        let m = p.extract("sensors/plant-a/t-17/telemetry").unwrap();
        assert_eq!(m.site, Some("plant-a"));
        assert_eq!(m.sensor_id, Some("t-17"));
        assert!(p.extract("sensors/plant-a/t-17/status").is_none());
        assert!(p.extract("sensors/plant-a/t-17/telemetry/x").is_none());
        assert!(p.extract("sensors/plant-a//telemetry").is_none());
    }

    #[test]
    fn pattern_rejects_bad_levels() {
        assert!("a/{sensorid}".parse::<TopicPattern>().is_err());
        assert!("a/#/b".parse::<TopicPattern>().is_err());
        assert!("{sensor_id}/{sensor_id}".parse::<TopicPattern>().is_err());
    }

    #[test]
    fn filters_match_like_a_broker() {
        assert!(filter_matches(
            "sensors/+/+/telemetry",
            "sensors/a/b/telemetry"
        ));
        assert!(filter_matches("sensors/#", "sensors/a/b/c"));
        assert!(!filter_matches("sensors/+", "sensors/a/b"));
        assert!(validate_filter("a/#/b").is_err());
        assert!(validate_filter("a/b+").is_err());
        assert!(validate_filter("a/+/#").is_ok());
    }
}
