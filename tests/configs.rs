//! Every file in `configs/` loads and validates (processor configs: their queries plan).

use std::path::Path;

#[test]
fn every_config_file_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("edge") {
            edgeflow_edge::config::EdgeConfig::load(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            loaded += 1;
        } else if name.starts_with("processor") {
            let cfg = edgeflow::processor::ProcessorConfig::load(&path)
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            // Formats, tables and every query's SQL plan against the declared streams.
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(edgeflow::processor::check(&cfg))
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            loaded += 1;
        } else {
            panic!(
                "{name}: no loader knows this config; name edge agent configs edge*.toml and processor configs processor*.toml"
            );
        }
    }
    assert!(loaded > 0, "no configs found in {}", dir.display());
}
