//! The `kelp-registry` binary, built inside the test crate so end-to-end tests can run it as
//! a real process (`CARGO_BIN_EXE_kelp-registry`); the same entry point as
//! `registry/src/main.rs`.
fn main() -> std::process::ExitCode {
    kelp_registry::server::main()
}
