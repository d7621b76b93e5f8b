//! Rust errors as the Python exception classes of `agent_runtimes._errors`.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use runtime_api::RuntimeError;
use runtime_loader::ResolveError;

use crate::convert;

/// A runtime's error as the exception class of its kind (`Timeout`, `Cancelled`...), with
/// `kind`, `message`, `retriable` and `metadata`.
pub fn runtime_error(py: Python<'_>, error: &RuntimeError) -> PyErr {
    build(py, |errors| {
        let metadata = convert::to_py(py, &error.metadata)?;
        errors.call_method1(
            "_from_native",
            (
                error.kind.as_str(),
                error.message.as_str(),
                error.retriable,
                metadata,
            ),
        )
    })
}

/// A resolution failure as `NotFound`, `Rejected`, `Failed`, or (the factory's error) the
/// class of its kind, with the loader's message.
pub fn resolve_error(py: Python<'_>, error: &ResolveError) -> PyErr {
    let message = error.to_string();
    build(py, |errors| match error {
        ResolveError::NotFound {
            name,
            available,
            suggestion,
        } => {
            let available: Vec<String> = available.iter().map(|a| a.id.clone()).collect();
            errors.call_method1(
                "_resolve_error",
                (
                    "not_found",
                    message.as_str(),
                    name.as_str(),
                    suggestion.clone(),
                    available,
                ),
            )
        }
        ResolveError::Rejected { name, .. } => errors.call_method1(
            "_resolve_error",
            (
                "rejected",
                message.as_str(),
                name.as_str(),
                None::<String>,
                Vec::<String>::new(),
            ),
        ),
        ResolveError::Failed { name, .. } => errors.call_method1(
            "_resolve_error",
            (
                "failed",
                message.as_str(),
                name.as_str(),
                None::<String>,
                Vec::<String>::new(),
            ),
        ),
        ResolveError::Factory { error, .. } => {
            let metadata = convert::to_py(py, &error.metadata)?;
            errors.call_method1(
                "_from_native",
                (
                    error.kind.as_str(),
                    message.as_str(),
                    error.retriable,
                    metadata,
                ),
            )
        }
        _ => errors.call_method1(
            "_from_native",
            ("internal", message.as_str(), false, py.None()),
        ),
    })
}

fn build<'py>(
    py: Python<'py>,
    make: impl FnOnce(&Bound<'py, PyModule>) -> PyResult<Bound<'py, PyAny>>,
) -> PyErr {
    let made = PyModule::import(py, "agent_runtimes._errors").and_then(|errors| make(&errors));
    match made {
        Ok(exception) => PyErr::from_value(exception),
        // The package is broken (its Python half is missing): still raise something precise.
        Err(e) => PyRuntimeError::new_err(format!("agent_runtimes: cannot build the error: {e}")),
    }
}
