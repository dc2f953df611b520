//! The `moehal` command line; see `moehal --help` and [`moehal::cli`].

fn main() -> std::process::ExitCode {
    moehal::cli::main()
}
