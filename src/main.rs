//! `edgeflow`: the project's command line. The gateway agent is the `edgeflow-edge`
//! binary; this binary grows the processor (`edgeflow process`) and `edgeflow demo`.

fn main() {
    eprintln!("edgeflow: the processor commands are not built yet; run the gateway agent with `edgeflow-edge --config configs/edge.toml`");
    std::process::exit(2);
}
