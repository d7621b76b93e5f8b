//! The macro that turns a crate's runtimes into a plugin library.

/// Exports one or more [`Runtime`](crate::Runtime)s from a `cdylib` crate.
///
/// It writes, in the calling crate:
/// - the embedded manifest (an exported static the loader reads without loading the library),
///   built at compile time from each runtime's constants; an invalid id or alias, or a
///   manifest over 8 KiB, is a compile error;
/// - the abi_stable root module, whose entry points are the panic-catching glue;
/// - under `cfg(test)`, the test `config_schemas_are_current`: for every runtime with a typed
///   configuration ([`typed_config!`](crate::typed_config)), that its schema file holds what
///   schemars derives from the type (a stale file is rewritten, and the test fails asking to
///   run it again).
///
/// The plugin's name and version are the calling package's (`CARGO_PKG_NAME`,
/// `CARGO_PKG_VERSION`). Call it once per crate, at the crate root.
///
/// The two exported symbols are named after the calling crate
/// (`AGENT_RUNTIMES_MANIFEST_<crate>` and `AGENT_RUNTIMES_ROOT_<crate>`), so a host can link
/// several plugin crates as `rlib`s and register their runtimes in-process with
/// `Runtimes::register` without duplicate symbols.
///
/// # Examples
///
/// ```ignore
/// runtime_api::export_plugin!(EchoRuntime);
/// // or, for a library carrying several runtimes:
/// runtime_api::export_plugin!(OpenAiRuntime, AnthropicRuntime);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($($runtime:ty),+ $(,)?) => {
        #[doc(hidden)]
        pub struct __AgentRuntimesPlugin;

        impl $crate::__private::PluginDefinition for __AgentRuntimesPlugin {
            const NAME: &'static str = env!("CARGO_PKG_NAME");
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
            fn entries() -> ::std::vec::Vec<$crate::abi::AbiRuntimeEntry> {
                ::std::vec![$($crate::__private::entry::<__AgentRuntimesPlugin, $runtime>()),+]
            }
        }

        /// The embedded manifest of this plugin library.
        #[unsafe(export_name = concat!("AGENT_RUNTIMES_MANIFEST_", env!("CARGO_CRATE_NAME")))]
        #[used]
        pub static __AGENT_RUNTIMES_MANIFEST: [u8; $crate::manifest::EMBED_SIZE] =
            $crate::manifest::build_embedded(
                $crate::version::API_VERSION_STR,
                concat!("AGENT_RUNTIMES_ROOT_", env!("CARGO_CRATE_NAME")),
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_VERSION"),
                &[$($crate::__private::const_runtime::<$runtime>()),+],
            );

        /// Every typed runtime's schema file holds its configuration type's schema.
        #[cfg(test)]
        #[test]
        fn config_schemas_are_current() {
            $crate::config::assert_snapshots(&[
                $(<$runtime as $crate::Runtime>::__config_schema_snapshot()),+
            ]);
        }

        // abi_stable's loader reads this header the way it reads the one its own
        // `export_root_module` attribute writes; only the symbol's name differs, and the
        // manifest names it.
        #[doc(hidden)]
        #[unsafe(export_name = concat!("AGENT_RUNTIMES_ROOT_", env!("CARGO_CRATE_NAME")))]
        pub static __AGENT_RUNTIMES_ROOT_MODULE: $crate::__private::LibHeader =
            // SAFETY: the constructor returns the root module of type `PluginModuleRef`, the
            // type the header is declared with, as abi_stable's own `export_root_module`
            // attribute requires.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::abi::PluginModuleRef>(
                    $crate::__private::root_module_loader::<__AgentRuntimesPlugin>,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            };
    };
}
