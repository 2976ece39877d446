//! The `kelp` binary, built inside the test crate so end-to-end tests can run it as a real
//! process (`CARGO_BIN_EXE_kelp`); it is the same entry point as `host/src/main.rs`.
fn main() -> std::process::ExitCode {
    kelp::cli::main()
}
