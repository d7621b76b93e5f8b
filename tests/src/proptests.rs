//! Bounded property tests of the manifest reader and the file scanner (issue 7, item 4): the
//! CI-sized companion of the cargo-fuzz targets in `fuzz/`.
//!
//! (a) Arbitrary bytes, with or without the magic header, never panic
//!     `Manifest::from_embedded` and never get a length over `MAX_JSON_LEN` accepted.
//! (b) Arbitrary valid manifests round-trip through `embed_json`, `to_embedded` and the const
//!     writer of the export macro.
//! (c) Byte flips, truncations and splices of the built echo library never panic
//!     `read_manifest_from_bytes`, and never yield a manifest other than the original unless the
//!     manifest's own bytes were changed.
//!
//! The case counts keep the whole module to a few seconds in a debug build on two cores.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::OnceLock;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;
use runtime_api::Capabilities;
use runtime_api::manifest::{
    ConstRuntime, EMBED_SIZE, MAGIC, MAX_JSON_LEN, Manifest, ManifestError, build_embedded,
    embed_json,
};
use runtime_loader::inspect::read_manifest_from_bytes;
use serde_json::{Value, json};

use crate::support::{artifacts, manifest_region};

const HEADER_LEN: usize = EMBED_SIZE - MAX_JSON_LEN;

/// What `from_embedded` may say about `bytes`, whatever they are.
fn check_reader_bounds(bytes: &[u8]) -> Result<(), TestCaseError> {
    let result = Manifest::from_embedded(bytes);
    match &result {
        Ok(_) => {
            // Accepted: the header was there and the declared length fits.
            prop_assert!(bytes.len() >= HEADER_LEN);
            prop_assert_eq!(&bytes[..16], &MAGIC[..]);
            let declared = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
            prop_assert!(
                declared <= MAX_JSON_LEN,
                "accepted {} bytes of JSON",
                declared
            );
        }
        Err(ManifestError::Oversized { declared, max }) => {
            prop_assert_eq!(*max, MAX_JSON_LEN);
            prop_assert!(*declared > MAX_JSON_LEN);
        }
        Err(ManifestError::Truncated { expected, found }) => {
            prop_assert_eq!(*found, bytes.len());
            prop_assert!(*expected > *found);
            prop_assert!(*expected <= EMBED_SIZE, "asked for {} bytes", expected);
        }
        Err(ManifestError::BadMagic) => prop_assert_ne!(&bytes[..15], &MAGIC[..15]),
        Err(ManifestError::UnsupportedFormat { found, .. }) => {
            prop_assert_eq!(*found, bytes[15]);
            prop_assert_ne!(*found, MAGIC[15]);
        }
        Err(_) => {}
    }
    // The reader never looks past EMBED_SIZE bytes.
    if bytes.len() > EMBED_SIZE {
        prop_assert_eq!(&Manifest::from_embedded(&bytes[..EMBED_SIZE]), &result);
    }
    Ok(())
}

/// Up to `64 + max` bytes: a shrinkable prefix, then a pseudo-random tail of a shrinkable length
/// (generating 8 KiB vectors byte by byte is slow in a debug build).
fn bytes_up_to(max: usize) -> impl Strategy<Value = Vec<u8>> {
    (vec(any::<u8>(), 0..64), 0..max, any::<u64>()).prop_map(|(mut bytes, tail, seed)| {
        let mut state = seed | 1;
        bytes.extend((0..tail).map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        }));
        bytes
    })
}

const JSON_TOKENS: &[u8] = b"{}[]\":,\\ 0-.eE";

/// Bytes that start with the magic header, with a declared length that is sometimes in range.
fn behind_magic() -> impl Strategy<Value = Vec<u8>> {
    let declared = prop_oneof![
        any::<u32>(),
        (0..=MAX_JSON_LEN as u32 + 8),
        Just(MAX_JSON_LEN as u32),
        Just(MAX_JSON_LEN as u32 + 1),
    ];
    let body = prop_oneof![
        bytes_up_to(EMBED_SIZE),
        // JSON-looking bodies reach serde_json rather than stopping at the length check.
        vec(
            (any::<bool>(), any::<u8>()).prop_map(|(token, byte)| {
                if token {
                    JSON_TOKENS[usize::from(byte) % JSON_TOKENS.len()]
                } else {
                    byte
                }
            }),
            0..256
        ),
    ];
    (declared, any::<bool>(), body).prop_map(|(declared, exact, body)| {
        let mut bytes = MAGIC.to_vec();
        // Half the time the declared length is the body's, so the JSON is what gets judged.
        let declared = if exact { body.len() as u32 } else { declared };
        bytes.extend_from_slice(&declared.to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes
    })
}

/// Valid embedded manifests with one JSON byte changed, cut or duplicated.
fn mutated_manifest() -> impl Strategy<Value = Vec<u8>> {
    (manifest_json(), any::<Index>(), any::<u8>(), 0..3u8).prop_map(|(value, at, byte, how)| {
        let mut json = serde_json::to_vec(&value).unwrap();
        json.truncate(MAX_JSON_LEN);
        let i = at.index(json.len());
        match how {
            0 => json[i] = byte,
            1 => json.truncate(i),
            _ => {
                let dup = json[i];
                json.insert(i, dup);
            }
        }
        embed_json(&json).unwrap_or(json)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_reader(bytes in bytes_up_to(EMBED_SIZE + 64)) {
        check_reader_bounds(&bytes)?;
    }

    #[test]
    fn bytes_behind_the_magic_never_panic_the_reader(bytes in behind_magic()) {
        check_reader_bounds(&bytes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn mutated_manifests_never_panic_the_reader(bytes in mutated_manifest()) {
        check_reader_bounds(&bytes)?;
    }
}

/// Characters that stress the JSON writers besides any char: quotes, backslashes, every control
/// character, DEL, a line separator, a BOM, multi-byte and astral characters.
const SPECIAL_CHARS: [char; 8] = ['"', '\\', '/', '\u{7f}', '\u{2028}', '\u{feff}', 'é', '😀'];

/// One character, a quarter of them any char, the rest biased to what needs escaping. (Picked
/// by hand rather than with `prop_oneof!`, which is slow per element in a debug build.)
fn tricky_char() -> impl Strategy<Value = char> {
    (0u8..16, any::<u8>(), any::<char>()).prop_map(|(kind, byte, any)| match kind {
        0..=3 => any,
        4..=7 => char::from(byte % 0x20),
        8..=12 => SPECIAL_CHARS[usize::from(byte) % SPECIAL_CHARS.len()],
        _ => char::from(b'a' + byte % 26),
    })
}

fn text(max: usize) -> impl Strategy<Value = String> {
    vec(tricky_char(), 0..=max).prop_map(|chars| chars.into_iter().collect())
}

fn id() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,63}"
}

/// A generated runtime, before it becomes JSON or a `ConstRuntime`.
#[derive(Debug, Clone)]
struct GenRuntime {
    id: String,
    display_name: String,
    description: String,
    aliases: Vec<String>,
    capabilities: Capabilities,
}

#[derive(Debug, Clone)]
struct GenManifest {
    api_version: String,
    plugin_name: String,
    plugin_version: String,
    runtimes: Vec<GenRuntime>,
}

fn gen_runtime() -> impl Strategy<Value = GenRuntime> {
    (
        id(),
        text(32),
        text(64),
        vec(id(), 0..4),
        prop_oneof![any::<u64>(), 0u64..64],
    )
        .prop_map(
            |(id, display_name, description, aliases, bits)| GenRuntime {
                id,
                display_name,
                description,
                aliases,
                capabilities: Capabilities::from_bits(bits),
            },
        )
}

fn gen_manifest() -> impl Strategy<Value = GenManifest> {
    (text(32), text(32), text(32), vec(gen_runtime(), 0..4)).prop_map(
        |(api_version, plugin_name, plugin_version, runtimes)| GenManifest {
            api_version,
            plugin_name,
            plugin_version,
            runtimes,
        },
    )
}

fn to_json(m: &GenManifest) -> Value {
    json!({
        "api_version": m.api_version,
        "plugin_name": m.plugin_name,
        "plugin_version": m.plugin_version,
        "runtimes": m.runtimes.iter().map(|rt| json!({
            "id": rt.id,
            "display_name": rt.display_name,
            "description": rt.description,
            "aliases": rt.aliases,
            "capabilities": rt.capabilities,
        })).collect::<Vec<_>>(),
    })
}

fn manifest_json() -> impl Strategy<Value = Value> {
    gen_manifest().prop_map(|m| to_json(&m))
}

fn assert_matches(
    parsed: &Manifest,
    m: &GenManifest,
    known_only: bool,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(&parsed.api_version, &m.api_version);
    prop_assert_eq!(&parsed.plugin_name, &m.plugin_name);
    prop_assert_eq!(&parsed.plugin_version, &m.plugin_version);
    prop_assert_eq!(parsed.runtimes.len(), m.runtimes.len());
    for (got, want) in parsed.runtimes.iter().zip(&m.runtimes) {
        prop_assert_eq!(&got.id, &want.id);
        prop_assert_eq!(&got.display_name, &want.display_name);
        prop_assert_eq!(&got.description, &want.description);
        prop_assert_eq!(&got.aliases, &want.aliases);
        let caps = if known_only {
            Capabilities::from_bits(want.capabilities.bits() & known_bits())
        } else {
            want.capabilities
        };
        prop_assert_eq!(got.capabilities, caps);
    }
    Ok(())
}

fn known_bits() -> u64 {
    Capabilities::KNOWN
        .iter()
        .fold(0, |bits, (cap, _)| bits | cap.bits())
}

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn valid_manifests_round_trip(m in gen_manifest()) {
        let json = serde_json::to_vec(&to_json(&m)).unwrap();
        if json.len() > MAX_JSON_LEN {
            prop_assert_eq!(
                embed_json(&json),
                Err(ManifestError::Oversized { declared: json.len(), max: MAX_JSON_LEN })
            );
            return Ok(());
        }
        let embedded = embed_json(&json).unwrap();
        prop_assert_eq!(embedded.len(), EMBED_SIZE);
        let parsed = Manifest::from_embedded(&embedded).unwrap();
        assert_matches(&parsed, &m, false)?;

        // The serde writer: to_embedded, then back.
        let again = parsed.to_embedded().unwrap();
        prop_assert_eq!(again.len(), EMBED_SIZE);
        prop_assert_eq!(&Manifest::from_embedded(&again).unwrap(), &parsed);

        // The export macro's const writer (which writes known capabilities only).
        let runtimes: Vec<ConstRuntime> = m
            .runtimes
            .iter()
            .map(|rt| ConstRuntime {
                id: leak(&rt.id),
                display_name: leak(&rt.display_name),
                description: leak(&rt.description),
                aliases: Box::leak(
                    rt.aliases.iter().map(|a| leak(a)).collect::<Vec<_>>().into_boxed_slice(),
                ),
                capabilities: rt.capabilities,
                config_schema: "",
                permissions: "",
            })
            .collect();
        let built = build_embedded(
            &m.api_version,
            "AGENT_RUNTIMES_ROOT_x",
            &m.plugin_name,
            &m.plugin_version,
            &runtimes,
        );
        let from_const = Manifest::from_embedded(&built).unwrap();
        assert_matches(&from_const, &m, true)?;
    }
}

#[test]
fn a_manifest_one_byte_too_long_is_refused() {
    let base = serde_json::to_vec(&json!({
        "api_version": "0.1.0", "plugin_name": "p", "plugin_version": "1.0.0",
        "runtimes": [{"id": "x", "display_name": "", "description": "", "aliases": [],
                      "capabilities": []}],
    }))
    .unwrap();
    // Pad the document with trailing whitespace (valid JSON) up to and past the limit.
    let mut fits = base.clone();
    fits.resize(MAX_JSON_LEN, b' ');
    let embedded = embed_json(&fits).unwrap();
    assert_eq!(embedded.len(), EMBED_SIZE);
    assert!(Manifest::from_embedded(&embedded).is_ok());
    let mut over = fits;
    over.push(b' ');
    assert_eq!(
        embed_json(&over),
        Err(ManifestError::Oversized {
            declared: MAX_JSON_LEN + 1,
            max: MAX_JSON_LEN
        })
    );
}

/// The built echo library, read once.
struct Library {
    bytes: Vec<u8>,
    manifest: Manifest,
    /// Where the embedded manifest starts.
    offset: usize,
    /// Where its JSON ends: changing anything before this may change the manifest.
    json_end: usize,
}

fn library() -> &'static Library {
    static LIBRARY: OnceLock<Library> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let bytes = std::fs::read(&artifacts().echo).expect("read the echo library");
        let manifest = read_manifest_from_bytes(&bytes).expect("the echo library has a manifest");
        let offset = manifest_region(&bytes).start;
        let declared = u32::from_le_bytes(bytes[offset + 16..offset + 20].try_into().unwrap());
        let json_end = offset + HEADER_LEN + declared as usize;
        Library {
            bytes,
            manifest,
            offset,
            json_end,
        }
    })
}

/// Positions in the library, biased towards the headers at the start, the section or load
/// commands table at the end (ELF keeps it there) and the manifest itself.
fn position(lib: &'static Library) -> impl Strategy<Value = usize> {
    let len = lib.bytes.len();
    prop_oneof![
        any::<Index>().prop_map(move |i| i.index(len)),
        0..len.min(4096),
        len.saturating_sub(4096)..len,
        lib.offset..lib.offset + EMBED_SIZE,
    ]
}

/// Runs the scanner on `bytes`, catching a panic so that the caller can put its shared buffer
/// back before re-raising it (proptest then reports and shrinks the case).
fn scan(bytes: &[u8]) -> std::thread::Result<Result<Manifest, runtime_loader::RejectReason>> {
    catch_unwind(AssertUnwindSafe(|| read_manifest_from_bytes(bytes)))
}

fn touches_manifest(lib: &Library, start: usize, len: usize) -> bool {
    start < lib.json_end && start + len > lib.offset
}

#[test]
fn byte_flips_of_a_library_never_panic_the_scanner() {
    let lib = library();
    // One shared copy, changed and put back per case: the library is tens of MiB.
    let buffer = RefCell::new(lib.bytes.clone());
    let strategy = vec((position(lib), 1u8..=255), 1..8);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(1000));
    let outcome = runner.run(&strategy, |flips| {
        let result = {
            let mut bytes = buffer.borrow_mut();
            for &(at, mask) in &flips {
                bytes[at] ^= mask;
            }
            let result = scan(&bytes);
            for &(at, mask) in flips.iter().rev() {
                bytes[at] ^= mask;
            }
            result
        };
        let result = result.unwrap_or_else(|panic| resume_unwind(panic));
        let changed_manifest = flips.iter().any(|&(at, _)| touches_manifest(lib, at, 1));
        if let (Ok(manifest), false) = (result, changed_manifest) {
            prop_assert_eq!(&manifest, &lib.manifest, "flips {:?}", flips);
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    assert_eq!(*buffer.borrow(), lib.bytes, "the buffer was put back");
}

#[test]
fn truncations_of_a_library_never_panic_the_scanner() {
    let lib = library();
    let len = lib.bytes.len();
    let cut = prop_oneof![
        position(lib),
        0..lib.json_end,
        lib.offset.saturating_sub(64)..lib.json_end + 64,
    ];
    let mut runner = TestRunner::new(ProptestConfig::with_cases(1000));
    let outcome = runner.run(&cut, |cut| {
        let cut = cut.min(len);
        let result = scan(&lib.bytes[..cut]).unwrap_or_else(|panic| resume_unwind(panic));
        if let Ok(manifest) = result {
            prop_assert!(
                cut >= lib.json_end,
                "a cut at {} inside the manifest was read",
                cut
            );
            prop_assert_eq!(&manifest, &lib.manifest, "cut at {}", cut);
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

#[test]
fn overwriting_splices_of_a_library_never_panic_the_scanner() {
    let lib = library();
    let len = lib.bytes.len();
    let buffer = RefCell::new(lib.bytes.clone());
    let strategy = (position(lib), position(lib), 1usize..1024);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(1000));
    let outcome = runner.run(&strategy, |(from, to, n)| {
        let n = n.min(len - from).min(len - to);
        let result = {
            let mut bytes = buffer.borrow_mut();
            bytes.copy_within(from..from + n, to);
            let result = scan(&bytes);
            bytes[to..to + n].copy_from_slice(&lib.bytes[to..to + n]);
            result
        };
        let result = result.unwrap_or_else(|panic| resume_unwind(panic));
        if let (Ok(manifest), false) = (result, touches_manifest(lib, to, n)) {
            prop_assert_eq!(
                &manifest,
                &lib.manifest,
                "{} bytes from {} to {}",
                n,
                from,
                to
            );
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    assert_eq!(*buffer.borrow(), lib.bytes, "the buffer was put back");
}

#[test]
fn inserting_and_removing_bytes_in_a_library_never_panics_the_scanner() {
    let lib = library();
    let len = lib.bytes.len();
    // Each case copies the whole library, so fewer cases.
    let strategy = (
        position(lib),
        position(lib),
        0usize..256,
        any::<bool>(),
        vec(any::<u8>(), 0..64),
    );
    let mut runner = TestRunner::new(ProptestConfig::with_cases(48));
    let outcome = runner.run(&strategy, |(at, from, n, remove, noise)| {
        let mut bytes = lib.bytes.clone();
        if remove {
            let n = n.min(len - at);
            bytes.drain(at..at + n);
        } else {
            let n = n.min(len - from);
            let mut chunk = lib.bytes[from..from + n].to_vec();
            chunk.extend_from_slice(&noise);
            bytes.splice(at..at, chunk);
        }
        scan(&bytes)
            .unwrap_or_else(|panic| resume_unwind(panic))
            .ok();
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
