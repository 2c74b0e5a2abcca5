//! What makes a family crate a plugin library, in one place: [`family_library!`].

/// The crates the macro's expansion names, so that a family needs no `use` for them.
#[doc(hidden)]
pub mod __private {
    pub use kernels;
    pub use plugin_sdk;
}

/// Makes the invoking crate (a `cdylib`) a family library: mimalloc as its allocator, and the
/// plugin table of its `kinds`, with a `configure` that applies the host's thread budget and
/// the allocator policy (`kernels::configure_library`) and has every node's `process` run on
/// the library's compute pool ([`run_in_pool`]).
///
/// ```ignore
/// vision_common::family_library!(name: "rcnn", kinds: kinds);
/// ```
#[macro_export]
macro_rules! family_library {
    (name: $name:expr, kinds: $kinds:path $(,)?) => {
        $crate::family::__private::kernels::engine_allocator!();
        $crate::family::__private::plugin_sdk::export_plugin!(
            name: $name,
            version: env!("CARGO_PKG_VERSION"),
            kinds: $kinds,
            on_load: |host: &$crate::family::__private::plugin_sdk::HostConfig| {
                $crate::family::__private::kernels::configure_library(host.threads);
                $crate::family::__private::plugin_sdk::abi::export::set_node_runner(
                    $crate::family::run_in_pool,
                );
            },
        );
    };
}

/// Runs a node's work on the library's rayon pool (`kernels::process::in_pool`): its layers'
/// parallel loops then start inside the pool instead of being handed over, and waited for,
/// from the engine's stage thread one by one (ResNet-50 at 224x224 on 1 thread: 22% less
/// time; the graph models of a face pipeline: 1.6-2.7x faster).
pub fn run_in_pool(work: &mut (dyn FnMut() + Send)) {
    kernels::process::in_pool(work)
}
