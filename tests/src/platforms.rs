//! The manifest reader on the formats of the other platforms, with files crafted here (this
//! project builds and runs on Linux only, so no real `.dylib` or `.dll` is at hand): a Mach-O
//! dynamic library and a PE DLL, each exporting a manifest the way the export macro does, and
//! the ways such files go wrong. What they prove: the reader finds the export (Mach-O's leading
//! `_` included), maps its address to file bytes through the sections, and refuses what is not
//! a library. Loading such a library (dlopen/LoadLibrary, abi_stable's checks) is not covered.

use object::write::{Object, StandardSection, Symbol, SymbolSection};
use object::{Architecture, BinaryFormat, Endianness, SymbolFlags, SymbolKind, SymbolScope};
use runtime_api::manifest::{Manifest, embed_json};
use runtime_loader::RejectReason;
use runtime_loader::inspect::read_manifest_from_bytes;
use serde_json::json;

const SYMBOL: &str = "AGENT_RUNTIMES_MANIFEST_crafted";

fn manifest_json() -> serde_json::Value {
    json!({
        "contract": 1,
        "api_version": "0.2.0",
        "root_symbol": "AGENT_RUNTIMES_ROOT_crafted",
        "plugin_name": "crafted",
        "plugin_version": "1.2.3",
        "runtimes": [{
            "id": "crafted", "display_name": "Crafted", "description": "made by a test",
            "aliases": ["handmade"], "capabilities": ["streaming"], "config_schema": ""
        }]
    })
}

fn embedded() -> Vec<u8> {
    embed_json(manifest_json().to_string().as_bytes()).unwrap()
}

fn expected() -> Manifest {
    serde_json::from_value(manifest_json()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Mach-O

const MH_OBJECT: u32 = 1;
const MH_EXECUTE: u32 = 2;
const MH_DYLIB: u32 = 6;

/// A Mach-O file with the manifest in `__DATA,__const` under `symbol` (object's writer adds
/// Mach-O's leading `_`), then its file type set to `file_type`: object's writer makes
/// relocatable objects, and a dylib differs from one by that field for everything the reader
/// looks at (the symbol table and `LC_DYSYMTAB`'s external symbols, the sections).
fn macho(symbol: &str, file_type: u32, architecture: Architecture) -> Vec<u8> {
    let mut object = Object::new(BinaryFormat::MachO, architecture, Endianness::Little);
    let section = object.section_id(StandardSection::ReadOnlyData);
    // Something before the manifest, so its address is not the section's start.
    object.append_section_data(section, &[0xAB; 24], 8);
    let offset = object.append_section_data(section, &embedded(), 8);
    object.add_symbol(Symbol {
        name: symbol.as_bytes().to_vec(),
        value: offset,
        size: embedded().len() as u64,
        kind: SymbolKind::Data,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Section(section),
        flags: SymbolFlags::None,
    });
    let mut bytes = object.write().unwrap();
    // mach_header(_64): magic, cputype, cpusubtype, then filetype at offset 12.
    assert_eq!(
        u32::from_le_bytes(bytes[12..16].try_into().unwrap()),
        MH_OBJECT
    );
    bytes[12..16].copy_from_slice(&file_type.to_le_bytes());
    bytes
}

#[test]
fn a_mach_o_dylib_s_manifest_is_read() {
    for architecture in [Architecture::Aarch64, Architecture::X86_64] {
        let bytes = macho(SYMBOL, MH_DYLIB, architecture);
        assert_eq!(read_manifest_from_bytes(&bytes).unwrap(), expected());
    }
    // Libraries from before contracts were versioned export the bare name.
    let bytes = macho("AGENT_RUNTIMES_MANIFEST", MH_DYLIB, Architecture::Aarch64);
    assert_eq!(read_manifest_from_bytes(&bytes).unwrap(), expected());
}

#[test]
fn mach_o_files_that_are_not_plugin_libraries_are_refused() {
    let object = macho(SYMBOL, MH_OBJECT, Architecture::Aarch64);
    assert!(
        matches!(read_manifest_from_bytes(&object), Err(RejectReason::NotALibrary { detail }) if detail.contains("Relocatable"))
    );
    let executable = macho(SYMBOL, MH_EXECUTE, Architecture::Aarch64);
    assert!(
        matches!(read_manifest_from_bytes(&executable), Err(RejectReason::NotALibrary { detail }) if detail.contains("executable"))
    );
    let other = macho("some_other_symbol", MH_DYLIB, Architecture::Aarch64);
    assert_eq!(
        read_manifest_from_bytes(&other),
        Err(RejectReason::NoManifest)
    );
    let near = macho("AGENT_RUNTIMES_MANIFEST_", MH_DYLIB, Architecture::Aarch64);
    assert_eq!(
        read_manifest_from_bytes(&near),
        Err(RejectReason::NoManifest)
    );
}

// ---------------------------------------------------------------------------------------------
// PE

const IMAGE_BASE: u64 = 0x1_8000_0000;

/// How to spoil a crafted DLL.
#[derive(Clone, Copy, PartialEq)]
enum Pe {
    Dll,
    Exe,
    /// The export's address points past every section.
    ExportOutside,
    /// The manifest's magic bytes are wrong.
    BadMagic,
}

/// A 64-bit PE image with `.rdata` (the manifest) and `.edata` (an export directory naming
/// `symbol`), laid out with object's PE writer; the export directory is written by hand.
fn pe(symbol: &str, kind: Pe) -> Vec<u8> {
    use object::pe as image;
    use object::write::pe::{NtHeaders, Writer};

    let mut manifest = embedded();
    if kind == Pe::BadMagic {
        manifest[0] ^= 0xFF;
    }
    let dll_name = b"crafted.dll\0";
    let name = [symbol.as_bytes(), b"\0"].concat();
    // Directory (40) + address table (4) + name pointers (4) + ordinals (2) + names.
    let edata_len = (40 + 4 + 4 + 2 + dll_name.len() + name.len()) as u32;

    let mut buffer = Vec::new();
    let mut writer = Writer::new(true, 0x1000, 0x200, &mut buffer);
    writer.reserve_dos_header_and_stub();
    writer.reserve_nt_headers(image::IMAGE_NUMBEROF_DIRECTORY_ENTRIES);
    writer.reserve_section_headers(2);
    let rdata = writer.reserve_rdata_section(manifest.len() as u32);
    let edata = writer.reserve_edata_section(edata_len);

    let export_rva = match kind {
        Pe::ExportOutside => edata.virtual_address + 0x10_0000,
        _ => rdata.virtual_address,
    };
    let base = edata.virtual_address;
    let functions = base + 40;
    let names = functions + 4;
    let ordinals = names + 4;
    let dll_name_rva = ordinals + 2;
    let name_rva = dll_name_rva + dll_name.len() as u32;
    let mut edata_bytes = Vec::new();
    for word in [0u32, 0] {
        edata_bytes.extend_from_slice(&word.to_le_bytes()); // characteristics, time stamp
    }
    edata_bytes.extend_from_slice(&[0; 4]); // major and minor version
    for word in [dll_name_rva, 1, 1, 1, functions, names, ordinals] {
        edata_bytes.extend_from_slice(&word.to_le_bytes());
    }
    edata_bytes.extend_from_slice(&export_rva.to_le_bytes());
    edata_bytes.extend_from_slice(&name_rva.to_le_bytes());
    edata_bytes.extend_from_slice(&0u16.to_le_bytes());
    edata_bytes.extend_from_slice(dll_name);
    edata_bytes.extend_from_slice(&name);
    assert_eq!(edata_bytes.len() as u32, edata_len);

    let dll = if kind == Pe::Exe {
        0
    } else {
        image::IMAGE_FILE_DLL
    };
    writer.write_dos_header_and_stub().unwrap();
    writer.write_nt_headers(NtHeaders {
        machine: image::IMAGE_FILE_MACHINE_AMD64,
        time_date_stamp: 0,
        characteristics: image::IMAGE_FILE_EXECUTABLE_IMAGE
            | image::IMAGE_FILE_LARGE_ADDRESS_AWARE
            | dll,
        major_linker_version: 14,
        minor_linker_version: 0,
        address_of_entry_point: 0,
        image_base: IMAGE_BASE,
        major_operating_system_version: 6,
        minor_operating_system_version: 0,
        major_image_version: 0,
        minor_image_version: 0,
        major_subsystem_version: 6,
        minor_subsystem_version: 0,
        subsystem: image::IMAGE_SUBSYSTEM_WINDOWS_GUI,
        dll_characteristics: 0,
        size_of_stack_reserve: 0x10_0000,
        size_of_stack_commit: 0x1000,
        size_of_heap_reserve: 0x10_0000,
        size_of_heap_commit: 0x1000,
    });
    writer.write_section_headers();
    writer.write_section(rdata.file_offset, &manifest);
    writer.write_section(edata.file_offset, &edata_bytes);
    buffer
}

#[test]
fn a_pe_dll_s_manifest_is_read() {
    let bytes = pe(SYMBOL, Pe::Dll);
    assert_eq!(read_manifest_from_bytes(&bytes).unwrap(), expected());
}

#[test]
fn pe_files_that_are_not_plugin_libraries_are_refused() {
    let exe = pe(SYMBOL, Pe::Exe);
    assert!(
        matches!(read_manifest_from_bytes(&exe), Err(RejectReason::NotALibrary { detail }) if detail.contains("executable"))
    );
    let other = pe("DllMain", Pe::Dll);
    assert_eq!(
        read_manifest_from_bytes(&other),
        Err(RejectReason::NoManifest)
    );
    let outside = pe(SYMBOL, Pe::ExportOutside);
    assert!(
        matches!(read_manifest_from_bytes(&outside), Err(RejectReason::MalformedManifest { detail }) if detail.contains("outside")),
        "{:?}",
        read_manifest_from_bytes(&outside)
    );
    let spoiled = pe(SYMBOL, Pe::BadMagic);
    assert!(matches!(
        read_manifest_from_bytes(&spoiled),
        Err(RejectReason::MalformedManifest { .. })
    ));
}

#[test]
fn truncated_mach_o_and_pe_files_are_refused_without_a_panic() {
    for whole in [
        pe(SYMBOL, Pe::Dll),
        macho(SYMBOL, MH_DYLIB, Architecture::Aarch64),
    ] {
        // Cutting only the zeros that pad the file's end leaves a whole library; any cut
        // before them loses a header, the manifest, the export or its name.
        let meaningful = whole.iter().rposition(|&b| b != 0).unwrap() + 1;
        let cuts = (0..whole.len().min(1024)).chain((1024..whole.len()).step_by(61));
        for cut in cuts {
            let read = read_manifest_from_bytes(&whole[..cut]);
            if cut < meaningful {
                assert!(
                    read.is_err(),
                    "a file of {} bytes cut at {cut}: {read:?}",
                    whole.len()
                );
            }
        }
        assert!(read_manifest_from_bytes(&whole).is_ok());
    }
}
