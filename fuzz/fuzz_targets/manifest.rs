//! Fuzz target: the manifest reader, from raw bytes to rendered problems
//! (`capi::manifest::check_bytes`: UTF-8 decoding, variable substitution,
//! YAML with its limits, normalisation, validation, report rendering).
//! Any panic, abort, timeout or runaway allocation is a finding.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = capi::manifest::check_bytes(data);
});
