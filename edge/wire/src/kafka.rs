//! The librdkafka client settings every client of the project starts from, and the
//! properties users may not set.
//!
//! Order matters in a librdkafka config (a later `set` wins): a client's own defaults
//! come first, then the user's `properties`, then what the project enforces (brokers
//! from their own config key, the delivery guarantee, no offset commits). The config
//! checks refuse enforced properties by name ([`reserved_property_problems`]), so a
//! user's value is never silently replaced.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

/// librdkafka producer properties that carry edgeflow's delivery guarantee (every record
/// acknowledged by all in-sync replicas, no duplicates from retries). A user property may
/// not change them: [`reserved_property_problems`] refuses them by name.
pub const GUARANTEE_PROPERTIES: [&str; 3] = ["acks", "request.required.acks", "enable.idempotence"];

/// Consumer properties a processor sets itself: its offsets live in its own
/// checkpoints, never in Kafka's consumer groups.
pub const NO_COMMIT_PROPERTIES: [&str; 3] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.commit.interval.ms",
];

/// A client's settings: `defaults` (which the user's `properties` may change), the
/// user's `properties`, then `bootstrap.servers`.
pub fn client_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    defaults: &[(&str, &str)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in properties {
        c.set(k, v);
    }
    c.set("bootstrap.servers", brokers);
    c
}

/// A producer's settings: [`client_config`], then the delivery guarantee (idempotent,
/// acknowledged by all in-sync replicas).
pub fn producer_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    defaults: &[(&str, &str)],
) -> ClientConfig {
    let mut c = client_config(brokers, properties, defaults);
    c.set("enable.idempotence", "true").set("acks", "all");
    c
}

/// A consumer's settings for partitions it is assigned: [`client_config`], then no
/// offset is ever stored or committed in Kafka. librdkafka wants a `group.id` even for
/// `assign`; put one in `defaults` (nothing joins the group).
pub fn consumer_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    defaults: &[(&str, &str)],
) -> ClientConfig {
    let mut c = client_config(brokers, properties, defaults);
    c.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    c
}

/// One problem per property in `properties` (found under the config key `key`) that is
/// one of `reserved`, naming it and saying why.
pub fn reserved_property_problems<'a>(
    key: &str,
    properties: impl IntoIterator<Item = &'a String>,
    reserved: &[&str],
) -> Vec<String> {
    properties
        .into_iter()
        .filter(|k| reserved.contains(&k.to_ascii_lowercase().as_str()))
        .map(|k| {
            format!(
                "{key}.{k}: edgeflow sets this librdkafka property itself (delivery guarantee or \
                 another config key); remove it"
            )
        })
        .collect()
}

/// Whether a librdkafka property holds a secret that must never be logged.
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n.contains("secret") || n.ends_with(".key.pem") || n.contains("token")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_give_way_to_the_user_and_the_guarantee_to_nobody() {
        let user = props(&[
            ("linger.ms", "50"),
            ("acks", "1"),
            ("enable.auto.commit", "true"),
            ("bootstrap.servers", "elsewhere:9092"),
        ]);
        let p = producer_config(
            "k:9092",
            &user,
            &[("linger.ms", "5"), ("compression.type", "zstd")],
        );
        assert_eq!(p.get("linger.ms"), Some("50"), "the user's value");
        assert_eq!(p.get("compression.type"), Some("zstd"), "a default");
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("bootstrap.servers"), Some("k:9092"));
        let c = consumer_config("k:9092", &user, &[("group.id", "g")]);
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("group.id"), Some("g"));
    }

    #[test]
    fn reserved_properties_are_named_whatever_their_case() {
        let user = props(&[("ACKS", "1"), ("linger.ms", "5")]);
        let problems =
            reserved_property_problems("kafka.properties", user.keys(), &GUARANTEE_PROPERTIES);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("kafka.properties.ACKS:"),
            "{problems:?}"
        );
        assert!(is_secret_property("sasl.password") && !is_secret_property("linger.ms"));
    }
}
