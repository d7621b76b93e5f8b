//! Reading a plugin's embedded manifest by parsing the file: no `dlopen`, no plugin code.
//!
//! The file is read lazily through `object`'s `ReadCache` (headers, the export table and the
//! manifest's 8 KiB), so listing stays cheap however large the libraries are, and every read is
//! bounded by the file's size.

use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};

use object::read::ReadCache;
use object::read::elf::{FileHeader, ProgramHeader as _, SectionHeader as _, Sym as _};
use object::{Endianness, FileKind, Object, ObjectKind, ObjectSection, ReadRef, elf};
use runtime_api::manifest::{EMBED_SIZE, Manifest, is_manifest_symbol};

pub use crate::file::describe_type;
use crate::file::{Identity, open_nonblocking};
use crate::report::RejectReason;

/// Resolves a candidate's real path, checking that it is a regular file. Nothing is opened.
///
/// # Errors
///
/// [`RejectReason::Unreadable`] for a dangling symlink, a loop or a permission error;
/// [`RejectReason::NotAFile`] for a directory, a FIFO, a device or a socket.
pub fn real_file(path: &Path) -> Result<PathBuf, RejectReason> {
    real_file_in(path, None).map(|(real, _)| real)
}

fn not_a_file(metadata: &Metadata) -> RejectReason {
    RejectReason::NotAFile {
        file_type: describe_type(metadata),
    }
}

/// As [`real_file`], also returning the file's metadata (not following a final symlink of the
/// real path). `canonical_dir`, when given, is the already-resolved folder `path` was found
/// in: a plain file there needs no `realpath`.
pub fn real_file_in(
    path: &Path,
    canonical_dir: Option<&Path>,
) -> Result<(PathBuf, Metadata), RejectReason> {
    let unreadable = |e: std::io::Error| RejectReason::Unreadable {
        detail: e.to_string(),
    };
    let own = std::fs::symlink_metadata(path).map_err(unreadable)?;
    let (real, metadata) = match (canonical_dir, path.file_name()) {
        (Some(dir), Some(name)) if !own.file_type().is_symlink() => (dir.join(name), own),
        _ => {
            let real = std::fs::canonicalize(path).map_err(unreadable)?;
            let metadata = std::fs::symlink_metadata(&real).map_err(unreadable)?;
            (real, metadata)
        }
    };
    if !metadata.is_file() {
        return Err(not_a_file(&metadata));
    }
    Ok((real, metadata))
}

/// A candidate opened for checking: the open file is what every later check reads and what is
/// loaded.
#[derive(Debug)]
pub struct Opened {
    pub real_path: PathBuf,
    pub file: File,
    /// Read from the open file.
    pub metadata: Metadata,
}

/// Resolves a candidate, checks its type without opening it, opens it (without following a
/// final symlink, without blocking), and checks on the open file that it is the same regular
/// file.
///
/// # Errors
///
/// The reason, with the real path when it was resolved.
pub fn open_candidate(
    path: &Path,
    canonical_dir: Option<&Path>,
) -> Result<Opened, (Option<PathBuf>, RejectReason)> {
    let (real_path, before) = real_file_in(path, canonical_dir).map_err(|r| (None, r))?;
    let file = open_nonblocking(&real_path, true).map_err(|e| {
        (
            Some(real_path.clone()),
            RejectReason::Unreadable {
                detail: e.to_string(),
            },
        )
    })?;
    let metadata = file.metadata().map_err(|e| {
        (
            Some(real_path.clone()),
            RejectReason::Unreadable {
                detail: e.to_string(),
            },
        )
    })?;
    if !metadata.is_file() {
        return Err((Some(real_path), not_a_file(&metadata)));
    }
    let (was, is) = (Identity::of(&before), Identity::of(&metadata));
    if !was.same_file(&is) {
        return Err((
            Some(real_path),
            RejectReason::Changed {
                detail: format!("while it was being checked, {}", was.difference(&is)),
            },
        ));
    }
    Ok(Opened {
        real_path,
        file,
        metadata,
    })
}

/// Reads the embedded manifest of the library at `real_path` (a regular file only: a FIFO or
/// a device is refused by its type before it is opened).
///
/// # Errors
///
/// The [`RejectReason`] that says what is wrong with the file.
pub fn read_manifest(real_path: &Path) -> Result<Manifest, RejectReason> {
    let opened = open_candidate(real_path, None).map_err(|(_, reason)| reason)?;
    read_manifest_from_file(&opened.file, opened.metadata.len())
}

/// Reads the embedded manifest of an open library file of `len` bytes (from the metadata
/// of that open file). Reading a manifest runs no code.
///
/// # Errors
///
/// The [`RejectReason`] that says what is wrong with the file.
pub fn read_manifest_from_file(file: &File, len: u64) -> Result<Manifest, RejectReason> {
    let cache = ReadCache::new(PositionedReads::new(file, len));
    manifest_from(&cache)
}

/// A file read at offsets (`pread`): `object` seeks before every read, and on a listing of
/// many plugins a seek per read is a system call per read for nothing. The file's first
/// [`HEAD`] bytes are read once: the ELF header, program headers and dynamic symbols usually
/// lie there, so they cost one system call instead of five.
#[derive(Debug)]
struct PositionedReads<'a> {
    file: &'a File,
    position: u64,
    len: u64,
    head: Option<Vec<u8>>,
}

/// How much of the start of a file is read at once.
const HEAD: usize = 16 * 1024;

impl<'a> PositionedReads<'a> {
    fn new(file: &'a File, len: u64) -> Self {
        PositionedReads {
            file,
            position: 0,
            len,
            head: None,
        }
    }

    /// The file's first bytes (fewer if it is shorter), read on first use.
    fn head(&mut self) -> std::io::Result<&[u8]> {
        if self.head.is_none() {
            let mut head = vec![0; HEAD];
            let mut filled = 0;
            while filled < HEAD {
                match read_at(self.file, &mut head[filled..], filled as u64)? {
                    0 => break,
                    n => filled += n,
                }
            }
            head.truncate(filled);
            self.head = Some(head);
        }
        Ok(self.head.as_deref().unwrap_or_default())
    }
}

impl std::io::Seek for PositionedReads<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(offset) => Some(offset),
            std::io::SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            std::io::SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek outside the file")
        })?;
        Ok(self.position)
    }
}

impl std::io::Read for PositionedReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = match usize::try_from(self.position) {
            Ok(start) if start < HEAD => {
                let position = self.position;
                let head = self.head()?;
                match head.get(start..start.saturating_add(buf.len())) {
                    Some(bytes) => {
                        buf.copy_from_slice(bytes);
                        bytes.len()
                    }
                    // Past what the head holds: read it from the file.
                    None => read_at(self.file, buf, position)?,
                }
            }
            _ => read_at(self.file, buf, self.position)?,
        };
        self.position += read as u64;
        Ok(read)
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

/// Reads the embedded manifest of a library held in memory. Never panics, whatever the bytes;
/// this is what the fuzz targets exercise.
///
/// # Errors
///
/// The [`RejectReason`] that says what is wrong with the bytes.
pub fn read_manifest_from_bytes(bytes: &[u8]) -> Result<Manifest, RejectReason> {
    manifest_from(bytes)
}

fn manifest_from<'data, R: ReadRef<'data>>(data: R) -> Result<Manifest, RejectReason> {
    match FileKind::parse(data) {
        Ok(FileKind::Elf64) => elf_manifest::<elf::FileHeader64<Endianness>, R>(data),
        Ok(FileKind::Elf32) => elf_manifest::<elf::FileHeader32<Endianness>, R>(data),
        _ => generic_manifest(data),
    }
}

fn executable(why: &str) -> RejectReason {
    RejectReason::NotALibrary {
        detail: format!("it is an executable ({why})"),
    }
}

fn not_a_library(error: object::Error) -> RejectReason {
    RejectReason::NotALibrary {
        detail: error.to_string(),
    }
}

fn outside_the_file() -> RejectReason {
    RejectReason::MalformedManifest {
        detail: "the manifest symbol points outside the file's data".to_owned(),
    }
}

/// ELF, read lean: the header, the program headers, the section table and the dynamic symbols
/// only — not the full symbol table or section names, which dominate the cost otherwise.
fn elf_manifest<'data, Elf, R>(data: R) -> Result<Manifest, RejectReason>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'data>,
{
    let header = Elf::parse(data).map_err(not_a_library)?;
    let endian = header.endian().map_err(not_a_library)?;
    match header.e_type(endian) {
        elf::ET_DYN => {}
        elf::ET_EXEC => return Err(executable("ELF type EXEC")),
        other => {
            return Err(RejectReason::NotALibrary {
                detail: format!("its ELF type is {other}, not a shared object"),
            });
        }
    }
    // A position-independent executable is `ET_DYN` too; it asks for a program interpreter.
    let program_headers = header
        .program_headers(endian, data)
        .map_err(not_a_library)?;
    if program_headers
        .iter()
        .any(|ph| ph.p_type(endian) == elf::PT_INTERP)
    {
        return Err(executable("it has a program interpreter"));
    }
    let sections = header.sections(endian, data).map_err(not_a_library)?;
    let symbols = sections
        .symbols(endian, data, elf::SHT_DYNSYM)
        .map_err(not_a_library)?;
    let symbol = symbols
        .iter()
        .find(|symbol| {
            !symbol.is_undefined(endian)
                && symbol
                    .name(endian, symbols.strings())
                    .is_ok_and(is_manifest_symbol)
        })
        .ok_or(RejectReason::NoManifest)?;
    let address: u64 = symbol.st_value(endian).into();
    let bytes = sections
        .iter()
        .filter(|section| section.sh_type(endian) != elf::SHT_NOBITS)
        .find_map(|section| {
            let start: u64 = section.sh_addr(endian).into();
            let size: u64 = section.sh_size(endian).into();
            if address < start || address >= start.checked_add(size)? {
                return None;
            }
            let within = address - start;
            let offset = Into::<u64>::into(section.sh_offset(endian)).checked_add(within)?;
            data.read_bytes_at(offset, (size - within).min(EMBED_SIZE as u64))
                .ok()
        })
        .ok_or_else(outside_the_file)?;
    parse_embedded(bytes)
}

/// Any other format `object` reads (Mach-O, PE): through its generic API.
fn generic_manifest<'data, R: ReadRef<'data>>(data: R) -> Result<Manifest, RejectReason> {
    let object = object::File::parse(data).map_err(not_a_library)?;
    match object.kind() {
        ObjectKind::Dynamic => {}
        ObjectKind::Executable => return Err(executable("its object kind is Executable")),
        other => {
            return Err(RejectReason::NotALibrary {
                detail: format!("its object kind is {other:?}"),
            });
        }
    }
    let exports = object.exports().map_err(|e| RejectReason::NotALibrary {
        detail: format!("its export table is unreadable: {e}"),
    })?;
    let symbol = exports
        .iter()
        .find(|e| {
            let name = e.name();
            is_manifest_symbol(name) || name.strip_prefix(b"_").is_some_and(is_manifest_symbol)
        })
        .ok_or(RejectReason::NoManifest)?;
    let address = symbol.address();
    let bytes = object
        .sections()
        .find_map(|section| {
            let start = section.address();
            let end = start.checked_add(section.size())?;
            if address < start || address >= end {
                return None;
            }
            let (file_offset, file_size) = section.file_range()?;
            let within = address - start;
            let available = file_size.checked_sub(within)?;
            let len = available.min(EMBED_SIZE as u64);
            let offset = file_offset.checked_add(within)?;
            data.read_bytes_at(offset, len).ok()
        })
        .ok_or_else(outside_the_file)?;
    parse_embedded(bytes)
}

fn parse_embedded(bytes: &[u8]) -> Result<Manifest, RejectReason> {
    Manifest::from_embedded(bytes).map_err(|e| RejectReason::MalformedManifest {
        detail: e.to_string(),
    })
}
