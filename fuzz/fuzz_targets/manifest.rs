//! Bytes → `Manifest::from_embedded`: never panics, never accepts a length over the cap, reads
//! at most `EMBED_SIZE` bytes, and whatever it accepts writes back and reads back the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime_api::manifest::{EMBED_SIZE, MAX_JSON_LEN, Manifest, ManifestError};

fuzz_target!(|data: &[u8]| {
    let result = Manifest::from_embedded(data);
    if data.len() > EMBED_SIZE {
        assert_eq!(
            Manifest::from_embedded(&data[..EMBED_SIZE]),
            result,
            "the reader looked past EMBED_SIZE bytes"
        );
    }
    let manifest = match result {
        Ok(manifest) => manifest,
        Err(ManifestError::Oversized { declared, max }) => {
            assert!(declared > max && max == MAX_JSON_LEN);
            return;
        }
        Err(ManifestError::Truncated { expected, found }) => {
            assert!(expected > found && expected <= EMBED_SIZE && found == data.len());
            return;
        }
        Err(_) => return,
    };
    let declared = u32::from_le_bytes([data[16], data[17], data[18], data[19]]) as usize;
    assert!(declared <= MAX_JSON_LEN);
    let embedded = manifest
        .to_embedded()
        .expect("a manifest that was read can be written back");
    assert_eq!(embedded.len(), EMBED_SIZE);
    let again = Manifest::from_embedded(&embedded).expect("a written manifest reads back");
    assert_eq!(again, manifest, "the round trip changed the manifest");
});
