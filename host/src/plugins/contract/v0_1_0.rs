//! Bindings of the released, frozen contract `kelp:plugin@0.1.0`, generated from the
//! byte-for-byte copy in `host/wit/0.1.0` (never from the working `wit/`, whose edits would
//! otherwise silently rebind this version; a test checks the copy's hash).
//!
//! Its host imports are thin conversions onto those of the current version: one body each,
//! whichever version a plugin was built for.

wasmtime::component::bindgen!({
    path: "wit/0.1.0",
    world: "tool-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use kelp::plugin::types;

/// The provider world. Its imports are the interfaces the tool world generated.
pub mod provider_world {
    wasmtime::component::bindgen!({
        path: "wit/0.1.0",
        world: "provider-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "kelp:plugin/types": super::kelp::plugin::types,
            "kelp:plugin/host": super::kelp::plugin::host,
        },
    });
}

pub use provider_world::{ProviderPlugin, ProviderPluginPre};

super::convert::shared_conversions!(self::types, provider_error: {});

use super::v0_2_0 as now;
use crate::plugins::state::CallState;
use kelp::plugin::{host as host_import, http as http_import, kv as kv_import};

impl types::Host for CallState {}

impl host_import::Host for CallState {
    async fn log(&mut self, level: host_import::LogLevel, message: String) -> wasmtime::Result<()> {
        use host_import::LogLevel as Was;
        use now::host_import::LogLevel as Is;
        let level = match level {
            Was::Trace => Is::Trace,
            Was::Debug => Is::Debug,
            Was::Info => Is::Info,
            Was::Warn => Is::Warn,
            Was::Error => Is::Error,
        };
        now::host_import::Host::log(self, level, message).await
    }

    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        now::host_import::Host::now_ms(self).await
    }

    async fn config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        now::host_import::Host::config(self, key).await
    }
}

fn kv_error(e: now::kv_import::KvError) -> kv_import::KvError {
    use now::kv_import::KvError as Is;
    match e {
        Is::Denied(m) => kv_import::KvError::Denied(m),
        Is::QuotaExceeded(q) => kv_import::KvError::QuotaExceeded(q),
        Is::Invalid(m) => kv_import::KvError::Invalid(m),
    }
}

impl kv_import::Host for CallState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv_import::KvError>> {
        Ok(now::kv_import::Host::get(self, key)
            .await?
            .map_err(kv_error))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv_import::KvError>> {
        Ok(now::kv_import::Host::set(self, key, value)
            .await?
            .map_err(kv_error))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), kv_import::KvError>> {
        Ok(now::kv_import::Host::delete(self, key)
            .await?
            .map_err(kv_error))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<bool, kv_import::KvError>> {
        Ok(
            now::kv_import::Host::compare_and_swap(self, key, expected, new)
                .await?
                .map_err(kv_error),
        )
    }

    async fn list_keys(
        &mut self,
        prefix: String,
    ) -> wasmtime::Result<Result<Vec<String>, kv_import::KvError>> {
        Ok(now::kv_import::Host::list_keys(self, prefix)
            .await?
            .map_err(kv_error))
    }
}

impl http_import::Host for CallState {
    async fn send(
        &mut self,
        req: types::HttpRequest,
    ) -> wasmtime::Result<Result<types::HttpResponse, types::HttpError>> {
        let req = now::types::HttpRequest {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
        };
        use now::types::HttpError as Is;
        Ok(match now::http_import::Host::send(self, req).await? {
            Ok(resp) => Ok(types::HttpResponse {
                status: resp.status,
                headers: resp.headers,
                body: resp.body,
            }),
            Err(e) => Err(match e {
                Is::Denied(m) => types::HttpError::Denied(m),
                Is::InvalidRequest(m) => types::HttpError::InvalidRequest(m),
                Is::Timeout => types::HttpError::Timeout,
                Is::TooLarge(cap) => types::HttpError::TooLarge(cap),
                Is::Connection(m) => types::HttpError::Connection(m),
            }),
        })
    }
}
