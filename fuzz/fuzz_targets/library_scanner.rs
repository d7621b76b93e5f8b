//! Bytes → `read_manifest_from_bytes` (ELF, Mach-O and PE through `object`), then the checks
//! discovery runs on a manifest it found: nothing panics, whatever the file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime_loader::inspect::read_manifest_from_bytes;

fuzz_target!(|data: &[u8]| {
    match read_manifest_from_bytes(data) {
        Ok(manifest) => {
            if let Err(reason) = runtime_loader::check_manifest(&manifest) {
                // The reason is shown to people: formatting it must not panic either.
                let _ = reason.to_string();
            }
        }
        Err(reason) => {
            let _ = reason.to_string();
        }
    }
});
