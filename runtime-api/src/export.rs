//! The macro that turns a crate's runtimes into a plugin library.

/// Exports one or more [`Runtime`](crate::Runtime)s from a `cdylib` crate.
///
/// It writes, in the calling crate:
/// - the embedded manifest (an exported static the loader reads without loading the library),
///   built at compile time from each runtime's constants; an invalid id or alias, or a
///   manifest over 8 KiB, is a compile error;
/// - the abi_stable root module, whose entry points are the panic-catching glue.
///
/// The plugin's name and version are the calling package's (`CARGO_PKG_NAME`,
/// `CARGO_PKG_VERSION`). Call it once per crate, at the crate root.
///
/// The two exported symbols have fixed names, so a host can link at most one crate that calls
/// this macro as an `rlib` (to register its runtimes in-process with
/// `Runtimes::register`); two such crates in one binary fail to link with duplicate symbols.
/// Load the others as plugin files, or keep the runtime types in a library crate without the
/// macro and export them from a thin `cdylib` crate.
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
        #[unsafe(no_mangle)]
        #[used]
        pub static AGENT_RUNTIMES_MANIFEST: [u8; $crate::manifest::EMBED_SIZE] =
            $crate::manifest::build_embedded(
                $crate::version::API_VERSION_STR,
                env!("CARGO_PKG_NAME"),
                env!("CARGO_PKG_VERSION"),
                &[$($crate::__private::const_runtime::<$runtime>()),+],
            );

        // The symbol name is abi_stable's `ROOT_MODULE_LOADER_NAME` (a test in runtime-api
        // checks that they agree); it is written out because `export_name` takes a literal.
        #[doc(hidden)]
        #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_root_module_symbol_is_abi_stables() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }
}
