fn main() -> std::process::ExitCode {
    capi::cli::run()
}
