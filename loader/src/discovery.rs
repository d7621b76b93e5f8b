//! Discovery: registering what the discovery crate's scan admits.
//!
//! No plugin code runs here: `runtime_discovery::scan` lists and checks the folders and files;
//! what passes is registered with the open file that was checked; everything else lands in the
//! report with its reason.

use std::path::Path;

use runtime_discovery::admission::{Admission, Admitted};
use runtime_discovery::scan;
use runtime_discovery::{DiscoveryReport, Rejection, SearchPath};

use crate::library::PluginLibrary;
use crate::registry::Runtimes;

impl Runtimes {
    /// Scans every directory of `search` and registers the runtimes of every plugin that
    /// passes the checks. No plugin code runs. Nothing is silent: the returned report (also
    /// kept, see [`Runtimes::report`], and logged through `tracing`) lists every directory,
    /// every rejected candidate with its reason, and every shadowed name.
    ///
    /// Each registered library keeps the file that was checked open, and that file is what
    /// the first resolve loads; a file replaced, removed or modified after discovery is refused
    /// then with [`RejectReason::Changed`](crate::RejectReason::Changed).
    pub fn discover(&self, search: &SearchPath) -> DiscoveryReport {
        {
            let mut state = self.write();
            if !state.searched.contains(search) {
                state.searched.push(search.clone());
            }
        }
        let mut report = DiscoveryReport::default();
        let mut admission = Admission::new(&self.options, self.host_contract);
        scan::scan_search_path(
            &mut admission,
            search,
            &mut report,
            &mut |result, path, report| self.take(result, path, report),
        );
        self.record(report)
    }

    /// Checks and registers these library files, as discovery does for the files of a
    /// plugin folder (with the `plugins.lock` of the folder each file is in). Used to try a
    /// file before installing it.
    pub fn discover_files<P: AsRef<Path>>(&self, files: &[P]) -> DiscoveryReport {
        {
            let mut state = self.write();
            for file in files {
                let file = file.as_ref();
                if !state.searched_files.iter().any(|f| f == file) {
                    state.searched_files.push(file.to_owned());
                }
            }
        }
        let mut report = DiscoveryReport::default();
        let mut admission = Admission::new(&self.options, self.host_contract);
        scan::scan_files(
            &mut admission,
            files,
            &mut report,
            &mut |result, path, report| self.take(result, path, report),
        );
        self.record(report)
    }

    fn take(&self, result: Result<Admitted, Rejection>, path: &Path, report: &mut DiscoveryReport) {
        match result {
            Ok(admitted) => {
                let library = PluginLibrary::new(admitted, self.options);
                self.register_library(path, library, report);
            }
            Err(rejection) => report.rejected.push(rejection),
        }
    }
}
