//! The worker executable's one loader-specific part: opening the library the host names with
//! the same checks and loading code as discovery (`runtime_discovery::scan::admit_file`, then
//! [`PluginLibrary`]). The protocol loop is `runtime_process::worker`.

use std::path::Path;
use std::process::ExitCode;

use runtime_api::host::RemoteRuntime;
use runtime_api::{RuntimeError, Value};
use runtime_process::protocol::CheckedFile;
use runtime_process::worker::WorkerLibrary;

use crate::LoaderOptions;
use crate::library::PluginLibrary;

/// Runs the worker; the whole of the `runtimes-worker` binary.
pub fn worker_main() -> ExitCode {
    runtime_process::worker::worker_main(open)
}

fn open(
    path: &Path,
    allow_insecure: bool,
    checked: Option<&CheckedFile>,
) -> Result<Box<dyn WorkerLibrary>, String> {
    let options = LoaderOptions::STRICT.with_allow_insecure(allow_insecure);
    if let Some(checked) = checked {
        // The file the host checked, verified again here before the dynamic loader sees it.
        let library = PluginLibrary::inherited(path, checked, options)
            .map_err(|reason| reason.to_string())?;
        library.load_now().map_err(|reason| reason.to_string())?;
        return Ok(Box::new(library));
    }
    let admitted =
        runtime_discovery::scan::admit_file(&options, runtime_api::version::CONTRACT_VERSION, path)
            .map_err(|rejection| rejection.reason.to_string())?;
    let library = PluginLibrary::new(admitted, options);
    library.load_now().map_err(|reason| reason.to_string())?;
    Ok(Box::new(library))
}

impl WorkerLibrary for PluginLibrary {
    fn plugin_name(&self) -> &str {
        &self.manifest.plugin_name
    }

    fn plugin_version(&self) -> &str {
        &self.manifest.plugin_version
    }

    fn identity(&self) -> Option<runtime_discovery::security::Identity> {
        self.loaded_identity()
    }

    fn sha256(&self) -> Option<String> {
        self.loaded_sha256()
    }

    fn instantiate(
        &self,
        id: &str,
        config: &Value,
    ) -> Result<Result<RemoteRuntime, RuntimeError>, String> {
        PluginLibrary::instantiate(self, id, config).map_err(|reason| reason.to_string())
    }

    fn validate_config(
        &self,
        id: &str,
        config: &Value,
    ) -> Result<Result<Vec<String>, RuntimeError>, String> {
        PluginLibrary::validate_config(self, id, config).map_err(|reason| reason.to_string())
    }
}
