//! Discovery and first resolve.
//!
//! - `list/plugins/N`: a fresh registry discovers a folder of N plugin libraries and lists
//!   them (manifest only, no `dlopen`). The N files are copies of the echo library whose
//!   embedded manifests are patched to declare distinct ids (`echo-000`, … with aliases
//!   `parrot-000`, …), so every one is really registered rather than reported as shadowed.
//!   A process keeps the manifests it read by file identity, so this is a repeat listing (a
//!   host's rescan, a second registry).
//! - `list_changed/plugins/100`: the same after every file's identity changed (each file's
//!   modification time set anew before each listing, outside the timed part): every manifest
//!   is read again, as in a process's first listing.
//! - `list_parts/*`: one candidate's steps (its real path, its manifest).
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

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
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

/// `list_changed/plugins/100`: every file touched (a new modification time, so a new
/// identity) before each listing, so no manifest comes from the process's cache.
fn list_changed(c: &mut Criterion, lab: &Lab) {
    let mut group = c.benchmark_group("list_changed");
    let n = 100usize;
    let dir = lab.folder("list-changed-100");
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("echo-{i:03}");
        let aliases = [format!("parrot-{i:03}")];
        files.push(runtime_benches::install_with_id(
            &dir, &lab.echo, &id, &id, &aliases,
        ));
    }
    let search = SearchPath::empty().with_dir(&dir);
    let mut stamp = std::time::SystemTime::now();
    let mut touch_all = || {
        stamp += Duration::from_millis(1);
        for file in &files {
            std::fs::File::options()
                .write(true)
                .open(file)
                .and_then(|f| f.set_modified(stamp))
                .expect("touch a library");
        }
    };
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("plugins", n), |b| {
        b.iter_batched(
            &mut touch_all,
            |()| {
                let runtimes = Runtimes::with_options(LoaderOptions::STRICT);
                runtimes.discover(&search);
                black_box(runtimes.list_runtimes())
            },
            BatchSize::PerIteration,
        );
    });
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
    list_changed(&mut c, &lab);
    list_pinned(&mut c, &lab);
    list_parts(&mut c, &lab);
    first_resolve(&mut c, &lab);
    c.final_summary();
    conditions.finish();
}
