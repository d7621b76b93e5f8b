//! Discovery and first resolve.
//!
//! - `list/plugins/N`: a fresh registry discovers a folder of N plugin libraries and lists
//!   them (manifest only, no `dlopen`). The N files are copies of the echo library whose
//!   embedded manifests are patched to declare distinct ids (`echo-000`, … with aliases
//!   `parrot-000`, …), so every one is really registered rather than reported as shadowed.
//! - `list_parts/*`: one candidate's steps (its real path, its manifest), and two prototype
//!   manifest readers that measure what the fixes suggested in BENCHMARKS.md would save.
//! - `first_resolve/echo`: `resolve("echo")` on a registry that has discovered one echo library
//!   the process has never loaded: `dlopen`, abi_stable's header and layout checks, the
//!   manifest cross-check, the plugin's runtime list and log sink, and the factory. A library
//!   is never unloaded, so every iteration needs a file never loaded before: each one gets a
//!   fresh, unpatched copy under a new name (made outside the timed part, deleted after the
//!   load; the mapping stays). Sampling is flat with tiny warm-up and measurement times, which
//!   bounds the number of libraries loaded to a few hundred.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use runtime_benches::{Conditions, Lab, registry};
use runtime_loader::{LoaderOptions, Runtimes, SearchPath, inspect};

fn list(c: &mut Criterion, lab: &Lab) {
    let mut group = c.benchmark_group("list");
    for n in [1usize, 10, 100] {
        let dir = lab.folder(&format!("list-{n}"));
        for i in 0..n {
            let id = format!("echo-{i:03}");
            let aliases = [format!("parrot-{i:03}")];
            runtime_benches::install_with_id(&dir, &lab.echo, &id, &id, &aliases);
        }
        let search = SearchPath::empty().with_dir(&dir);
        // Check once that every copy is registered, none shadowed or rejected.
        let check = Runtimes::with_options(LoaderOptions::STRICT);
        let report = check.discover(&search);
        assert_eq!(check.list_runtimes().len(), n, "{report}");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("plugins", n), |b| {
            b.iter(|| {
                let runtimes = Runtimes::with_options(LoaderOptions::STRICT);
                runtimes.discover(&search);
                black_box(runtimes.list_runtimes())
            });
        });
    }
    group.finish();
}

/// `list_pinned/{lazy,eager}/100`: as `list/plugins/100`, in a folder whose `plugins.lock`
/// pins every library. Lazy (the default) checks that each file is listed and leaves hashing
/// to the load; eager (`runtimes list --all`, `LoaderOptions::eager_pins`) hashes each file
/// from its open descriptor, once per file version per process (a cache keyed by device,
/// inode, size, mtime and ctime), so its steady state is what this measures; the first
/// listing of a process pays one sha256 of every library.
fn list_pinned(c: &mut Criterion, lab: &Lab) {
    let mut group = c.benchmark_group("list_pinned");
    let n = 100usize;
    let dir = lab.folder("list-pinned-100");
    let mut lock = String::new();
    for i in 0..n {
        let id = format!("echo-{i:03}");
        let aliases = [format!("parrot-{i:03}")];
        let file = runtime_benches::install_with_id(&dir, &lab.echo, &id, &id, &aliases);
        let hash = runtime_loader::security::sha256_file(&file).expect("hash");
        let name = file.file_name().expect("a name").to_string_lossy();
        lock.push_str(&format!("{hash}  {name}\n"));
    }
    std::fs::write(dir.join("plugins.lock"), lock).expect("write plugins.lock");
    let search = SearchPath::empty().with_dir(&dir);
    for (mode, eager) in [("lazy", false), ("eager", true)] {
        let options = LoaderOptions::STRICT.with_eager_pins(eager);
        let check = Runtimes::with_options(options);
        let report = check.discover(&search);
        assert_eq!(check.list_runtimes().len(), n, "{report}");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new(mode, n), |b| {
            b.iter(|| {
                let runtimes = Runtimes::with_options(options);
                runtimes.discover(&search);
                black_box(runtimes.list_runtimes())
            });
        });
    }
    group.finish();
}

/// Prototypes of a cheaper manifest reader, to measure what the suggested loader fixes would
/// save (see BENCHMARKS.md). Both read the same bytes as `inspect::read_manifest` and return the
/// same manifest; they are not used for anything but this comparison.
mod prototype {
    use std::fs::File;
    use std::path::Path;

    use object::elf::{ET_DYN, FileHeader64, PT_INTERP, SHT_DYNSYM};
    use object::read::ReadCache;
    use object::read::elf::{FileHeader as _, ProgramHeader as _, SectionHeader as _, Sym as _};
    use object::{Endianness, Object, ObjectKind, ObjectSection, ReadRef};
    use runtime_api::manifest::{EMBED_SIZE, MANIFEST_SYMBOL, Manifest};

    fn embedded<'a, R: ReadRef<'a>>(data: R, offset: u64) -> Option<Manifest> {
        let bytes = data.read_bytes_at(offset, EMBED_SIZE as u64).ok()?;
        Manifest::from_embedded(bytes).ok()
    }

    /// The loader's reader with one change: "is it an executable?" looks for a `PT_INTERP`
    /// program header (already in memory) instead of `section_by_name(".interp")`, which reads
    /// every section's name through the `ReadCache` (a seek and a read each).
    pub fn read_manifest_interp_by_phdr(path: &Path) -> Option<Manifest> {
        let cache = ReadCache::new(File::open(path).ok()?);
        let object = object::File::parse(&cache).ok()?;
        let interp = match &object {
            object::File::Elf64(elf) => elf
                .elf_program_headers()
                .iter()
                .any(|p| p.p_type(elf.endian()) == PT_INTERP),
            _ => false,
        };
        if interp || object.kind() != ObjectKind::Dynamic {
            return None;
        }
        let exports = object.exports().ok()?;
        let symbol = exports
            .iter()
            .find(|e| e.name() == MANIFEST_SYMBOL.as_bytes())?;
        let address = symbol.address();
        let offset = object.sections().find_map(|section| {
            let start = section.address();
            let within = address.checked_sub(start)?;
            (within < section.size()).then_some(())?;
            Some(section.file_range()?.0 + within)
        })?;
        embedded(&cache, offset)
    }

    /// Parses only what the manifest needs: the ELF header, program headers, section headers
    /// and the dynamic symbol table. `object::File::parse` also reads the whole `.symtab`
    /// (110 KiB in the release echo library, which keeps line-table debug info).
    pub fn read_manifest_dynsym_only(path: &Path) -> Option<Manifest> {
        let cache = ReadCache::new(File::open(path).ok()?);
        let data = &cache;
        let header = FileHeader64::<Endianness>::parse(data).ok()?;
        let endian = header.endian().ok()?;
        if header.e_type(endian) != ET_DYN {
            return None;
        }
        let program_headers = header.program_headers(endian, data).ok()?;
        if program_headers
            .iter()
            .any(|p| p.p_type(endian) == PT_INTERP)
        {
            return None;
        }
        let sections = header.sections(endian, data).ok()?;
        let symbols = sections.symbols(endian, data, SHT_DYNSYM).ok()?;
        let address = symbols
            .iter()
            .filter(|sym| sym.is_definition(endian))
            .find(|sym| {
                sym.name(endian, symbols.strings()).ok() == Some(MANIFEST_SYMBOL.as_bytes())
            })
            .map(|sym| sym.st_value(endian))?;
        let offset = sections.iter().find_map(|section| {
            let start = section.sh_addr(endian);
            let within = address.checked_sub(start)?;
            (within < section.sh_size(endian)).then_some(())?;
            Some(section.sh_offset(endian) + within)
        })?;
        embedded(data, offset)
    }
}

/// Where the time of one candidate goes: resolving its real path and checking it is a file,
/// and reading its embedded manifest (open, parse the ELF headers and export table, read 8 KiB).
fn list_parts(c: &mut Criterion, lab: &Lab) {
    let dir = lab.folder("parts");
    let copy = runtime_benches::install(&dir, &lab.echo, "echo");
    let mut group = c.benchmark_group("list_parts");
    group.bench_function("real_file", |b| {
        b.iter(|| inspect::real_file(black_box(&copy)).expect("a file"));
    });
    group.bench_function("read_manifest", |b| {
        b.iter(|| inspect::read_manifest(black_box(&copy)).expect("a manifest"));
    });
    let manifest = inspect::read_manifest(&copy).expect("a manifest");
    type Reader = fn(&std::path::Path) -> Option<runtime_api::manifest::Manifest>;
    let prototypes: [(&str, Reader); 2] = [
        (
            "prototype_interp_by_phdr",
            prototype::read_manifest_interp_by_phdr,
        ),
        (
            "prototype_dynsym_only",
            prototype::read_manifest_dynsym_only,
        ),
    ];
    for (name, read) in prototypes {
        assert_eq!(read(&copy).as_ref(), Some(&manifest), "{name}");
        group.bench_function(name, |b| {
            b.iter(|| read(black_box(&copy)).expect("a manifest"));
        });
    }
    group.finish();
}

fn first_resolve(c: &mut Criterion, lab: &Lab) {
    let mut group = c.benchmark_group("first_resolve");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(20))
        .measurement_time(Duration::from_millis(100));
    group.bench_function("echo", |b| {
        b.iter_custom(|iters| {
            let prepared: Vec<_> = (0..iters)
                .map(|_| {
                    let copy = lab.fresh_copy(&lab.echo);
                    let runtimes = Runtimes::with_options(LoaderOptions::STRICT);
                    let report = runtimes.discover_files(&[&copy]);
                    assert_eq!(report.registered.len(), 1, "{report}");
                    (copy, runtimes)
                })
                .collect();
            let started = Instant::now();
            for (_, runtimes) in &prepared {
                black_box(runtimes.resolve("echo").expect("echo loads"));
            }
            let elapsed = started.elapsed();
            for (copy, _) in prepared {
                std::fs::remove_file(copy).expect("remove loaded copy");
            }
            elapsed
        });
    });
    group.finish();
}

fn main() {
    let conditions = Conditions::start("discovery");
    let lab = Lab::new();
    // Load one library before measuring, so that the first measured load does not also pay
    // for whatever the process sets up once (the dynamic loader's own structures, page cache).
    let warm = lab.folder("warm");
    runtime_benches::install(&warm, &lab.echo, "echo");
    let _ = registry(&[&warm]).resolve("echo").expect("echo loads");

    let mut c = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    list(&mut c, &lab);
    list_pinned(&mut c, &lab);
    list_parts(&mut c, &lab);
    first_resolve(&mut c, &lab);
    c.final_summary();
    conditions.finish();
}
