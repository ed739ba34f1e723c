//! probe
#[allow(unsafe_code, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "metric-collector",
        pub_export_macro: true,
        export_macro_name: "export_collector",
        default_bindings_module: "sonde_sdk::bindings",
        debug: true,
    });
}
