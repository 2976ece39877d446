//! `kelp-registry`: the registry server and its admin commands (see `server`).
fn main() -> std::process::ExitCode {
    kelp_registry::server::main()
}
