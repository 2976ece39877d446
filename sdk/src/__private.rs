//! Support for the export macros. Not part of the API: names here change without notice.

#[cfg(any(feature = "tool", feature = "provider", feature = "channel"))]
pub use wit_bindgen;

#[cfg(any(feature = "tool", feature = "provider", feature = "channel"))]
pub mod bindings {
    // The tool world imports every host interface, so its bindings serve as the one set of
    // shared types and imports; the other worlds reuse them through `with`, which keeps the
    // SDK's conversions written once.
    //
    // `pub_export_macro` is what makes generating several worlds safe: the custom sections
    // emitted here describe imports only (wit-component drops the unused ones), and a world's
    // exports are embedded only by its export macro, in the plugin's crate. Without that,
    // wit-component would demand every export of every world generated here.
    wit_bindgen::generate!({
        path: "../wit",
        world: "tool-plugin",
        pub_export_macro: true,
        export_macro_name: "__kelp_export_tool",
        default_bindings_module: "kelp_sdk::__private::bindings",
        runtime_path: "kelp_sdk::__private::wit_bindgen::rt",
    });

    pub use self::kelp::plugin::types as wit;

    #[cfg(feature = "provider")]
    pub mod provider_world {
        wit_bindgen::generate!({
            path: "../wit",
            world: "provider-plugin",
            with: {
                "kelp:plugin/types@0.2.0": crate::__private::bindings::kelp::plugin::types,
                "kelp:plugin/host@0.2.0": crate::__private::bindings::kelp::plugin::host,
            },
            pub_export_macro: true,
            export_macro_name: "__kelp_export_provider",
            default_bindings_module: "kelp_sdk::__private::bindings::provider_world",
            runtime_path: "kelp_sdk::__private::wit_bindgen::rt",
        });
    }

    #[cfg(feature = "channel")]
    pub mod channel_world {
        wit_bindgen::generate!({
            path: "../wit",
            world: "channel-plugin",
            with: {
                "kelp:plugin/types@0.2.0": crate::__private::bindings::kelp::plugin::types,
                "kelp:plugin/host@0.2.0": crate::__private::bindings::kelp::plugin::host,
                "kelp:plugin/kv@0.2.0": crate::__private::bindings::kelp::plugin::kv,
            },
            pub_export_macro: true,
            export_macro_name: "__kelp_export_channel",
            default_bindings_module: "kelp_sdk::__private::bindings::channel_world",
            runtime_path: "kelp_sdk::__private::wit_bindgen::rt",
        });
    }
}

#[cfg(feature = "tool")]
pub use crate::tool::ToolExport;

#[cfg(feature = "provider")]
pub use crate::provider::ProviderExport;

#[cfg(feature = "channel")]
pub use crate::channel::ChannelExport;
